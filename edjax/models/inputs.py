"""Clear errors for model inputs that do not fit the config: one message naming the fix.

Checks run on the host, before tracing, when the values are concrete (numpy or committed
arrays); under jit only the shape checks run. Families register their encoder check
(`Architecture.check_inputs`): text encoders use `check_text_inputs`, image encoders their own.
"""

from __future__ import annotations

import flax.traverse_util as traverse_util
import jax
import numpy as np


def is_concrete(x) -> bool:
  """True when x holds values (numpy / a committed array), False for a tracer under jit."""
  return not isinstance(x, jax.core.Tracer)


def check_token_ids(name: str, ids, vocab_size: int, max_positions: int | None) -> None:
  """Clear errors for [batch, length] token ids: rank, length vs positions, range vs vocab."""
  if ids is None:
    return
  shape = np.shape(ids)
  if len(shape) != 2:
    raise ValueError(f"{name} must be [batch, length] token ids, got shape {tuple(shape)}; "
                     "add a batch dimension with ids[None]")
  if max_positions is not None and shape[1] > max_positions:
    raise ValueError(f"{name} has length {shape[1]} but the model has {max_positions} positions; "
                     f"truncate inputs to {max_positions} tokens")
  if is_concrete(ids) and shape[1] > 0:
    arr = np.asarray(ids)
    if not np.issubdtype(arr.dtype, np.integer):
      raise ValueError(f"{name} must be integer token ids, got dtype {arr.dtype}")
    lo, hi = int(arr.min()), int(arr.max())
    if hi >= vocab_size or lo < 0:
      raise ValueError(f"{name} holds ids in [{lo}, {hi}] but the vocabulary has {vocab_size} "
                       "entries: use the tokenizer that matches this checkpoint")


def check_mask(name: str, mask, ids_name: str, ids, key_length: int | None = None) -> None:
  """A padding mask [batch, length] of `ids`, or a full bool mask [batch, 1, length, key_length]
  (packed rows, `edjax.models.segments`; key_length defaults to the ids' length)."""
  if mask is None or ids is None:
    return
  shape, ids_shape = tuple(np.shape(mask)), tuple(np.shape(ids))
  if len(shape) == 4:
    keys = ids_shape[1] if key_length is None else key_length
    want = (ids_shape[0], 1, ids_shape[1], keys)
    if shape != want:
      raise ValueError(f"{name} is a full attention mask of shape {shape} but {ids_name} "
                       f"{ids_shape} needs [batch, 1, length, k_len] = {want} "
                       "(edjax.models.segments.segment_mask builds it from segment ids)")
    return
  if shape != ids_shape:
    raise ValueError(f"{name} has shape {shape} but {ids_name} has "
                     f"{ids_shape}: they must match ([batch, length], 1 = real token)")


def check_position_ids(name: str, positions, ids_name: str, ids, max_positions: int | None) -> None:
  """position_ids [batch, length] of `ids`: 0-based positions within each packed segment."""
  if positions is None or ids is None:
    return
  if tuple(np.shape(positions)) != tuple(np.shape(ids)):
    raise ValueError(f"{name} has shape {tuple(np.shape(positions))} but {ids_name} has "
                     f"{tuple(np.shape(ids))}: pass one 0-based position per token")
  if is_concrete(positions) and np.size(positions):
    arr = np.asarray(positions)
    if not np.issubdtype(arr.dtype, np.integer):
      raise ValueError(f"{name} must be integer positions, got dtype {arr.dtype}")
    if arr.min() < 0 or (max_positions is not None and arr.max() >= max_positions):
      raise ValueError(f"{name} hold values in [{arr.min()}, {arr.max()}] but the model has "
                       f"{max_positions} positions: pass 0-based positions within each segment "
                       "(the model adds its own offset, e.g. RoBERTa's padding_idx + 1)")


