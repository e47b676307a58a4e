"""GPT-2 as a causal-LM decoder with optional cross-attention (`crossattention`, `ln_cross_attn`).

HF stores GPT-2's fused `c_attn` (and the cross-attention's `q_attn` + `c_attn`) as Conv1D
(in, out) matrices; the converter splits them into the shared Attention's query/key/value.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from edjax.model_configs import GPT2Config
from edjax.models import layers
from edjax.models.outputs import CausalLMOutput, ModelOutput

Array = jax.Array


def block_config(config: GPT2Config) -> layers.BlockConfig:
  return layers.BlockConfig(
      hidden_size=config.n_embd, num_heads=config.n_head,
      intermediate_size=config.intermediate_size, activation=config.activation_function,
      layer_norm_eps=config.layer_norm_epsilon, pre_layer_norm=True,
      cross_attention=config.add_cross_attention, dropout_rate=config.resid_pdrop,
      attention_dropout_rate=config.attn_pdrop, scale_attention=config.scale_attn_weights,
      scale_by_inverse_layer_idx=config.scale_attn_by_inverse_layer_idx,
      init_std=config.initializer_range)


class GPT2Model(nn.Module):
  """transformers.GPT2Model: wte + wpe, pre-LN blocks `h`, final `ln_f`."""

  config: GPT2Config
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    cfg, std = self.config, self.config.initializer_range
    self.wte = layers.embed(cfg.vocab_size, cfg.n_embd, ("vocab", "embed"), std)
    self.wpe = layers.embed(cfg.n_positions, cfg.n_embd, ("length", "embed"), std)
    self.drop = nn.Dropout(cfg.embd_pdrop)
    self.h = layers.TransformerStack(block_config(cfg), cfg.n_layer, self.dtype)
    self.ln_f = layers.layer_norm(cfg.layer_norm_epsilon, self.dtype)

  def cross_kv(self, encoder_hidden: Array):
    return self.h.cross_kv(encoder_hidden)

  @nn.compact  # creates the decode-cache variables
  def __call__(self, input_ids: Array, attention_mask: Array | None = None,
               encoder_hidden_states: Array | None = None,
               encoder_attention_mask: Array | None = None, cross_kv=None, decode: bool = False,
               deterministic: bool = True, output_hidden_states: bool = False,
               output_attentions: bool = False) -> ModelOutput:
    length = input_ids.shape[1]
    offset = layers.advance_decode_position(self, length, decode)
    positions = jnp.arange(length)[None, :] + offset  # [1, length]
    x = self.wte(input_ids) + self.wpe(positions)  # [batch, length, n_embd]
    x = self.drop(x, deterministic=deterministic).astype(self.dtype)
    self_mask = None if attention_mask is None else layers.padding_mask(attention_mask)
    cross_mask = (None if encoder_attention_mask is None
                  else layers.padding_mask(encoder_attention_mask))
    x, hidden_states, attentions, cross_attentions = self.h(
        x, self_mask=self_mask, causal=True, encoder_hidden=encoder_hidden_states,
        cross_kv=cross_kv, cross_mask=cross_mask, decode=decode, deterministic=deterministic,
        output_hidden_states=output_hidden_states, output_attentions=output_attentions)
    x = self.ln_f(x)
    if output_hidden_states:  # HF reports the last state after ln_f
      hidden_states = hidden_states[:-1] + (x,)
    return ModelOutput(last_hidden_state=x, hidden_states=hidden_states, attentions=attentions,
                       cross_attentions=cross_attentions)


class GPT2LMHeadModel(nn.Module):
  """transformers.GPT2LMHeadModel: `transformer` + bias-free head tied to `wte`."""

  config: GPT2Config
  dtype: jnp.dtype = jnp.float32
  base_prefix = "transformer"

  def setup(self):
    cfg = self.config
    self.transformer = GPT2Model(cfg, self.dtype)
    if not cfg.tie_word_embeddings:
      self.lm_head = layers.dense(cfg.vocab_size, ("embed", "vocab"), cfg.initializer_range,
                                  self.dtype, use_bias=False)

  def cross_kv(self, encoder_hidden: Array):
    """Per-layer cross-attention (key, value) from encoder states [batch, src_len, hidden]."""
    return self.transformer.cross_kv(encoder_hidden)

  def __call__(self, input_ids: Array, attention_mask: Array | None = None,
               encoder_hidden_states: Array | None = None,
               encoder_attention_mask: Array | None = None, cross_kv=None, decode: bool = False,
               deterministic: bool = True, output_hidden_states: bool = False,
               output_attentions: bool = False) -> CausalLMOutput:
    out = self.transformer(input_ids, attention_mask, encoder_hidden_states,
                           encoder_attention_mask, cross_kv, decode, deterministic,
                           output_hidden_states, output_attentions)
    head = None if self.config.tie_word_embeddings else self.lm_head
    logits = layers.bias_free_lm_logits(out.last_hidden_state, self.transformer.wte.embedding,
                                        head, self.dtype)
    return CausalLMOutput(logits=logits, hidden_states=out.hidden_states,
                          attentions=out.attentions, cross_attentions=out.cross_attentions)
