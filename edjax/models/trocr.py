"""The TrOCR text decoder (`transformers.TrOCRForCausalLM`) on the shared post-LN blocks.

Differences from the BERT decoder, all config fields: token embeddings scaled by sqrt(d_model)
when `scale_embedding`; learned positions stored with an offset of 2 (row p + 2 holds position p)
or, with `use_learned_position_embeddings=False`, fairseq sinusoidal positions counted from
`pad_token_id + 1` that skip padding tokens; an optional `layernorm_embedding`; cross-attention
keys/values projected from `cross_attention_hidden_size` (the encoder's width, so no
`enc_to_dec_proj` is needed); a bias-free `output_projection`, tied to the token embeddings unless
`tie_word_embeddings=False`. Param paths follow HF: `model/decoder/...` + `output_projection`.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from edjax.model_configs import TrOCRConfig
from edjax.models import layers
from edjax.models.outputs import CausalLMOutput, ModelOutput

Array = jax.Array

LEARNED_POSITION_OFFSET = 2  # TrOCRLearnedPositionalEmbedding: num_embeddings + 2 rows


def block_config(config: TrOCRConfig) -> layers.BlockConfig:
  return layers.BlockConfig(
      hidden_size=config.d_model, num_heads=config.decoder_attention_heads,
      intermediate_size=config.decoder_ffn_dim, activation=config.activation_function,
      layer_norm_eps=config.layer_norm_eps, pre_layer_norm=False,
      cross_attention=config.add_cross_attention, dropout_rate=config.dropout,
      attention_dropout_rate=config.attention_dropout,
      activation_dropout_rate=config.activation_dropout, init_std=config.init_std)


def sinusoidal_table(num_positions: int, dim: int, padding_idx: int | None) -> np.ndarray:
  """fairseq / TrOCRSinusoidalPositionalEmbedding.get_embedding: [num_positions, dim] float32."""
  half = dim // 2
  freq = np.exp(np.arange(half, dtype=np.float32) * np.float32(-math.log(10000) / (half - 1)))
  angles = np.arange(num_positions, dtype=np.float32)[:, None] * freq[None, :]  # [pos, half]
  table = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
  if dim % 2:
    table = np.concatenate([table, np.zeros((num_positions, 1), np.float32)], axis=1)
  if padding_idx is not None:
    table[padding_idx] = 0.0
  return table.astype(np.float32)


class TrOCRDecoder(nn.Module):
  """transformers.TrOCRDecoder: embeddings (+ positions, + optional LayerNorm), post-LN layers."""

  config: TrOCRConfig
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    cfg, std = self.config, self.config.init_std
    self.embed_tokens = layers.embed(cfg.vocab_size, cfg.d_model, ("vocab", "embed"), std)
    if cfg.use_learned_position_embeddings:
      self.embed_positions = layers.embed(cfg.max_position_embeddings + LEARNED_POSITION_OFFSET,
                                          cfg.d_model, ("length", "embed"), std)
    if cfg.layernorm_embedding:
      self.layernorm_embedding = layers.layer_norm(cfg.layer_norm_eps, self.dtype)
    self.dropout = nn.Dropout(cfg.dropout)
    self.layers = layers.TransformerStack(block_config(cfg), cfg.decoder_layers, self.dtype)

  def cross_kv(self, encoder_hidden: Array):
    return self.layers.cross_kv(encoder_hidden)

  def _positions(self, input_ids: Array, offset: Array | int) -> Array:
    """[batch, length, d_model] position embeddings of tokens starting at absolute `offset`."""
    cfg = self.config
    length = input_ids.shape[1]
    if cfg.use_learned_position_embeddings:
      positions = jnp.arange(length)[None, :] + offset + LEARNED_POSITION_OFFSET  # [1, length]
      return jnp.broadcast_to(self.embed_positions(positions),
                              (input_ids.shape[0], length, cfg.d_model))
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else 0
    table = jnp.asarray(sinusoidal_table(cfg.max_position_embeddings + pad + 1, cfg.d_model, pad))
    not_pad = (input_ids != pad).astype(jnp.int32)  # [batch, length]
    positions = (jnp.cumsum(not_pad, axis=1) + offset) * not_pad + pad  # padding -> row `pad` = 0
    return table[positions]

  @nn.compact  # creates the decode-cache variables
  def __call__(self, input_ids: Array, attention_mask: Array | None = None,
               encoder_hidden_states: Array | None = None,
               encoder_attention_mask: Array | None = None, cross_kv=None, decode: bool = False,
               deterministic: bool = True, output_hidden_states: bool = False,
               output_attentions: bool = False) -> ModelOutput:
    """input_ids [batch, length]; attention_mask [batch, length] (decode mode: [batch, max_len])."""
    cfg = self.config
    offset = layers.advance_decode_position(self, input_ids.shape[1], decode)
    scale = math.sqrt(cfg.d_model) if cfg.scale_embedding else 1.0
    x = self.embed_tokens(input_ids) * scale + self._positions(input_ids, offset)
    if cfg.layernorm_embedding:
      x = self.layernorm_embedding(x)
    x = self.dropout(x, deterministic=deterministic).astype(self.dtype)  # [batch, length, d_model]
    self_mask = None if attention_mask is None else layers.padding_mask(attention_mask)
    cross_mask = (None if encoder_attention_mask is None
                  else layers.padding_mask(encoder_attention_mask))
    x, hidden_states, attentions, cross_attentions = self.layers(
        x, self_mask=self_mask, causal=True, encoder_hidden=encoder_hidden_states,
        cross_kv=cross_kv, cross_mask=cross_mask, decode=decode, deterministic=deterministic,
        output_hidden_states=output_hidden_states, output_attentions=output_attentions)
    return ModelOutput(last_hidden_state=x, hidden_states=hidden_states, attentions=attentions,
                       cross_attentions=cross_attentions)


class TrOCRDecoderWrapper(nn.Module):
  """HF's `TrOCRDecoderWrapper`: only there so the param paths read model/decoder/..."""

  config: TrOCRConfig
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.decoder = TrOCRDecoder(self.config, self.dtype)

  def __call__(self, *args, **kwargs):
    return self.decoder(*args, **kwargs)


