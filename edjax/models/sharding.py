"""Activation sharding constraints for models traced inside a train step on a mesh.

`edjax.train.partitioning.with_activation_sharding` sets the context while a step is traced;
`constrain_batch` is a no-op outside it (tests, generate, single-device use).
"""

from __future__ import annotations

import contextlib
import contextvars

import jax

Array = jax.Array

# (mesh, mesh axes of the batch dimension) while a train step is traced for a mesh.
_ACTIVATION_BATCH = contextvars.ContextVar("edjax_activation_batch", default=None)


@contextlib.contextmanager
def activation_batch_sharding(mesh, batch_axes):
  """While tracing inside this context, `constrain_batch` puts activations' leading axis on
  `batch_axes` of `mesh` (set by `edjax.train.partitioning.with_activation_sharding`)."""
  token = _ACTIVATION_BATCH.set((mesh, batch_axes))
  try:
    yield
  finally:
    _ACTIVATION_BATCH.reset(token)


def constrain_batch(x: Array) -> Array:
  """x with its leading (batch) axis sharded as the batch is and the rest unsharded: pins an
  activation's data-parallel sharding where propagation would lose it (a scan body over
  reshaped windows). A no-op outside `activation_batch_sharding` (tests, generate)."""
  context = _ACTIVATION_BATCH.get()
  if context is None:
    return x
  mesh, batch_axes = context
  spec = jax.sharding.PartitionSpec(batch_axes, *(None,) * (x.ndim - 1))
  return jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(mesh, spec))
