"""Attention masks of packed rows (several examples per row, told apart by segment ids).

A packed row holds examples 1, 2, ... side by side; `segment_ids` [batch, length] says which
example a token belongs to (0 = padding), seqio's EncDecFeatureConverter layout. The models take
these masks as full bool attention masks [batch, 1, q_len, k_len] (True = attend) in place of the
[batch, length] padding masks (`layers.padding_mask` passes a rank-4 mask through), so packing
needs no other change in the attention code:

    self_mask  = segment_mask(encoder_segment_ids, encoder_segment_ids)   # block diagonal
    dec_mask   = segment_mask(decoder_segment_ids, decoder_segment_ids)   # the decoder stack adds
                                                                          # its causal mask on top
    cross_mask = segment_mask(decoder_segment_ids, encoder_segment_ids)   # segment i -> source i

Padding (segment 0) attends only to padding, so no real token ever sees another example or a pad
and no softmax row is empty while the row has any padding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def segment_mask(query_segment_ids: Array, key_segment_ids: Array) -> Array:
  """[batch, q_len], [batch, k_len] int segment ids -> bool [batch, 1, q_len, k_len].

  True where the query and key belong to the same segment (same id).
  """
  if query_segment_ids.ndim != 2 or key_segment_ids.ndim != 2:
    raise ValueError("segment ids must be [batch, length], got shapes "
                     f"{query_segment_ids.shape} and {key_segment_ids.shape}")
  same = query_segment_ids[:, :, None] == key_segment_ids[:, None, :]  # [batch, q_len, k_len]
  return same[:, None, :, :]


def shift_right_per_segment(labels: Array, decoder_positions: Array, decoder_segment_ids: Array,
                            pad_token_id: int, decoder_start_token_id: int) -> Array:
  """Packed labels [batch, tgt_len] -> decoder_input_ids [batch, tgt_len], shifted per segment.

  Each segment's inputs are decoder_start_token_id then its own labels but the last (what
  `losses.shift_tokens_right` gives that example unpacked); padding (segment 0) is pad_token_id.
  """
  shifted = jnp.concatenate([jnp.full_like(labels[:, :1], decoder_start_token_id),
                             labels[:, :-1]], axis=1)  # [batch, tgt_len]
  shifted = jnp.where(decoder_positions == 0, decoder_start_token_id, shifted)
  return jnp.where(decoder_segment_ids > 0, shifted, pad_token_id).astype(labels.dtype)


def packed_model_inputs(batch: dict) -> dict:
  """The masks / positions a packed batch gives the model, from its segment ids and positions.

  batch: encoder_segment_ids / encoder_positions [b, src_len] and decoder_segment_ids /
  decoder_positions [b, tgt_len] (`edjax.data.packing`). Returns attention_mask [b, 1, src, src],
  decoder_attention_mask [b, 1, tgt, tgt], cross_attention_mask [b, 1, tgt, src], position_ids
  [b, src_len] and decoder_position_ids [b, tgt_len] (0-based within each segment).
  """
  enc, dec = batch["encoder_segment_ids"], batch["decoder_segment_ids"]
  return {"attention_mask": segment_mask(enc, enc),
          "decoder_attention_mask": segment_mask(dec, dec),
          "cross_attention_mask": segment_mask(dec, enc),
          "position_ids": batch["encoder_positions"],
          "decoder_position_ids": batch["decoder_positions"]}


def is_packed(batch: dict) -> bool:
  """True for a packed batch (one that carries decoder_segment_ids)."""
  return "decoder_segment_ids" in batch
