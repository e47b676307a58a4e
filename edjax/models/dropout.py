"""Dropout with cheap counter-based masks: the one dropout every family and attention uses.

`jax.random.bernoulli` draws 32 bits per element from threefry-2x32 (20 rounds): on the CPU the
masks of a MiniLM bert2bert training step (attention probabilities and hidden states, forward
and backward) were ~10 % of the step's op time (README, issue #14). Here one threefry draw per
call gives a 64-bit seed, and each element's bits are a hash of (its flat index, the seed): two
rounds of MurmurHash3's 32-bit finalizer (fmix32), a bijection of the counter per seed with full
avalanche. That is ~6x cheaper than threefry's masks (18 masks of [16, 12, 64, 64], jitted, on
2 Xeon cores: 98 vs 17 ms; `scripts/bench_train.py --ablate` times the step) and, like
threefry, counter-based: the mask depends only on the key and the shape, never on how the array
is sharded or which device computes which block (the SPMD partitioner splits the iota). Arrays
of 2**32 elements or more fall back to `jax.random.bernoulli`.

A dropout layer cannot match PyTorch's mask bit for bit anyway (parity tests run
deterministic); what matters is that the keep rate is exact (to 2**-32) and the kept values are
scaled by the inverse of that exact rate, so the expectation is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

_GOLDEN = np.uint32(0x9E3779B9)  # 2**32 / golden ratio: spreads consecutive counters
_MAX_HASHED_SIZE = 2**32  # flat indices must fit uint32
# False: every mask from jax.random.bernoulli (threefry), as flax.linen.Dropout draws it. Read
# at trace time; `scripts/bench_train.py --ablate` times the step both ways.
HASHED_MASKS = True


def _fmix32(h: Array) -> Array:
  """MurmurHash3's 32-bit finalizer: a bijection on uint32 with full avalanche."""
  h = h ^ (h >> 16)
  h = h * np.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * np.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def keep_mask(rng: Array, rate: float, shape: Sequence[int]) -> tuple[Array, float]:
  """A bool mask of `shape`, True with probability ~1 - rate, and that exact keep probability.

  The probability is (2**32 - round(rate * 2**32)) / 2**32: callers scale kept values by its
  inverse, so dropout's expectation is exact.
  """
  if not 0.0 <= rate < 1.0:
    raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
  shape = tuple(int(d) for d in shape)
  size = int(np.prod(shape, dtype=np.int64))
  if not HASHED_MASKS or size >= _MAX_HASHED_SIZE:
    return jax.random.bernoulli(rng, 1.0 - rate, shape), 1.0 - rate
  threshold = int(round(rate * 2**32))
  seeds = jax.random.bits(rng, (2,), jnp.uint32)  # [2]
  counter = jax.lax.iota(jnp.uint32, size).reshape(shape)
  bits = _fmix32(_fmix32(counter * _GOLDEN + seeds[0]) ^ seeds[1])  # shape, uint32
  return bits >= np.uint32(threshold), (2**32 - threshold) / 2**32


def dropout(x: Array, rate: float, rng: Array, broadcast_dims: Sequence[int] = ()) -> Array:
  """Zeroes elements of x with probability `rate` and scales the rest by 1 / keep probability.

  broadcast_dims: axes that share one mask value (e.g. (1, 2) drops whole tokens' rows of a
  [batch, length, features] array: per-example stochastic depth).
  """
  if rate == 0.0:
    return x
  if rate == 1.0:
    return jnp.zeros_like(x)
  shared = {d % x.ndim for d in broadcast_dims}
  mask_shape = [1 if axis in shared else n for axis, n in enumerate(x.shape)]
  keep, keep_prob = keep_mask(rng, rate, mask_shape)
  keep = jnp.broadcast_to(keep, x.shape)
  return jnp.where(keep, x / jnp.asarray(keep_prob, x.dtype), jnp.zeros((), x.dtype))


class Dropout(nn.Module):
  """flax.linen.Dropout's interface (rate, broadcast_dims, `deterministic` at the call) on
  `keep_mask`; draws its key from the 'dropout' rng collection."""
  rate: float
  broadcast_dims: Sequence[int] = ()
  rng_collection: str = "dropout"

  @nn.compact
  def __call__(self, x: Array, deterministic: bool) -> Array:
    if deterministic or self.rate == 0.0:
      return x
    return dropout(x, self.rate, self.make_rng(self.rng_collection), self.broadcast_dims)