class TrOCRForCausalLM(nn.Module):
  """transformers.TrOCRForCausalLM: `model.decoder` + `output_projection` (no bias)."""

  config: TrOCRConfig
  dtype: jnp.dtype = jnp.float32
  base_prefix = "model"

  def setup(self):
    cfg = self.config
    self.model = TrOCRDecoderWrapper(cfg, self.dtype)
    if not cfg.tie_word_embeddings:
      self.output_projection = layers.dense(cfg.vocab_size, ("embed", "vocab"), cfg.init_std,
                                            self.dtype, use_bias=False)

  def cross_kv(self, encoder_hidden: Array):
    """Per-layer cross-attention (key, value) from encoder states [batch, src_len, enc_width]."""
    return self.model.decoder.cross_kv(encoder_hidden)

  def __call__(self, input_ids: Array, attention_mask: Array | None = None,
               encoder_hidden_states: Array | None = None,
               encoder_attention_mask: Array | None = None, cross_kv=None, decode: bool = False,
               deterministic: bool = True, output_hidden_states: bool = False,
               output_attentions: bool = False) -> CausalLMOutput:
    out = self.model(input_ids, attention_mask, encoder_hidden_states, encoder_attention_mask,
                     cross_kv, decode, deterministic, output_hidden_states, output_attentions)
    head = None if self.config.tie_word_embeddings else self.output_projection
    logits = layers.bias_free_lm_logits(out.last_hidden_state,
                                        self.model.decoder.embed_tokens.embedding, head, self.dtype)
    return CausalLMOutput(logits=logits, hidden_states=out.hidden_states,
                          attentions=out.attentions, cross_attentions=out.cross_attentions)
