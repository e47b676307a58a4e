"""The seams between the composite and the families: what an encoder and a decoder must accept.

These are `typing.Protocol`s: documentation the type checker can read, not base classes. Every
argument after the first is passed by keyword, so a family's module never depends on an
argument order. Masks are padding masks ({0,1}, 1 = real token); the shared
`layers.TransformerStack` turns them into attention masks.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import jax

from edjax.models.outputs import CausalLMOutput, ModelOutput

Array = jax.Array


@runtime_checkable
class TextEncoder(Protocol):
  """A text encoder (registry modality 'text'), e.g. BertModel."""

  def __call__(self, input_ids: Array, *, attention_mask: Array | None = None,
               token_type_ids: Array | None = None, deterministic: bool = True,
               output_hidden_states: bool = False,
               output_attentions: bool = False) -> ModelOutput:
    """input_ids [batch, src_len], attention_mask [batch, src_len] -> last_hidden_state
    [batch, src_len, hidden]."""


@runtime_checkable
class ImageEncoder(Protocol):
  """An image encoder (registry modality 'image'), e.g. ViTModel; every patch is attended."""

  def __call__(self, pixel_values: Array, *, deterministic: bool = True,
               output_hidden_states: bool = False,
               output_attentions: bool = False) -> ModelOutput:
    """pixel_values [batch, channels, height, width] (NCHW, as HF) -> last_hidden_state
    [batch, tokens, hidden]."""


@runtime_checkable
class CausalDecoder(Protocol):
  """A causal-LM decoder with cross-attention (`layers.CausalLM` implements it once)."""

  def cross_kv(self, encoder_hidden_states: Array) -> tuple:
    """encoder states [batch, src_len, width] -> per layer (key, value), each
    [batch, src_len, heads, head_dim]: computed once per input, reused every decoding step."""

  def __call__(self, input_ids: Array, *, attention_mask: Array | None = None,
               encoder_hidden_states: Array | None = None,
               encoder_attention_mask: Array | None = None, cross_kv: tuple | None = None,
               decode: bool = False, deterministic: bool = True,
               output_hidden_states: bool = False,
               output_attentions: bool = False) -> CausalLMOutput:
    """input_ids [batch, tgt_len] -> logits [batch, tgt_len, vocab] (fp32). Pass
    encoder_hidden_states or cross_kv; decode=True reads and writes the static 'cache'."""
