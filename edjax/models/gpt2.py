"""GPT-2: config, causal-LM decoder with optional cross-attention (`crossattention`,
`ln_cross_attn`) and its HF conversion rules.

HF stores GPT-2's fused `c_attn` (and the cross-attention's `q_attn` + `c_attn`) as Conv1D
(in, out) matrices; the rules split them into the shared Attention's query/key/value.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from edjax import convert
from edjax.convert import (bias_to_heads, conv1d_rules, from_heads, identity, linear, norm_rules,
                           rule, split_fused, to_heads)
from edjax.model_configs import HFConfig
from edjax.models import layers, registry
from edjax.models.outputs import ModelOutput
from edjax.models.dropout import Dropout

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class GPT2Config(HFConfig):
  """transformers.GPT2Config fields."""

  model_type: ClassVar[str] = "gpt2"
  vocab_size: int = 50257
  n_positions: int = 1024
  n_embd: int = 768
  n_layer: int = 12
  n_head: int = 12
  n_inner: int | None = None
  activation_function: str = "gelu_new"
  resid_pdrop: float = 0.1
  embd_pdrop: float = 0.1
  attn_pdrop: float = 0.1
  layer_norm_epsilon: float = 1e-5
  initializer_range: float = 0.02
  scale_attn_weights: bool = True
  scale_attn_by_inverse_layer_idx: bool = False
  reorder_and_upcast_attn: bool = False
  pad_token_id: int | None = None
  bos_token_id: int | None = 50256
  eos_token_id: int | None = 50256
  decoder_start_token_id: int | None = None
  is_decoder: bool = False
  add_cross_attention: bool = False
  cross_attention_hidden_size: int | None = None
  tie_word_embeddings: bool = True
  extra: tuple = ()

  @property
  def hidden_size(self) -> int:
    return self.n_embd

  @property
  def num_layers(self) -> int:
    return self.n_layer

  @property
  def num_heads(self) -> int:
    return self.n_head

  @property
  def intermediate_size(self) -> int:
    return self.n_inner if self.n_inner is not None else 4 * self.n_embd

  @property
  def max_positions(self) -> int:
    return self.n_positions

  @property
  def dropout_rate(self) -> float:
    return self.resid_pdrop




def block_config(config: GPT2Config) -> layers.BlockConfig:
  return layers.BlockConfig(
      hidden_size=config.n_embd, num_heads=config.n_head,
      intermediate_size=config.intermediate_size, activation=config.activation_function,
      layer_norm_eps=config.layer_norm_epsilon, pre_layer_norm=True,
      cross_attention=config.add_cross_attention, dropout_rate=config.resid_pdrop,
      attention_dropout_rate=config.attn_pdrop, scale_attention=config.scale_attn_weights,
      scale_by_inverse_layer_idx=config.scale_attn_by_inverse_layer_idx,
      init_std=config.initializer_range, **layers.runtime_options(config))


class GPT2Model(nn.Module):
  """transformers.GPT2Model: wte + wpe, pre-LN blocks `h`, final `ln_f`."""

  config: GPT2Config
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    cfg, std = self.config, self.config.initializer_range
    self.wte = layers.embed(cfg.vocab_size, cfg.n_embd, ("vocab", "embed"), std)
    self.wpe = layers.embed(cfg.n_positions, cfg.n_embd, ("length", "embed"), std)
    self.drop = Dropout(cfg.embd_pdrop)
    self.h = layers.TransformerStack(block_config(cfg), cfg.n_layer, self.dtype)
    self.ln_f = layers.layer_norm(cfg.layer_norm_epsilon, self.dtype)

  def cross_kv(self, encoder_hidden: Array):
    return self.h.cross_kv(encoder_hidden)

  @nn.compact  # creates the decode-cache variables
  def __call__(self, input_ids: Array, *, attention_mask: Array | None = None,
               encoder_hidden_states: Array | None = None,
               encoder_attention_mask: Array | None = None, cross_kv=None, decode: bool = False,
               deterministic: bool = True, output_hidden_states: bool = False,
               output_attentions: bool = False, position_ids: Array | None = None) -> ModelOutput:
    """input_ids [batch, length]; attention_mask [batch, length] (decode mode: [batch, max_len])
    or a full bool mask [batch, 1, length, k_len]; position_ids [batch, length]: 0-based
    positions (within each packed segment), default 0, 1, ... from the cache offset."""
    length = input_ids.shape[1]
    offset = layers.advance_decode_position(self, length, decode)
    if position_ids is None:
      positions = jnp.arange(length)[None, :] + offset  # [1, length]
    else:
      positions = position_ids + offset  # [batch, length]
    x = self.wte(input_ids) + self.wpe(positions)  # [batch, length, n_embd]
    x = self.drop(x, deterministic=deterministic).astype(self.dtype)
    x, hidden_states, attentions, cross_attentions = self.h(
        x, attention_mask=attention_mask, causal=True, encoder_hidden=encoder_hidden_states,
        cross_kv=cross_kv, encoder_attention_mask=encoder_attention_mask, decode=decode,
        deterministic=deterministic, output_hidden_states=output_hidden_states,
        output_attentions=output_attentions)
    x = self.ln_f(x)
    if output_hidden_states:  # HF reports the last state after ln_f
      hidden_states = hidden_states[:-1] + (x,)
    return ModelOutput(last_hidden_state=x, hidden_states=hidden_states, attentions=attentions,
                       cross_attentions=cross_attentions)


class GPT2LMHeadModel(layers.CausalLM):
  """transformers.GPT2LMHeadModel: `transformer` + bias-free head tied to `wte`."""

  def setup(self):
    cfg = self.config
    self.transformer = GPT2Model(cfg, self.dtype)
    if not cfg.tie_word_embeddings:
      self.lm_head = layers.dense(cfg.vocab_size, ("embed", "vocab"), cfg.initializer_range,
                                  self.dtype, use_bias=False)

  def body(self) -> GPT2Model:
    return self.transformer

  def lm_logits(self, hidden: Array) -> Array:
    head = None if self.config.tie_word_embeddings else self.lm_head
    return layers.bias_free_lm_logits(hidden, self.transformer.wte.embedding, head, self.dtype)


# ----------------------------------------------------------------------------- HF conversion


def body_rules(config: GPT2Config, hf: str, flax: str) -> list[convert.Rule]:
  """GPT2Model: Conv1D weights kept as (in, out), fused projections split per head."""
  h = config.n_head
  rules = [rule(f"{hf}wte.weight", f"{flax}wte/embedding", identity()),
           rule(f"{hf}wpe.weight", f"{flax}wpe/embedding", identity())]
  for i in range(config.n_layer):
    src, dst = f"{hf}h.{i}", f"{flax}h/layers_{i}"
    qkv = [f"{dst}/self_attn/{p}" for p in ("query", "key", "value")]
    rules += norm_rules(f"{src}.ln_1", f"{dst}/self_attn_norm")
    rules += [rule(f"{src}.attn.c_attn.weight", [f"{p}/kernel" for p in qkv], split_fused(3, h, False)),
              rule(f"{src}.attn.c_attn.bias", [f"{p}/bias" for p in qkv], split_fused(3, h, True)),
              rule(f"{src}.attn.c_proj.weight", f"{dst}/self_attn/out/kernel", from_heads(h, False)),
              rule(f"{src}.attn.c_proj.bias", f"{dst}/self_attn/out/bias", identity())]
    if config.add_cross_attention:
      kv = [f"{dst}/cross_attn/{p}" for p in ("key", "value")]
      cross = f"{src}.crossattention"
      rules += norm_rules(f"{src}.ln_cross_attn", f"{dst}/cross_attn_norm")
      rules += [
          rule(f"{cross}.q_attn.weight", f"{dst}/cross_attn/query/kernel", to_heads(h, False)),
          rule(f"{cross}.q_attn.bias", f"{dst}/cross_attn/query/bias", bias_to_heads(h)),
          rule(f"{cross}.c_attn.weight", [f"{p}/kernel" for p in kv], split_fused(2, h, False)),
          rule(f"{cross}.c_attn.bias", [f"{p}/bias" for p in kv], split_fused(2, h, True)),
          rule(f"{cross}.c_proj.weight", f"{dst}/cross_attn/out/kernel", from_heads(h, False)),
          rule(f"{cross}.c_proj.bias", f"{dst}/cross_attn/out/bias", identity())]
    rules += norm_rules(f"{src}.ln_2", f"{dst}/mlp_norm")
    rules += conv1d_rules(f"{src}.mlp.c_fc", f"{dst}/mlp/fc_in")
    rules += conv1d_rules(f"{src}.mlp.c_proj", f"{dst}/mlp/fc_out")
  rules += norm_rules(f"{hf}ln_f", f"{flax}ln_f")
  return rules


def decoder_rules(config: GPT2Config, hf: str, flax: str) -> list[convert.Rule]:
  """GPT2LMHeadModel: the `transformer` body + an untied `lm_head` when not tied."""
  rules = body_rules(config, f"{hf}transformer.", f"{flax}transformer/")
  if not config.tie_word_embeddings:
    rules.append(rule(f"{hf}lm_head.weight", f"{flax}lm_head/kernel", linear()))
  return rules


ARCHITECTURES = (registry.Architecture(
    config_class=GPT2Config, modality=registry.TEXT, base_model_prefix="transformer",
    decoder=GPT2LMHeadModel, decoder_rules=decoder_rules,
    fresh_on_warm_start=("crossattention", "ln_cross_attn", "lm_head."),
    # Causal-mask buffers, and the tied lm_head copy of wte that .bin files hold.
    ignored_hf_keys=(r"(^|\.)attn\.(masked_)?bias$", r"(^|\.)crossattention\.(masked_)?bias$",
                     r"(^|\.)lm_head\.weight$")),)
