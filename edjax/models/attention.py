"""Softmax attention behind one switch, `attention_impl` (a model config's runtime option).

  'einsum'  two einsums and a softmax in fp32, written out here: the parity oracle (HF's math,
            the additive finfo(float32).min mask bias included).
  'xla'     `jax.nn.dot_product_attention(implementation='xla')`: the same math in jax's own
            fused form (scores in fp32, softmax in fp32, the mask applied with `where`).
  'cudnn'   `jax.nn.dot_product_attention(implementation='cudnn')`, cuDNN's flash attention:
            GPU only (a ConfigError naming the device otherwise); cuDNN itself restricts dtypes
            (fp16 / bf16) and shapes and raises for the rest.

Where 'xla' / 'cudnn' fall back to the einsum path:
  * attention dropout in training (a dropout rng and a rate > 0): jax's function has no dropout
    on the probabilities, so the whole call runs the einsum path;
  * the attention probabilities (`output_attentions=True`): jax's function returns only the
    output, so the probs are computed by the einsum path next to it. Nothing asks for them
    otherwise, and under `jit` (every edjax step and `generate`) XLA drops that unused
    computation; only an un-jitted call pays for both.
Both kept paths agree to float rounding: tests/test_attention_impl.py checks 'xla' against
'einsum' (≤ 1e-5 in fp32) for every model family, in training and in decoding.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from edjax.model_configs import ATTENTION_IMPLS, ConfigError
from edjax.models.dropout import dropout

Array = jax.Array
Dtype = Any

MASK_VALUE = float(jnp.finfo(jnp.float32).min)  # HF's additive bias for masked positions


def check_attention_impl(impl: str) -> None:
  """ConfigError for an unknown `impl`, or for 'cudnn' when this process has no GPU."""
  if impl not in ATTENTION_IMPLS:
    raise ConfigError(f"attention_impl={impl!r}: use one of {ATTENTION_IMPLS}")
  if impl == "cudnn" and jax.default_backend() != "gpu":
    device = jax.devices()[0]
    raise ConfigError(f"attention_impl='cudnn' needs a CUDA GPU, but this process runs on "
                      f"{device.platform} ({device.device_kind}): use 'xla' or 'einsum' here")


def _group_queries(query: Array, key: Array) -> tuple[Array, int]:
  """query [b*g, q, heads, hd] -> ([b, g*q, heads, hd], g) for K/V of batch b (beam groups)."""
  q_batch, q_len, heads, head_dim = query.shape
  k_batch = key.shape[0]
  group = q_batch // k_batch
  if group * k_batch != q_batch:
    raise ValueError(f"query batch {q_batch} is not a multiple of key batch {k_batch}")
  return query.reshape(k_batch, group * q_len, heads, head_dim), group


def _ungroup_probs(probs: Array, group: int, q_len: int) -> Array:
  """[b, heads, g*q, k] -> [b*g, heads, q, k]."""
  if group == 1:
    return probs
  k_batch, heads = probs.shape[:2]
  probs = probs.reshape(k_batch, heads, group, q_len, -1).transpose(0, 2, 1, 3, 4)
  return probs.reshape(k_batch * group, heads, q_len, -1)


def _score_bias(bias: Array | None, mask: Array | None) -> Array | None:
  """The additive fp32 bias of the einsum path: mask (True = attend) as finfo.min, plus bias."""
  score_bias = None if mask is None else jnp.where(mask, 0.0, MASK_VALUE).astype(jnp.float32)
  if bias is not None:
    bias = bias.astype(jnp.float32)
    score_bias = bias if score_bias is None else score_bias + bias
  return score_bias


def _einsum_attention(query, key, value, score_bias, scale, dropout_rng, dropout_rate, dtype):
  """The oracle: grouped query [b, g*q, heads, hd] -> (out [b, g*q, heads, hd], probs fp32)."""
  scores = jnp.einsum("bqhd,bkhd->bhqk", query, key,
                      preferred_element_type=jnp.float32) * scale  # [b, heads, g*q, k]
  if score_bias is not None:
    scores = scores + score_bias
  probs = jax.nn.softmax(scores, axis=-1)
  dropped = probs
  if dropout_rng is not None and dropout_rate > 0.0:
    dropped = dropout(probs, dropout_rate, dropout_rng)
  out = jnp.einsum("bhqk,bkhd->bqhd", dropped.astype(dtype), value)  # [b, g*q, heads, hd]
  return out, probs


def _as_4d(x: Array | None) -> Array | None:
  """Leading unit axes up to rank 4 (jax's function wants 4-D bias and mask)."""
  if x is None or x.ndim >= 4:
    return x
  return x.reshape((1,) * (4 - x.ndim) + x.shape)


def dot_product_attention(query: Array, key: Array, value: Array, bias: Array | None,
                          scale: float, dropout_rng: Array | None, dropout_rate: float,
                          dtype: Dtype, *, mask: Array | None = None,
                          impl: str = "einsum") -> tuple[Array, Array]:
  """Softmax attention with fp32 scores and softmax.

  query [batch, q_len, heads, head_dim], key/value [batch, k_len, heads, head_dim];
  bias: additive, broadcastable to [batch, heads, q_len, k_len]; mask: bool, the same
  broadcast (True = attend; the einsum path adds HF's finfo(float32).min where False).
  Returns (out [batch, q_len, heads, head_dim], probs [batch, heads, q_len, k_len] fp32).

  Grouped queries: when key/value have batch `b` and the query has batch `b * g` (beam search:
  g beams per input share the encoder's cross-attention K/V, computed once), each group of g
  consecutive query rows attends to its own K/V without copying them; bias / mask then have
  batch `b` (or 1). impl: 'einsum' | 'xla' | 'cudnn' (see the module docstring for the
  fallbacks to einsum).
  """
  check_attention_impl(impl)
  q_batch, q_len, heads, head_dim = query.shape
  grouped, group = _group_queries(query, key)  # [b, g*q, heads, head_dim]
  dropout_on = dropout_rng is not None and dropout_rate > 0.0

  def einsum_probs_and_out():
    out, probs = _einsum_attention(grouped, key, value, _score_bias(bias, mask), scale,
                                   dropout_rng, dropout_rate, dtype)
    return out, _ungroup_probs(probs, group, q_len)

  if impl == "einsum" or dropout_on:
    out, probs = einsum_probs_and_out()
    return out.reshape(q_batch, q_len, heads, head_dim), probs

  value = value.astype(grouped.dtype)
  key = key.astype(grouped.dtype)
  out = jax.nn.dot_product_attention(
      grouped, key, value, bias=_as_4d(None if bias is None else bias.astype(jnp.float32)),
      mask=_as_4d(None if mask is None else mask.astype(bool)), scale=scale,
      implementation=impl)  # [b, g*q, heads, head_dim]
  out = out.astype(dtype).reshape(q_batch, q_len, heads, head_dim)
  # The probs only for a caller that asks (output_attentions): dead code under jit otherwise.
  _, probs = einsum_probs_and_out()
  return out, probs
