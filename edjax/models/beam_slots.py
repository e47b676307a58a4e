"""Beam search without moving the decode cache: every beam's K/V stay where they were written.

HF (and edjax before this) reorder the whole self-attention cache after every beam-search step:
each new beam gets a copy of its parent's K/V history, 2 x layers x rows x heads x head_dim x
max_len floats per step (38 MB for MiniLM at 8 inputs x 4 beams and max_len 65).

Here nothing is copied. Step t writes beam j's K/V for position t into beam j's own storage
column (cache row b * beams + j), as before. A small table per input, `beam_slots` [batch,
beams, max_len] int32, says for each running beam which column holds each position of its
history: slot[b, j, t] = the column that holds position t of beam j's history. A step writes j
at the positions it just stored; the beam reorder gathers only the table (each new beam takes
its parent's), so no K/V moves. Attention reads, for beam j, position t from column
slot[b, j, t]: every query beam of an input scores against all `beams` columns of that input,
and positions that are not in its history get a -inf bias, so the softmax gives them exactly 0.
The rest is the plain attention's math: the same unmasked scores, maximum and probabilities;
only the order of the softmax sum and of the P @ V sum over the zeros differs (float rounding).

Columns are written once per position and never overwritten below the current length, so every
slot an ancestor points to stays valid. The table starts at slot[b, j, :] = j: the prompt
prefill before the search wrote each beam's own column, and all beams of an input share it.

The K/V stay in the decode cache's layouts (K [batch * beams, heads, head_dim, max_len], V
[batch * beams, heads, max_len, head_dim]), read as [batch, beams, ...]: (input, column, head)
is the batch of both attention dots, so XLA's CPU dots read them in place (no copy); each query
beam's P @ V is summed over the columns afterwards. (Grouping the cache as [batch, heads,
head_dim, beams, max_len], so that one dot contracts columns and positions together, measured
the same: 2.16 / 2.23 s vs 2.23 / 2.17 s for the README's beam search, and was not kept.) The
table lives in the 'cache' collection next to cached_key / cached_value; a scanned stack stores
it once, like cache_index.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from edjax.models.attention import MASK_VALUE, dot_product_attention

Array = jax.Array

NAME = "beam_slots"


def _map_self_attention_caches(cache, fn):
  """cache with fn(d) in place of every dict d holding a self-attention cache (cached_key)."""
  if isinstance(cache, Mapping):
    if "cached_key" in cache:
      return fn(dict(cache))
    return {k: _map_self_attention_caches(v, fn) for k, v in cache.items()}
  return cache


def add_beam_slots(cache, batch: int, beams: int):
  """The decode cache of batch * beams rows with a `beam_slots` table [batch, beams, max_len]
  int32 = j for beam j next to every self-attention layer's K/V (see the module docstring)."""
  def add(d):
    max_len = d["cached_key"].shape[-1]
    own = jnp.arange(beams, dtype=jnp.int32)[None, :, None]  # [1, beams, 1]
    d[NAME] = jnp.broadcast_to(own, (batch, beams, max_len))
    return d
  return _map_self_attention_caches(cache, add)


def has_beam_slots(cache) -> bool:
  """Whether `cache` carries beam slot tables (`add_beam_slots`)."""
  found = []
  _map_self_attention_caches(cache, lambda d: found.append(NAME in d) or d)
  return any(found)


def reorder_beam_slots(cache, parents: Array):
  """The beam reorder of a slotted cache: new beam j of input b takes the slot table of beam
  parents[b, j] [batch, beams]; K/V and counters stay as they are."""
  def reorder(d):
    if NAME in d:
      d[NAME] = jnp.take_along_axis(d[NAME], parents[:, :, None], axis=1)  # [batch, beams, len]
    return d
  return _map_self_attention_caches(cache, reorder)


def write_own_slots(slots: Array, index: Array, q_len: int) -> Array:
  """slots [batch, beams, max_len] with positions index .. index + q_len - 1 set to each beam's
  own column: the decode step just stored its new K/V there (`layers.Attention`)."""
  batch, beams, _ = slots.shape
  own = jnp.broadcast_to(jnp.arange(beams, dtype=slots.dtype)[None, :, None], (batch, beams, q_len))
  return jax.lax.dynamic_update_slice(slots, own, (0, 0, index))


