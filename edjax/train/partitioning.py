"""One mesh ('data', 'fsdp', 'tensor') from config.mesh and logical-axis rules -> NamedShardings."""

from __future__ import annotations

import functools
import logging

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from edjax.model_configs import ConfigError
from edjax.models import sharding as activation_sharding

log = logging.getLogger("edjax")
MESH_AXES = ("data", "fsdp", "tensor")

# Logical name -> mesh axes. Params: embed over fsdp (ZeRO-3 style), mlp / heads / vocab over
# tensor (Megatron style); activations: batch over data and fsdp.
DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", "tensor"),
    ("kv", None),
    ("length", None),
    ("layers", None),  # the stacked-layer axis of scanned stacks (scan_layers=True): never sharded
)


def make_mesh(mesh_cfg, devices=None) -> Mesh:
  """Mesh of shape (data, fsdp, tensor) from config.mesh; one axis may be -1 (= the rest)."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  sizes = [int(mesh_cfg[a]) for a in MESH_AXES]
  n = devices.size
  if sizes.count(-1) > 1:
    raise ConfigError(f"config.mesh {dict(zip(MESH_AXES, sizes))}: at most one axis may be -1")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if n % known:
      raise ConfigError(f"config.mesh {dict(zip(MESH_AXES, sizes))} does not divide {n} devices")
    sizes[sizes.index(-1)] = n // known
  if int(np.prod(sizes)) != n:
    raise ConfigError(f"config.mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} "
                     f"devices but {n} are present; use -1 for one axis")
  return Mesh(devices.reshape(sizes), MESH_AXES)


def _fit(spec: P, shape, mesh: Mesh, where: str) -> P:
  """Drops mesh axes that do not divide a dimension (that dimension is replicated instead)."""
  out = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    if axes is None:
      out.append(None)
      continue
    names = axes if isinstance(axes, tuple) else (axes,)
    size = int(np.prod([mesh.shape[a] for a in names]))
    if dim % size:
      log.info("replicating dim %d of %s: not divisible by mesh axes %s", dim, where, names)
      out.append(None)
    else:
      out.append(axes)
  return P(*out)


def param_shardings(logical_axes, shapes, mesh: Mesh, rules=DEFAULT_RULES):
  """NamedSharding per param from the model's logical PartitionSpecs and the rules table."""
  mesh_specs = nn.logical_to_mesh(logical_axes, rules)

  def one(path, spec, shape):
    return NamedSharding(mesh, _fit(spec, shape.shape, mesh, jax.tree_util.keystr(path)))
  return jax.tree_util.tree_map_with_path(one, mesh_specs, shapes,
                                          is_leaf=lambda x: isinstance(x, P))


def with_activation_sharding(fn, mesh: Mesh, rules=DEFAULT_RULES):
  """`fn` traced with the batch's mesh axes in context, so the models' activation constraints
  (`edjax.models.sharding.constrain_batch`) shard like the batch; outside it they are no-ops
  (tests, generate). Wrap a step before jax.jit."""
  batch_axes = dict(rules).get("batch")

  @functools.wraps(fn)
  def traced_in_mesh(*args, **kwargs):
    with activation_sharding.activation_batch_sharding(mesh, batch_axes):
      return fn(*args, **kwargs)
  return traced_in_mesh


def batch_sharding(mesh: Mesh, rules=DEFAULT_RULES) -> NamedSharding:
  """Leading (batch) dimension over the mesh axes the rules give 'batch'."""
  axes = dict(rules).get("batch")
  return NamedSharding(mesh, P(axes))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
