"""The TrOCR text decoder (`transformers.TrOCRForCausalLM`) on the shared post-LN blocks: config,
modules and HF conversion rules.

Differences from the BERT decoder, all config fields: token embeddings scaled by sqrt(d_model)
when `scale_embedding`; learned positions stored with an offset of 2 (row p + 2 holds position p)
or, with `use_learned_position_embeddings=False`, fairseq sinusoidal positions counted from
`pad_token_id + 1` that skip padding tokens; an optional `layernorm_embedding`; cross-attention
keys/values projected from `cross_attention_hidden_size` (the encoder's width, so no
`enc_to_dec_proj` is needed); a bias-free `output_projection`, tied to the token embeddings unless
`tie_word_embeddings=False`. Param paths follow HF: `model/decoder/...` + `output_projection`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from edjax import convert
from edjax.convert import identity, linear, linear_rules, norm_rules, rule
from edjax.model_configs import HFConfig
from edjax.models import layers, registry
from edjax.models.outputs import ModelOutput
from edjax.models.dropout import Dropout

Array = jax.Array


class BartStyleNames:
  """Uniform accessors for configs with BART-style names (d_model, decoder_layers, ...): TrOCR's
  and the BART family's (edjax/models/bart.py)."""

  @property
  def hidden_size(self) -> int:
    return self.d_model

  @property
  def num_layers(self) -> int:
    return self.decoder_layers

  @property
  def num_heads(self) -> int:
    return self.decoder_attention_heads

  @property
  def intermediate_size(self) -> int:
    return self.decoder_ffn_dim

  @property
  def initializer_range(self) -> float:
    return self.init_std

  @property
  def max_positions(self) -> int:
    return self.max_position_embeddings

  @property
  def dropout_rate(self) -> float:
    return self.dropout


@dataclasses.dataclass(frozen=True)
class TrOCRConfig(BartStyleNames, HFConfig):
  """transformers.TrOCRConfig fields (the TrOCR text decoder: post-LN, BART-style names)."""

  model_type: ClassVar[str] = "trocr"
  vocab_size: int = 50265
  d_model: int = 1024
  decoder_layers: int = 12
  decoder_attention_heads: int = 16
  decoder_ffn_dim: int = 4096
  activation_function: str = "gelu"
  max_position_embeddings: int = 512
  dropout: float = 0.1
  attention_dropout: float = 0.0
  activation_dropout: float = 0.0
  init_std: float = 0.02
  decoder_layerdrop: float = 0.0
  use_cache: bool = True
  scale_embedding: bool = False
  use_learned_position_embeddings: bool = True
  layernorm_embedding: bool = True
  pad_token_id: int | None = 1
  bos_token_id: int | None = 0
  eos_token_id: int | None = 2
  decoder_start_token_id: int | None = 2
  is_decoder: bool = False
  add_cross_attention: bool = False
  cross_attention_hidden_size: int | None = None
  tie_word_embeddings: bool = True
  extra: tuple = ()

  layer_norm_eps: ClassVar[float] = 1e-5  # torch.nn.LayerNorm's default, used by TrOCR
  # Block order, read by TrOCRDecoder (shared with the BART family, edjax/models/bart.py):
  # post-LN layers and no LayerNorm after the last one.
  pre_layer_norm: ClassVar[bool] = False
  final_layer_norm: ClassVar[bool] = False


LEARNED_POSITION_OFFSET = 2  # TrOCRLearnedPositionalEmbedding: num_embeddings + 2 rows


