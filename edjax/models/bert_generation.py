"""BertGeneration: config, encoder (`BertGenerationEncoder`), causal-LM decoder with
cross-attention (`BertGenerationDecoder`) and their HF conversion rules.

The model of Rothe et al.'s warm-started seq2seq checkpoints (`google/bert_for_seq_generation_*`,
`google/roberta2roberta_*`): BERT's post-LN layers (the shared `layers.TransformerStack`, named as
`bert.BertModel`'s) behind word + 0-based position embeddings and a LayerNorm, with no token
types and no pooler. The decoder's head is a single Linear tied to the word embeddings plus a
bias (`BertGenerationOnlyLMHead`: `lm_head.decoder` / `lm_head.bias`), with no transform;
`TiedLinearHead` below is that head (ELECTRA's `generator_lm_head` is the same one).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from edjax import convert
from edjax.convert import identity, linear, norm_rules, rule
from edjax.model_configs import HFConfig, HFLayerNames
from edjax.models import bert, inputs, layers, registry
from edjax.models.outputs import ModelOutput
from edjax.models.dropout import Dropout

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class BertGenerationConfig(HFLayerNames, HFConfig):
  """transformers.BertGenerationConfig fields and defaults (BERT-large sizes, vocab 50358)."""

  model_type: ClassVar[str] = "bert-generation"
  base_model_prefix: ClassVar[str] = "bert"
  vocab_size: int = 50358
  hidden_size: int = 1024
  num_hidden_layers: int = 24
  num_attention_heads: int = 16
  intermediate_size: int = 4096
  hidden_act: str = "gelu"
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  max_position_embeddings: int = 512
  initializer_range: float = 0.02
  layer_norm_eps: float = 1e-12
  pad_token_id: int | None = 0
  bos_token_id: int | None = 2
  eos_token_id: int | None = 1
  decoder_start_token_id: int | None = None
  position_embedding_type: str = "absolute"
  is_decoder: bool = False
  add_cross_attention: bool = False
  cross_attention_hidden_size: int | None = None
  tie_word_embeddings: bool = True
  extra: tuple = ()

  # What bert.position_ids reads: BERT's 0-based positions.
  padding_offset_positions: ClassVar[bool] = False

  @property
  def max_positions(self) -> int:
    return self.max_position_embeddings


class BertGenerationEmbeddings(nn.Module):
  """word + position embeddings, LayerNorm, dropout (no token types)."""

  config: BertGenerationConfig
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    cfg, std = self.config, self.config.initializer_range
    self.word_embeddings = layers.embed(cfg.vocab_size, cfg.hidden_size, ("vocab", "embed"), std)
    self.position_embeddings = layers.embed(cfg.max_position_embeddings, cfg.hidden_size,
                                            ("length", "embed"), std)
    self.LayerNorm = layers.layer_norm(cfg.layer_norm_eps, self.dtype)
    self.dropout = Dropout(cfg.hidden_dropout_prob)

  def __call__(self, input_ids: Array, offset: Array | int = 0,
               deterministic: bool = True, position_ids_within_segment: Array | None = None) -> Array:
    positions = bert.position_ids(self.config, input_ids, offset,
                                  position_ids_within_segment)  # [batch, length]
    x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
    x = self.LayerNorm(x)  # [batch, length, hidden]
    return self.dropout(x, deterministic=deterministic).astype(self.dtype)


class BertGenerationEncoder(nn.Module):
  """transformers.BertGenerationEncoder (also the body of the causal-LM decoder)."""

  config: BertGenerationConfig
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    cfg = self.config
    self.embeddings = BertGenerationEmbeddings(cfg, self.dtype)
    self.encoder = layers.TransformerStack(bert.block_config(cfg), cfg.num_hidden_layers,
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
    or a full bool mask [batch, 1, length, k_len]; position_ids: 0-based within each packed
    segment (`bert.position_ids`)."""
    if token_type_ids is not None:
      raise ValueError("BertGeneration has no token type embeddings: leave token_type_ids out")
    offset = layers.advance_decode_position(self, input_ids.shape[1], decode)
    x = self.embeddings(input_ids, offset, deterministic, position_ids)  # [batch, length, hidden]
    x, hidden_states, attentions, cross_attentions = self.encoder(
        x, attention_mask=attention_mask, causal=self.config.is_decoder,
        encoder_hidden=encoder_hidden_states, cross_kv=cross_kv,
        encoder_attention_mask=encoder_attention_mask, decode=decode,
        deterministic=deterministic, output_hidden_states=output_hidden_states,
        output_attentions=output_attentions)
    return ModelOutput(last_hidden_state=x, hidden_states=hidden_states, attentions=attentions,
                       cross_attentions=cross_attentions)


