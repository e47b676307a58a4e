"""ELECTRA: config, encoder (`ElectraModel`), causal-LM decoder with cross-attention
(`ElectraForCausalLM`, the generator) and their HF conversion rules.

ELECTRA is BERT whose embeddings are `embedding_size` wide: word + position + token-type
embeddings and their LayerNorm at that width (`bert.BertEmbeddings` on a config view with
hidden_size = embedding_size), then `embeddings_project` (a Linear to hidden_size, present only
when the widths differ), then BERT's post-LN layers (the shared `layers.TransformerStack`, named
as `bert.BertModel`'s). No pooler. The causal LM's head is the generator's:
`generator_predictions` (dense to embedding_size -> exact gelu, whatever `hidden_act` says, as
HF's `get_activation("gelu")` -> LayerNorm) -> `generator_lm_head`, a Linear tied to the word
embeddings with a bias (`bert_generation.TiedLinearHead`).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from edjax import convert
from edjax.convert import identity, linear, linear_rules, norm_rules, rule
from edjax.models import bert, bert_generation, inputs, layers, registry
from edjax.models.outputs import ModelOutput

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ElectraConfig(bert.BertConfig):
  """transformers.ElectraConfig: BertConfig's fields + `embedding_size`, with ELECTRA's defaults
  (those of electra-small's discriminator). The summary_* / classifier fields of HF's config
  (task heads edjax does not build) stay in `extra`."""

  model_type: ClassVar[str] = "electra"
  base_model_prefix: ClassVar[str] = "electra"
  embedding_size: int = 128
  hidden_size: int = 256
  num_attention_heads: int = 4
  intermediate_size: int = 1024

  def embedding_view(self) -> bert.BertConfig:
    """This config with hidden_size = embedding_size: what the embeddings module reads."""
    return self.replace(hidden_size=self.embedding_size)

  @property
  def projects_embeddings(self) -> bool:
    """HF adds `embeddings_project` only when embedding_size != hidden_size."""
    return self.embedding_size != self.hidden_size

  def lm_head_flops(self, length: int) -> float:
    """The generator head: dense hidden -> embedding_size, then embedding_size -> vocab."""
    return 2.0 * length * self.embedding_size * (self.hidden_size + self.vocab_size)


class ElectraModel(nn.Module):
  """transformers.ElectraModel (also the body of the causal-LM decoder)."""

  config: ElectraConfig
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    cfg = self.config
    self.embeddings = bert.BertEmbeddings(cfg.embedding_view(), self.dtype)
    if cfg.projects_embeddings:
      self.embeddings_project = layers.dense(cfg.hidden_size, (None, "embed"),
                                             cfg.initializer_range, self.dtype)
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
    offset = layers.advance_decode_position(self, input_ids.shape[1], decode)
    x = self.embeddings(input_ids, token_type_ids, offset, deterministic,
                        position_ids)  # [batch, length, emb]
    if self.config.projects_embeddings:
      x = self.embeddings_project(x)  # [batch, length, hidden]
    x, hidden_states, attentions, cross_attentions = self.encoder(
        x, attention_mask=attention_mask, causal=self.config.is_decoder,
        encoder_hidden=encoder_hidden_states, cross_kv=cross_kv,
        encoder_attention_mask=encoder_attention_mask, decode=decode,
        deterministic=deterministic, output_hidden_states=output_hidden_states,
        output_attentions=output_attentions)
    return ModelOutput(last_hidden_state=x, hidden_states=hidden_states, attentions=attentions,
                       cross_attentions=cross_attentions)


class ElectraGeneratorPredictions(nn.Module):
  """dense (hidden -> embedding_size) -> exact gelu -> LayerNorm(embedding_size)."""

  config: ElectraConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.config
    x = layers.dense(cfg.embedding_size, ("embed", "mlp"), cfg.initializer_range, self.dtype,
                     "dense")(x)  # [batch, length, embedding_size]
    x = layers.get_activation("gelu")(x)
    return layers.layer_norm(cfg.layer_norm_eps, self.dtype, "LayerNorm")(x)


class ElectraForCausalLM(layers.CausalLM):
  """transformers.ElectraForCausalLM: `electra` body + the generator's prediction head."""

  def setup(self):
    cfg = self.config
    self.electra = ElectraModel(cfg, self.dtype)
    self.generator_predictions = ElectraGeneratorPredictions(cfg, self.dtype)
    self.generator_lm_head = bert_generation.TiedLinearHead(
        cfg.vocab_size, cfg.tie_word_embeddings, cfg.initializer_range, self.dtype)

  def body(self) -> ElectraModel:
    return self.electra

  def lm_logits(self, hidden: Array) -> Array:
    return self.generator_lm_head(self.generator_predictions(hidden),
                                  self.electra.embeddings.word_embeddings.embedding)


# ----------------------------------------------------------------------------- HF conversion


def body_rules(config: ElectraConfig, hf: str, flax: str) -> list[convert.Rule]:
  """ElectraModel: BertModel's tables (no pooler) + `embeddings_project`."""
  rules = bert.body_rules(config, hf, flax, pooler=False)
  if config.projects_embeddings:
    rules += linear_rules(f"{hf}embeddings_project", f"{flax}embeddings_project")
  return rules


def encoder_rules(config: ElectraConfig, hf: str, flax: str) -> list[convert.Rule]:
  return body_rules(config, hf, flax)


def decoder_rules(config: ElectraConfig, hf: str, flax: str) -> list[convert.Rule]:
  """ElectraForCausalLM: `electra.*`, `generator_predictions.*`, `generator_lm_head.bias`
  (+ `generator_lm_head.weight` untied)."""
  rules = body_rules(config, f"{hf}electra.", f"{flax}electra/")
  rules += linear_rules(f"{hf}generator_predictions.dense", f"{flax}generator_predictions/dense")
  rules += norm_rules(f"{hf}generator_predictions.LayerNorm",
                      f"{flax}generator_predictions/LayerNorm")
  rules.append(rule(f"{hf}generator_lm_head.bias", f"{flax}generator_lm_head/bias", identity()))
  if not config.tie_word_embeddings:
    rules.append(rule(f"{hf}generator_lm_head.weight", f"{flax}generator_lm_head/kernel",
                      linear()))
  return rules


ARCHITECTURES = (registry.Architecture(
    config_class=ElectraConfig, modality=registry.TEXT, base_model_prefix="electra",
    encoder=ElectraModel, decoder=ElectraForCausalLM,
    encoder_rules=encoder_rules, decoder_rules=decoder_rules,
    check_inputs=inputs.check_text_inputs, dummy_inputs=inputs.text_dummy_inputs,
    fresh_on_warm_start=("crossattention", "generator_predictions.", "generator_lm_head."),
    # Buffers, and the tied output embedding copy (an untied config reads it through its rule).
    ignored_hf_keys=(r"(^|\.)embeddings\.position_ids$", r"(^|\.)embeddings\.token_type_ids$",
                     r"(^|\.)generator_lm_head\.weight$")),)