def block_config(config: TrOCRConfig) -> layers.BlockConfig:
  return layers.BlockConfig(
      hidden_size=config.d_model, num_heads=config.decoder_attention_heads,
      intermediate_size=config.decoder_ffn_dim, activation=config.activation_function,
      layer_norm_eps=config.layer_norm_eps, pre_layer_norm=config.pre_layer_norm,
      cross_attention=config.add_cross_attention, dropout_rate=config.dropout,
      attention_dropout_rate=config.attention_dropout,
      activation_dropout_rate=config.activation_dropout, init_std=config.init_std,
      **layers.runtime_options(config))


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
  """transformers.TrOCRDecoder: embeddings (+ positions, + optional LayerNorm), post-LN layers.

  Also the body of BART / MBart's causal decoders (their configs set `pre_layer_norm` and
  `final_layer_norm`, the final LayerNorm named `layer_norm` as in MBartDecoder).
  """

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
    self.dropout = Dropout(cfg.dropout)
    self.layers = layers.TransformerStack(block_config(cfg), cfg.decoder_layers, self.dtype)
    if cfg.final_layer_norm:
      self.layer_norm = layers.layer_norm(cfg.layer_norm_eps, self.dtype)

  def cross_kv(self, encoder_hidden: Array):
    return self.layers.cross_kv(encoder_hidden)

  def _positions(self, input_ids: Array, offset: Array | int,
                 position_ids: Array | None = None) -> Array:
    """[batch, length, d_model] position embeddings of tokens starting at absolute `offset`.

    position_ids [batch, length]: 0-based positions within each packed segment (learned: row
    position + 2; sinusoidal: row padding_idx + 1 + position, pads row padding_idx).
    """
    cfg = self.config
    length = input_ids.shape[1]
    if cfg.use_learned_position_embeddings:
      base = jnp.arange(length)[None, :] if position_ids is None else position_ids
      positions = base + offset + LEARNED_POSITION_OFFSET  # [1 or batch, length]
      return jnp.broadcast_to(self.embed_positions(positions),
                              (input_ids.shape[0], length, cfg.d_model))
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else 0
    table = jnp.asarray(sinusoidal_table(cfg.max_position_embeddings + pad + 1, cfg.d_model, pad))
    not_pad = (input_ids != pad).astype(jnp.int32)  # [batch, length]
    if position_ids is not None:
      positions = (position_ids + offset + 1) * not_pad + pad
      return table[positions]
    positions = (jnp.cumsum(not_pad, axis=1) + offset) * not_pad + pad  # padding -> row `pad` = 0
    return table[positions]

  @nn.compact  # creates the decode-cache variables
  def __call__(self, input_ids: Array, *, attention_mask: Array | None = None,
               encoder_hidden_states: Array | None = None,
               encoder_attention_mask: Array | None = None, cross_kv=None, decode: bool = False,
               deterministic: bool = True, output_hidden_states: bool = False,
               output_attentions: bool = False, position_ids: Array | None = None) -> ModelOutput:
    """input_ids [batch, length]; attention_mask [batch, length] (decode mode: [batch, max_len])
    or a full bool mask [batch, 1, length, k_len]; position_ids: 0-based within each packed
    segment (`_positions`)."""
    cfg = self.config
    offset = layers.advance_decode_position(self, input_ids.shape[1], decode)
    scale = math.sqrt(cfg.d_model) if cfg.scale_embedding else 1.0
    x = self.embed_tokens(input_ids) * scale + self._positions(input_ids, offset, position_ids)
    if cfg.layernorm_embedding:
      x = self.layernorm_embedding(x)
    x = self.dropout(x, deterministic=deterministic).astype(self.dtype)  # [batch, length, d_model]
    x, hidden_states, attentions, cross_attentions = self.layers(
        x, attention_mask=attention_mask, causal=True, encoder_hidden=encoder_hidden_states,
        cross_kv=cross_kv, encoder_attention_mask=encoder_attention_mask, decode=decode,
        deterministic=deterministic, output_hidden_states=output_hidden_states,
        output_attentions=output_attentions)
    if cfg.final_layer_norm:
      x = self.layer_norm(x)
      if output_hidden_states:  # HF reports the last state after the final LayerNorm
        hidden_states = hidden_states[:-1] + (x,)
    return ModelOutput(last_hidden_state=x, hidden_states=hidden_states, attentions=attentions,
                       cross_attentions=cross_attentions)


class TrOCRDecoderWrapper(nn.Module):
  """HF's `TrOCRDecoderWrapper`: only there so the param paths read model/decoder/..."""

  config: TrOCRConfig
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.decoder = TrOCRDecoder(self.config, self.dtype)