class TiedLinearHead(nn.Module):
  """A vocab projection with a bias: the (tied) word embedding matmul, or an untied kernel.

  hidden [batch, length, width] -> fp32 logits [batch, length, vocab]. Params: `bias` [vocab]
  (+ `kernel` [width, vocab] when `tied` is False).
  """

  vocab_size: int
  tied: bool = True
  init_std: float = 0.02
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, word_embeddings: Array) -> Array:
    if self.tied:
      logits = layers.tied_logits(x, word_embeddings, self.dtype)
    else:
      kernel = self.param("kernel", layers.normal_init(self.init_std, ("embed", "vocab")),
                          (x.shape[-1], self.vocab_size), jnp.float32)  # [width, vocab]
      logits = jnp.einsum("blw,wv->blv", x.astype(self.dtype), kernel.astype(self.dtype),
                          preferred_element_type=jnp.float32)
    bias = self.param("bias", layers.zeros_init(("vocab",)), (self.vocab_size,), jnp.float32)
    return logits + bias  # [batch, length, vocab]


class BertGenerationDecoder(layers.CausalLM):
  """transformers.BertGenerationDecoder: `bert` body + `lm_head` (Linear tied to the embeddings)."""

  def setup(self):
    cfg = self.config
    self.bert = BertGenerationEncoder(cfg, self.dtype)
    self.lm_head = TiedLinearHead(cfg.vocab_size, cfg.tie_word_embeddings, cfg.initializer_range,
                                  self.dtype)

  def body(self) -> BertGenerationEncoder:
    return self.bert

  def lm_logits(self, hidden: Array) -> Array:
    return self.lm_head(hidden, self.bert.embeddings.word_embeddings.embedding)


# ----------------------------------------------------------------------------- HF conversion


def body_rules(config: BertGenerationConfig, hf: str, flax: str) -> list[convert.Rule]:
  """BertGenerationEncoder: BertModel's tables without token types and pooler."""
  rules = [rule(f"{hf}embeddings.{n}.weight", f"{flax}embeddings/{n}/embedding", identity())
           for n in ("word_embeddings", "position_embeddings")]
  rules += norm_rules(f"{hf}embeddings.LayerNorm", f"{flax}embeddings/LayerNorm")
  # The layers are BERT's, under the same names: bert.body_rules' entries below `encoder.`.
  return rules + [r for r in bert.body_rules(config, hf, flax, pooler=False)
                  if r.hf.startswith(f"{hf}encoder.")]


def encoder_rules(config: BertGenerationConfig, hf: str, flax: str) -> list[convert.Rule]:
  return body_rules(config, hf, flax)


def decoder_rules(config: BertGenerationConfig, hf: str, flax: str) -> list[convert.Rule]:
  """BertGenerationDecoder: `bert.*` + `lm_head.bias` (+ `lm_head.decoder.weight` untied)."""
  rules = body_rules(config, f"{hf}bert.", f"{flax}bert/")
  rules.append(rule(f"{hf}lm_head.bias", f"{flax}lm_head/bias", identity(),
                    aliases=(f"{hf}lm_head.decoder.bias",)))
  if not config.tie_word_embeddings:
    rules.append(rule(f"{hf}lm_head.decoder.weight", f"{flax}lm_head/kernel", linear()))
  return rules


ARCHITECTURES = (registry.Architecture(
    config_class=BertGenerationConfig, modality=registry.TEXT, base_model_prefix="bert",
    encoder=BertGenerationEncoder, decoder=BertGenerationDecoder,
    encoder_rules=encoder_rules, decoder_rules=decoder_rules,
    check_inputs=inputs.check_text_inputs, dummy_inputs=inputs.text_dummy_inputs,
    fresh_on_warm_start=("crossattention", "lm_head."),
    # The position_ids buffer, and the tied output embedding copy (an untied config reads it
    # through its rule first).
    ignored_hf_keys=(r"(^|\.)embeddings\.position_ids$", r"(^|\.)lm_head\.decoder\.weight$")),)
