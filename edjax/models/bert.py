"""BERT and RoBERTa: config, encoder (`BertModel`), causal-LM decoder with cross-attention
(`BertLMHeadModel` / `RobertaForCausalLM`) and their HF conversion rules.

XLM-RoBERTa and CamemBERT are RoBERTa under other `model_type`s (their own config defaults; the
body is still named `roberta`, HF's base_model_prefix for both).

RoBERTa differs only in config defaults, positions (`padding_idx + 1 + cumsum(ids != pad)` for
real tokens and `padding_idx` for pads, HF `create_position_ids_from_input_ids`) and the names of
its LM head's tensors.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from edjax import convert
from edjax.convert import identity, linear, linear_rules, norm_rules, rule
from edjax.model_configs import HFConfig, HFLayerNames
from edjax.models import inputs, layers, registry
from edjax.models.outputs import ModelOutput
from edjax.models.dropout import Dropout

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class BertConfig(HFLayerNames, HFConfig):
  """transformers.BertConfig fields (BERT, also the base of RoBERTa)."""

  model_type: ClassVar[str] = "bert"
  # HF's base_model_prefix: the body's name inside BertLMHeadModel / *ForCausalLM.
  base_model_prefix: ClassVar[str] = "bert"
  vocab_size: int = 30522
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  initializer_range: float = 0.02
  layer_norm_eps: float = 1e-12
  pad_token_id: int | None = 0
  bos_token_id: int | None = None
  eos_token_id: int | None = None
  decoder_start_token_id: int | None = None
  position_embedding_type: str = "absolute"
  is_decoder: bool = False
  add_cross_attention: bool = False
  cross_attention_hidden_size: int | None = None
  tie_word_embeddings: bool = True
  extra: tuple = ()

  @property
  def max_positions(self) -> int:
    """Longest sequence the position table covers (RoBERTa loses padding_idx + 1 slots)."""
    return self.max_position_embeddings

  @property
  def padding_offset_positions(self) -> bool:
    """RoBERTa's positions count real tokens from padding_idx + 1; BERT's are 0-based."""
    return False

  def lm_head_flops(self, length: int) -> float:
    """BertLMPredictionHead / RobertaLMHead: dense (d x d) transform, then the vocab projection."""
    return 2.0 * length * self.hidden_size * (self.hidden_size + self.vocab_size)


@dataclasses.dataclass(frozen=True)
class RobertaConfig(BertConfig):
  """transformers.RobertaConfig: BERT with RoBERTa's defaults and padding-offset positions.

  Defaults are transformers.RobertaConfig's (so a config.json that omits a key builds the model
  HF builds), not roberta-base's checkpoint values (514 positions, type_vocab_size 1, eps 1e-5).
  """

  model_type: ClassVar[str] = "roberta"
  base_model_prefix: ClassVar[str] = "roberta"
  vocab_size: int = 50265
  pad_token_id: int | None = 1
  bos_token_id: int | None = 0
  eos_token_id: int | None = 2

  @property
  def max_positions(self) -> int:
    return self.max_position_embeddings - (self.pad_token_id or 0) - 1

  @property
  def padding_offset_positions(self) -> bool:
    return True


@dataclasses.dataclass(frozen=True)
class XLMRobertaConfig(RobertaConfig):
  """transformers.XLMRobertaConfig: RoBERTa's model under `xlm-roberta` (body `roberta`).

  HF's defaults: RoBERTa's special ids, BERT's vocab_size (30522; xlm-roberta-base has 250002).
  """

  model_type: ClassVar[str] = "xlm-roberta"
  vocab_size: int = 30522


@dataclasses.dataclass(frozen=True)
class CamembertConfig(RobertaConfig):
  """transformers.CamembertConfig: RoBERTa's model under `camembert` (body `roberta`); HF's
  defaults as XLMRobertaConfig's (vocab_size 30522; camembert-base has 32005)."""

  model_type: ClassVar[str] = "camembert"
  vocab_size: int = 30522