class TrOCRForCausalLM(layers.CausalLM):
  """transformers.TrOCRForCausalLM: `model.decoder` + `output_projection` (no bias)."""

  def setup(self):
    cfg = self.config
    self.model = TrOCRDecoderWrapper(cfg, self.dtype)
    if not cfg.tie_word_embeddings:
      self.output_projection = layers.dense(cfg.vocab_size, ("embed", "vocab"), cfg.init_std,
                                            self.dtype, use_bias=False)

  def body(self) -> TrOCRDecoder:
    return self.model.decoder

  def lm_logits(self, hidden: Array) -> Array:
    head = None if self.config.tie_word_embeddings else self.output_projection
    return layers.bias_free_lm_logits(hidden, self.model.decoder.embed_tokens.embedding, head,
                                      self.dtype)


# ----------------------------------------------------------------------------- HF conversion


def decoder_body_rules(config, hf: str, flax: str) -> list[convert.Rule]:
  """TrOCRDecoder / BartDecoder / MBartDecoder under `{hf}model.decoder` (BART-style names)."""
  h = config.decoder_attention_heads
  src_root, dst_root = f"{hf}model.decoder", f"{flax}model/decoder"
  rules = [rule(f"{src_root}.embed_tokens.weight", f"{dst_root}/embed_tokens/embedding", identity())]
  if config.use_learned_position_embeddings:
    rules.append(rule(f"{src_root}.embed_positions.weight",
                      f"{dst_root}/embed_positions/embedding", identity()))
  if config.layernorm_embedding:
    rules += norm_rules(f"{src_root}.layernorm_embedding", f"{dst_root}/layernorm_embedding")
  qkv = ("q_proj", "k_proj", "v_proj")
  for i in range(config.decoder_layers):
    src, dst = f"{src_root}.layers.{i}", f"{dst_root}/layers/layers_{i}"
    rules += convert.attention_rules(f"{src}.self_attn", f"{src}.self_attn.out_proj",
                                     f"{dst}/self_attn", h, qkv)
    rules += norm_rules(f"{src}.self_attn_layer_norm", f"{dst}/self_attn_norm")
    if config.add_cross_attention:
      rules += convert.attention_rules(f"{src}.encoder_attn", f"{src}.encoder_attn.out_proj",
                                       f"{dst}/cross_attn", h, qkv)
      rules += norm_rules(f"{src}.encoder_attn_layer_norm", f"{dst}/cross_attn_norm")
    rules += linear_rules(f"{src}.fc1", f"{dst}/mlp/fc_in")
    rules += linear_rules(f"{src}.fc2", f"{dst}/mlp/fc_out")
    rules += norm_rules(f"{src}.final_layer_norm", f"{dst}/mlp_norm")
  if config.final_layer_norm:
    rules += norm_rules(f"{src_root}.layer_norm", f"{dst_root}/layer_norm")
  return rules


def decoder_rules(config: TrOCRConfig, hf: str, flax: str) -> list[convert.Rule]:
  """TrOCRForCausalLM: `model.decoder` + `output_projection` (untied only)."""
  rules = decoder_body_rules(config, hf, flax)
  if not config.tie_word_embeddings:
    rules.append(rule(f"{hf}output_projection.weight", f"{flax}output_projection/kernel", linear()))
  return rules


def hf_buffers(config: TrOCRConfig) -> dict[str, np.ndarray]:
  """TrOCR's sinusoidal positions register `_float_tensor` (a 1-element dtype carrier, its value
  unused); without it transformers reports a missing key."""
  if config.use_learned_position_embeddings:
    return {}
  return {"model.decoder.embed_positions._float_tensor": np.zeros((1,), np.float32)}


ARCHITECTURES = (registry.Architecture(
    config_class=TrOCRConfig, modality=registry.TEXT, base_model_prefix="model",
    decoder=TrOCRForCausalLM, decoder_rules=decoder_rules, hf_buffers=hf_buffers,
    fresh_on_warm_start=("encoder_attn", "output_projection."),
    ignored_hf_keys=(r"(^|\.)output_projection\.weight$", r"(^|\.)embed_positions\._float_tensor$")),)