def check_encoder_mask(mask, encoder_hidden_states, cross_kv) -> None:
  """encoder_attention_mask must be [batch, src_len] of the encoder states / cross K/V it masks
  (or a full bool mask [batch, 1, tgt_len, src_len] of packed rows)."""
  if mask is None:
    return
  if len(np.shape(mask)) == 4:
    if encoder_hidden_states is not None:
      src_len = np.shape(encoder_hidden_states)[1]
    elif cross_kv is not None:
      src_len = np.shape(cross_kv[0][0])[1]
    else:
      return
    if np.shape(mask)[1] != 1 or np.shape(mask)[3] != src_len:
      raise ValueError(f"encoder_attention_mask has shape {tuple(np.shape(mask))}; a full mask "
                       f"must be [batch, 1, tgt_len, src_len={src_len}]")
    return
  if encoder_hidden_states is not None:
    want, source = tuple(np.shape(encoder_hidden_states)[:2]), "encoder_hidden_states"
  elif cross_kv is not None:
    want, source = tuple(np.shape(cross_kv[0][0])[:2]), "cross_kv"
  else:
    return
  if tuple(np.shape(mask)) != want:
    raise ValueError(f"encoder_attention_mask has shape {tuple(np.shape(mask))} but {source} is "
                     f"[batch, src_len] = {want}: pass the attention_mask of the encoder inputs")


def check_decode_cache(variables: dict, decoder_input_ids) -> None:
  """decode=True needs a cache from `init_cache` with room for the new tokens.

  Without this check an over-full static cache would clamp its writes and silently corrupt the
  output; the index check runs only when the cache index is concrete (not under jit).
  """
  if "cache" not in variables:
    raise ValueError("decode=True needs a decode cache: pass variables={'params': params, "
                     "'cache': model.init_cache(batch_size, max_length)} and mutable=['cache']")
  if decoder_input_ids is None:
    return
  flat = traverse_util.flatten_dict(variables["cache"], sep="/")
  keys = [v for k, v in flat.items() if k.endswith("cached_key")]
  if not keys:
    return
  batch, max_len = np.shape(keys[0])[0], np.shape(keys[0])[-1]  # [batch, ..., max_len]
  ids_batch, length = np.shape(decoder_input_ids)[:2]
  if ids_batch != batch:
    raise ValueError(f"decoder_input_ids has batch {ids_batch} but the decode cache was built for "
                     f"batch {batch}: build it with model.init_cache({ids_batch}, max_length)")
  index = [v for k, v in flat.items() if k.endswith("cache_index")]
  if index and all(is_concrete(i) for i in index):
    used = max(int(np.max(np.asarray(i))) for i in index)
    if used + length > max_len:
      raise ValueError(f"the decode cache holds {max_len} positions, {used} are used and {length} "
                       f"more do not fit: build a longer one with model.init_cache({batch}, "
                       f"max_length) (max_length >= {used + length})")


def check_text_inputs(config, inputs: dict) -> None:
  """A text encoder's input_ids / attention_mask / token_type_ids against its config."""
  ids = inputs.get("input_ids")
  if ids is None:
    return
  check_token_ids("input_ids", ids, config.vocab_size, config.max_positions)
  check_mask("attention_mask", inputs.get("attention_mask"), "input_ids", ids)
  check_position_ids("position_ids", inputs.get("position_ids"), "input_ids", ids,
                     config.max_positions)
  token_types = inputs.get("token_type_ids")
  type_vocab = getattr(config, "type_vocab_size", None)
  if token_types is not None and type_vocab is not None and is_concrete(token_types):
    check_mask("token_type_ids", token_types, "input_ids", ids)
    arr = np.asarray(token_types)
    if arr.size and (arr.min() < 0 or arr.max() >= type_vocab):
      raise ValueError(f"token_type_ids hold values in [{arr.min()}, {arr.max()}] but the encoder "
                       f"has type_vocab_size={type_vocab}: use segment ids below {type_vocab} "
                       "(or leave token_type_ids out for all zeros)")


def text_dummy_inputs(config, batch: int = 1, length: int = 4) -> dict:
  """Token ids that trace a text encoder's shapes at init."""
  return {"input_ids": np.ones((batch, length), np.int32)}
