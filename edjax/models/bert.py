"""BERT and RoBERTa: encoder (`BertModel`) and causal-LM decoder with cross-attention.

RoBERTa differs only in config defaults and positions: `padding_idx + 1 + cumsum(ids != pad)`
for real tokens and `padding_idx` for pads (HF `create_position_ids_from_input_ids`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from edjax.model_configs import BertConfig
from edjax.models import layers
from edjax.models.outputs import CausalLMOutput, ModelOutput

Array = jax.Array


def block_config(config: BertConfig) -> layers.BlockConfig:
  return layers.BlockConfig(
      hidden_size=config.hidden_size, num_heads=config.num_attention_heads,
      intermediate_size=config.intermediate_size, activation=config.hidden_act,
      layer_norm_eps=config.layer_norm_eps, pre_layer_norm=False,
      cross_attention=config.add_cross_attention, dropout_rate=config.hidden_dropout_prob,
      attention_dropout_rate=config.attention_probs_dropout_prob,
      init_std=config.initializer_range)


def position_ids(config: BertConfig, input_ids: Array, offset: Array | int) -> Array:
  """[batch, length] absolute positions; `offset` = tokens already in the decode cache."""
  if config.position_embedding_type != "absolute":
    raise ValueError(f"position_embedding_type={config.position_embedding_type!r} is not "
                     "supported; edjax implements 'absolute'")
  if config.model_type == "roberta":
    pad = config.pad_token_id
    not_pad = (input_ids != pad).astype(jnp.int32)
    return (jnp.cumsum(not_pad, axis=1) + offset) * not_pad + pad
  length = input_ids.shape[1]
  return jnp.broadcast_to(jnp.arange(length)[None, :] + offset, input_ids.shape)


class BertEmbeddings(nn.Module):
  """word + position + token-type embeddings, LayerNorm, dropout."""

  config: BertConfig
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    cfg, std = self.config, self.config.initializer_range
    self.word_embeddings = layers.embed(cfg.vocab_size, cfg.hidden_size, ("vocab", "embed"), std)
    self.position_embeddings = layers.embed(cfg.max_position_embeddings, cfg.hidden_size,
                                            ("length", "embed"), std)
    self.token_type_embeddings = layers.embed(cfg.type_vocab_size, cfg.hidden_size,
                                              (None, "embed"), std)
    self.LayerNorm = layers.layer_norm(cfg.layer_norm_eps, self.dtype)
    self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

  def __call__(self, input_ids: Array, token_type_ids: Array | None = None,
               offset: Array | int = 0, deterministic: bool = True) -> Array:
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    positions = position_ids(self.config, input_ids, offset)
    x = (self.word_embeddings(input_ids) + self.position_embeddings(positions)
         + self.token_type_embeddings(token_type_ids))  # [batch, length, hidden]
    x = self.LayerNorm(x)
    return self.dropout(x, deterministic=deterministic).astype(self.dtype)


class BertModel(nn.Module):
  """transformers.BertModel / RobertaModel (also the body of the causal-LM decoder)."""

  config: BertConfig
  add_pooling_layer: bool = True
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    cfg = self.config
    self.embeddings = BertEmbeddings(cfg, self.dtype)
    self.encoder = layers.TransformerStack(block_config(cfg), cfg.num_hidden_layers, self.dtype)
    if self.add_pooling_layer:
      self.pooler = layers.dense(cfg.hidden_size, ("embed", "mlp"), cfg.initializer_range,
                                 self.dtype)

  def cross_kv(self, encoder_hidden: Array):
    return self.encoder.cross_kv(encoder_hidden)

  @nn.compact  # creates the decode-cache variables
  def __call__(self, input_ids: Array, attention_mask: Array | None = None,
               token_type_ids: Array | None = None, encoder_hidden_states: Array | None = None,
               encoder_attention_mask: Array | None = None, cross_kv=None, decode: bool = False,
               deterministic: bool = True, output_hidden_states: bool = False,
               output_attentions: bool = False) -> ModelOutput:
    """input_ids [batch, length]; attention_mask [batch, length] (decode mode: [batch, max_len])."""
    offset = layers.advance_decode_position(self, input_ids.shape[1], decode)
    x = self.embeddings(input_ids, token_type_ids, offset, deterministic)
    self_mask = None if attention_mask is None else layers.padding_mask(attention_mask)
    cross_mask = (None if encoder_attention_mask is None
                  else layers.padding_mask(encoder_attention_mask))
    x, hidden_states, attentions, cross_attentions = self.encoder(
        x, self_mask=self_mask, causal=self.config.is_decoder,
        encoder_hidden=encoder_hidden_states, cross_kv=cross_kv, cross_mask=cross_mask,
        decode=decode, deterministic=deterministic, output_hidden_states=output_hidden_states,
        output_attentions=output_attentions)
    pooled = jnp.tanh(self.pooler(x[:, 0])) if self.add_pooling_layer else None
    return ModelOutput(last_hidden_state=x, pooler_output=pooled, hidden_states=hidden_states,
                       attentions=attentions, cross_attentions=cross_attentions)


class BertLMHead(nn.Module):
  """dense -> activation -> LayerNorm -> (tied) vocab projection + bias."""

  config: BertConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, word_embeddings: Array) -> Array:
    cfg = self.config
    x = layers.dense(cfg.hidden_size, ("embed", "mlp"), cfg.initializer_range, self.dtype,
                     "transform")(x)
    x = layers.get_activation(cfg.hidden_act)(x)
    x = layers.layer_norm(cfg.layer_norm_eps, self.dtype, "transform_norm")(x)
    if cfg.tie_word_embeddings:
      logits = layers.tied_logits(x, word_embeddings, self.dtype)
    else:
      logits = layers.dense(cfg.vocab_size, ("embed", "vocab"), cfg.initializer_range, self.dtype,
                            "decoder", use_bias=False)(x).astype(jnp.float32)
    bias = self.param("bias", layers.zeros_init(("vocab",)), (cfg.vocab_size,), jnp.float32)
    return logits + bias  # [batch, length, vocab]


class BertLMHeadModel(nn.Module):
  """transformers.BertLMHeadModel / RobertaForCausalLM; the body is named by model_type."""

  config: BertConfig
  dtype: jnp.dtype = jnp.float32

  @property
  def base_prefix(self) -> str:
    return self.config.model_type  # 'bert' or 'roberta', as HF's base_model_prefix

  def setup(self):
    setattr(self, self.base_prefix, BertModel(self.config, add_pooling_layer=False,
                                              dtype=self.dtype))
    self.lm_head = BertLMHead(self.config, self.dtype)

  @property
  def body(self) -> BertModel:
    return getattr(self, self.base_prefix)

  def cross_kv(self, encoder_hidden: Array):
    """Per-layer cross-attention (key, value) from encoder states [batch, src_len, hidden]."""
    return self.body.cross_kv(encoder_hidden)

  def __call__(self, input_ids: Array, attention_mask: Array | None = None,
               encoder_hidden_states: Array | None = None,
               encoder_attention_mask: Array | None = None, cross_kv=None, decode: bool = False,
               deterministic: bool = True, output_hidden_states: bool = False,
               output_attentions: bool = False) -> CausalLMOutput:
    out = self.body(input_ids, attention_mask, None, encoder_hidden_states, encoder_attention_mask,
                    cross_kv, decode, deterministic, output_hidden_states, output_attentions)
    embedding = self.body.embeddings.word_embeddings.embedding  # [vocab, hidden]
    logits = self.lm_head(out.last_hidden_state, embedding)
    return CausalLMOutput(logits=logits, hidden_states=out.hidden_states,
                          attentions=out.attentions, cross_attentions=out.cross_attentions)