def block_config(config: BertConfig) -> layers.BlockConfig:
  return layers.BlockConfig(
      hidden_size=config.hidden_size, num_heads=config.num_attention_heads,
      intermediate_size=config.intermediate_size, activation=config.hidden_act,
      layer_norm_eps=config.layer_norm_eps, pre_layer_norm=False,
      cross_attention=config.add_cross_attention, dropout_rate=config.hidden_dropout_prob,
      attention_dropout_rate=config.attention_probs_dropout_prob,
      init_std=config.initializer_range, **layers.runtime_options(config))


def position_ids(config: BertConfig, input_ids: Array, offset: Array | int,
                 positions: Array | None = None) -> Array:
  """[batch, length] rows of the position table; `offset` = tokens already in the decode cache.

  positions: optional [batch, length] 0-based position of each token within its segment (packed
  rows, `edjax.models.segments`); BERT reads row `positions`, RoBERTa row `padding_idx + 1 +
  positions` (its pads keep row padding_idx), so positions restart with every segment.
  """
  if config.position_embedding_type != "absolute":
    raise ValueError(f"position_embedding_type={config.position_embedding_type!r} is not "
                     "supported; edjax implements 'absolute'")
  if positions is not None:
    positions = jnp.broadcast_to(positions, input_ids.shape) + offset
    if config.padding_offset_positions:
      pad = config.pad_token_id
      return jnp.where(input_ids != pad, positions + pad + 1, pad)
    return positions
  if config.padding_offset_positions:
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
    self.dropout = Dropout(cfg.hidden_dropout_prob)

  def __call__(self, input_ids: Array, token_type_ids: Array | None = None,
               offset: Array | int = 0, deterministic: bool = True,
               position_ids_within_segment: Array | None = None) -> Array:
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    positions = position_ids(self.config, input_ids, offset, position_ids_within_segment)
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
  def __call__(self, input_ids: Array, *, attention_mask: Array | None = None,
               token_type_ids: Array | None = None, encoder_hidden_states: Array | None = None,
               encoder_attention_mask: Array | None = None, cross_kv=None, decode: bool = False,
               deterministic: bool = True, output_hidden_states: bool = False,
               output_attentions: bool = False, position_ids: Array | None = None) -> ModelOutput:
    """input_ids [batch, length]; attention_mask [batch, length] (decode mode: [batch, max_len])
    or a full bool mask [batch, 1, length, k_len]; position_ids [batch, length]: 0-based positions
    within each packed segment (see `position_ids`)."""
    offset = layers.advance_decode_position(self, input_ids.shape[1], decode)
    x = self.embeddings(input_ids, token_type_ids, offset, deterministic,
                        position_ids)  # [batch, length, hidden]
    x, hidden_states, attentions, cross_attentions = self.encoder(
        x, attention_mask=attention_mask, causal=self.config.is_decoder,
        encoder_hidden=encoder_hidden_states, cross_kv=cross_kv,
        encoder_attention_mask=encoder_attention_mask, decode=decode,
        deterministic=deterministic, output_hidden_states=output_hidden_states,
        output_attentions=output_attentions)
    pooled = jnp.tanh(self.pooler(x[:, 0])) if self.add_pooling_layer else None  # [batch, hidden]
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


class BertLMHeadModel(layers.CausalLM):
  """transformers.BertLMHeadModel / RobertaForCausalLM (XLM-R, CamemBERT); the body is named by
  HF's base_model_prefix."""

  def setup(self):
    # HF's base_model_prefix ('bert' / 'roberta') names the body.
    setattr(self, self.config.base_model_prefix,
            BertModel(self.config, add_pooling_layer=False, dtype=self.dtype))
    self.lm_head = BertLMHead(self.config, self.dtype)

  def body(self) -> BertModel:
    return getattr(self, self.config.base_model_prefix)

  def lm_logits(self, hidden: Array) -> Array:
    return self.lm_head(hidden, self.body().embeddings.word_embeddings.embedding)


# ----------------------------------------------------------------------------- HF conversion


def _attention_block(hf: str, flax: str, norm: str, heads: int) -> list[convert.Rule]:
  """BERT / RoBERTa `attention` or `crossattention` block: projections + post-LN."""
  return (convert.attention_rules(f"{hf}.self", f"{hf}.output.dense", flax, heads)
          + norm_rules(f"{hf}.output.LayerNorm", norm))


