"""Output containers (pytrees) with HF's field names."""

from __future__ import annotations

from typing import Optional

import flax.struct
import jax

Array = jax.Array


@flax.struct.dataclass
class ModelOutput:
  """Encoder / decoder body output (HF BaseModelOutputWithPoolingAndCrossAttentions)."""

  last_hidden_state: Array  # [batch, length, hidden]
  pooler_output: Optional[Array] = None  # [batch, hidden]
  hidden_states: Optional[tuple] = None  # embeddings + every layer output
  attentions: Optional[tuple] = None  # per layer [batch, heads, q_len, k_len]
  cross_attentions: Optional[tuple] = None  # per layer [batch, heads, q_len, src_len]


@flax.struct.dataclass
class CausalLMOutput:
  """Decoder output (HF CausalLMOutputWithCrossAttentions)."""

  logits: Array  # [batch, length, vocab] float32
  hidden_states: Optional[tuple] = None
  attentions: Optional[tuple] = None
  cross_attentions: Optional[tuple] = None


@flax.struct.dataclass
class Seq2SeqLMOutput:
  """EncoderDecoder output (HF Seq2SeqLMOutput)."""

  logits: Array  # [batch, tgt_len, vocab] float32
  loss: Optional[Array] = None
  encoder_last_hidden_state: Optional[Array] = None  # [batch, src_len, enc_hidden]
  encoder_hidden_states: Optional[tuple] = None
  encoder_attentions: Optional[tuple] = None
  decoder_hidden_states: Optional[tuple] = None
  decoder_attentions: Optional[tuple] = None
  cross_attentions: Optional[tuple] = None