def read_rows(stored: Array, slots: Array) -> Array:
  """Each beam's history as a plain row: stored K [batch * beams, heads, head_dim, max_len] (V:
  pass it transposed to that), slots [batch, beams, max_len] -> [batch * beams, max_len, heads,
  head_dim]."""
  batch, beams, max_len = slots.shape
  grouped = stored.reshape(batch, beams, *stored.shape[1:])  # [b, beams, heads, hd, len]
  rows = jnp.take_along_axis(grouped, slots[:, :, None, None, :], axis=1)
  return rows.reshape(stored.shape).transpose(0, 3, 1, 2)


def attention(query: Array, key: Array, value: Array, slots: Array, mask: Array | None,
              bias: Array | None, scale: float, dtype: Any,
              impl: str = "einsum") -> tuple[Array, Array]:
  """Decode attention over a slotted cache.

  query [batch * beams, q_len, heads, head_dim]; key / value: the stored cache, K [batch * beams,
  heads, head_dim, max_len] and V [batch * beams, heads, max_len, head_dim]; slots [batch, beams,
  max_len]; mask bool, broadcastable to [batch * beams, heads, q_len, max_len] (True = attend);
  bias: additive or None. Returns (out [batch * beams, q_len, heads, head_dim], probs [batch *
  beams, heads, q_len, max_len] fp32): the values of `dot_product_attention` over each beam's
  history.

  'einsum' without a bias scores the query beams against their input's beams x max_len columns
  in place. Other impls, or a bias, read each beam's history with a gather (`read_rows`) and
  run `dot_product_attention`.
  """
  rows, q_len, heads, head_dim = query.shape
  batch, beams, max_len = slots.shape
  if impl != "einsum" or bias is not None:
    return dot_product_attention(query, read_rows(key, slots),
                                 read_rows(value.transpose(0, 1, 3, 2), slots), bias,
                                 scale, None, 0.0, dtype, mask=mask, impl=impl)
  # Query beams g against the stored columns s of the same input; (b, s, heads) is the dots'
  # batch, so K and V are read in the stored layout. The query is broadcast over s (small).
  q = query.reshape(batch, beams, q_len, heads, head_dim)
  q = jnp.broadcast_to(q[:, None], (batch, beams) + q.shape[1:])  # [b, s, g, q, heads, hd]
  k = key.reshape(batch, beams, heads, head_dim, max_len)  # [b, s, heads, hd, len]
  v = value.reshape(batch, beams, heads, max_len, head_dim)  # [b, s, heads, len, hd]
  scores = jnp.einsum("bsgqhd,bshdl->bshgql", q, k,
                      preferred_element_type=jnp.float32) * scale  # [b, s, heads, g, q, len]
  own = slots[:, None, None, :, None, :] == jnp.arange(beams)[None, :, None, None, None, None]
  #                                                                 [b, s, 1, g, 1, len]
  if mask is None:
    mask = jnp.ones((1, 1, 1, 1), bool)
  mask = jnp.broadcast_to(mask, (rows,) + mask.shape[1:3] + (max_len,))  # [b*g, h|1, q|1, len]
  mask = mask.reshape(batch, beams, *mask.shape[1:]).transpose(0, 2, 1, 3, 4)[:, None]
  #                                                                 [b, 1, h|1, g, q|1, len]
  # History positions get HF's bias (finfo.min where masked), the other columns -inf: zero
  # weight even in a fully masked row, which then averages its own history as HF's does.
  scores = scores + jnp.where(own, jnp.where(mask, 0.0, MASK_VALUE), -jnp.inf).astype(jnp.float32)
  probs = jax.nn.softmax(scores, axis=(1, 5))  # over each beam's history: (column, position)
  out = jnp.einsum("bshgql,bshld->bshgqd", probs.astype(dtype), v,
                   preferred_element_type=jnp.float32).sum(axis=1)  # [b, heads, g, q, hd]
  out = out.astype(dtype).transpose(0, 2, 3, 1, 4)  # [b, g, q, heads, hd]
  probs = probs.sum(axis=1).transpose(0, 2, 1, 3, 4)  # [b, g, heads, q, len]
  return (out.reshape(rows, q_len, heads, head_dim),
          probs.reshape(rows, heads, q_len, max_len))