def body_rules(config: BertConfig, hf: str, flax: str, pooler: bool) -> list[convert.Rule]:
  """BertModel / RobertaModel. hf / flax are prefixes ending in '.' / '/' (or empty)."""
  h = config.num_attention_heads
  rules = [rule(f"{hf}embeddings.{n}.weight", f"{flax}embeddings/{n}/embedding", identity())
           for n in ("word_embeddings", "position_embeddings", "token_type_embeddings")]
  rules += norm_rules(f"{hf}embeddings.LayerNorm", f"{flax}embeddings/LayerNorm")
  for i in range(config.num_hidden_layers):
    src, dst = f"{hf}encoder.layer.{i}", f"{flax}encoder/layers_{i}"
    rules += _attention_block(f"{src}.attention", f"{dst}/self_attn", f"{dst}/self_attn_norm", h)
    if config.add_cross_attention:
      rules += _attention_block(f"{src}.crossattention", f"{dst}/cross_attn",
                                f"{dst}/cross_attn_norm", h)
    rules += linear_rules(f"{src}.intermediate.dense", f"{dst}/mlp/fc_in")
    rules += linear_rules(f"{src}.output.dense", f"{dst}/mlp/fc_out")
    rules += norm_rules(f"{src}.output.LayerNorm", f"{dst}/mlp_norm")
  if pooler:
    rules += linear_rules(f"{hf}pooler.dense", f"{flax}pooler")
  return rules


def lm_head_rules(config: BertConfig, hf: str, flax: str) -> list[convert.Rule]:
  """BertLMHeadModel's `cls.predictions` / RobertaForCausalLM's `lm_head`."""
  if config.padding_offset_positions:  # RoBERTa's head names
    head, dense, norm = f"{hf}lm_head", "dense", "layer_norm"
  else:
    head, dense, norm = f"{hf}cls.predictions", "transform.dense", "transform.LayerNorm"
  rules = linear_rules(f"{head}.{dense}", f"{flax}lm_head/transform")
  rules += norm_rules(f"{head}.{norm}", f"{flax}lm_head/transform_norm")
  rules.append(rule(f"{head}.bias", f"{flax}lm_head/bias", identity(),
                    aliases=(f"{head}.decoder.bias",)))
  if not config.tie_word_embeddings:
    rules.append(rule(f"{head}.decoder.weight", f"{flax}lm_head/decoder/kernel", linear()))
  return rules


def encoder_rules(config: BertConfig, hf: str, flax: str) -> list[convert.Rule]:
  return body_rules(config, hf, flax, pooler=True)


def decoder_rules(config: BertConfig, hf: str, flax: str) -> list[convert.Rule]:
  base = config.base_model_prefix
  return (body_rules(config, f"{hf}{base}.", f"{flax}{base}/", pooler=False)
          + lm_head_rules(config, hf, flax))


def _architecture(config_class: type) -> registry.Architecture:
  return registry.Architecture(
      config_class=config_class, modality=registry.TEXT,
      base_model_prefix=config_class.base_model_prefix,
      encoder=BertModel, decoder=BertLMHeadModel,
      encoder_rules=encoder_rules, decoder_rules=decoder_rules,
      check_inputs=inputs.check_text_inputs, dummy_inputs=inputs.text_dummy_inputs,
      fresh_on_warm_start=("crossattention", "cls.predictions", "lm_head.", "pooler."),
      # Buffers, and the tied output embedding copies pytorch_model.bin files hold (with
      # tie_word_embeddings=False a rule reads them first).
      ignored_hf_keys=(r"(^|\.)embeddings\.position_ids$", r"(^|\.)embeddings\.token_type_ids$",
                       r"(^|\.)cls\.predictions\.decoder\.weight$",
                       r"(^|\.)lm_head\.decoder\.weight$"))


ARCHITECTURES = (_architecture(BertConfig), _architecture(RobertaConfig),
                 _architecture(XLMRobertaConfig), _architecture(CamembertConfig))
