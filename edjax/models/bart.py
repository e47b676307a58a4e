"""BART and MBart causal-LM decoders with cross-attention (`BartForCausalLM` / `MBartForCausalLM`,
as EncoderDecoderModel and VisionEncoderDecoderModel build them): configs, modules, HF rules.

Both are the BART-style decoder TrOCR already has (`trocr.TrOCRDecoder`: token embeddings scaled by
sqrt(d_model) when `scale_embedding`, learned positions stored with an offset of 2,
`layernorm_embedding`, `fc1`/`fc2` MLP), under `model.decoder.*`, with a bias-free `lm_head` tied
to the token embeddings. BART's layers are post-LN; MBart's are pre-LN with a final `layer_norm`
(Donut / Nougat's decoder). The encoder half of an HF Bart/MBart checkpoint (`model.encoder.*`,
`model.shared`) is not read: edjax uses these families as decoders only, as transformers'
*ForCausalLM classes do. `decoder_layerdrop` (training-time layer skipping) is not implemented:
a config with a non-zero value still loads and runs every layer.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax

from edjax import convert
from edjax.convert import linear, rule
from edjax.model_configs import HFConfig
from edjax.models import layers, registry, trocr

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class BartConfig(trocr.BartStyleNames, HFConfig):
  """transformers.BartConfig's decoder fields (the encoder's are kept in `extra`)."""

  model_type: ClassVar[str] = "bart"
  vocab_size: int = 50265
  d_model: int = 1024
  decoder_layers: int = 12
  decoder_attention_heads: int = 16
  decoder_ffn_dim: int = 4096
  activation_function: str = "gelu"
  max_position_embeddings: int = 1024
  dropout: float = 0.1
  attention_dropout: float = 0.0
  activation_dropout: float = 0.0
  init_std: float = 0.02
  decoder_layerdrop: float = 0.0
  scale_embedding: bool = False
  pad_token_id: int | None = 1
  bos_token_id: int | None = 0
  eos_token_id: int | None = 2
  decoder_start_token_id: int | None = 2
  forced_eos_token_id: int | None = 2
  is_decoder: bool = False
  add_cross_attention: bool = False
  cross_attention_hidden_size: int | None = None
  tie_word_embeddings: bool = True
  extra: tuple = ()

  layer_norm_eps: ClassVar[float] = 1e-5  # torch.nn.LayerNorm's default
  # What trocr.TrOCRDecoder reads: always learned positions and layernorm_embedding.
  use_learned_position_embeddings: ClassVar[bool] = True
  layernorm_embedding: ClassVar[bool] = True
  pre_layer_norm: ClassVar[bool] = False
  final_layer_norm: ClassVar[bool] = False


@dataclasses.dataclass(frozen=True)
class MBartConfig(BartConfig):
  """transformers.MBartConfig: BART's fields; pre-LN layers and a final LayerNorm."""

  model_type: ClassVar[str] = "mbart"
  decoder_start_token_id: int | None = None  # MBart prompts with a language code instead
  pre_layer_norm: ClassVar[bool] = True
  final_layer_norm: ClassVar[bool] = True


class BartForCausalLM(layers.CausalLM):
  """transformers.BartForCausalLM / MBartForCausalLM: `model.decoder` + bias-free `lm_head`."""

  def setup(self):
    cfg = self.config
    self.model = trocr.TrOCRDecoderWrapper(cfg, self.dtype)
    if not cfg.tie_word_embeddings:
      self.lm_head = layers.dense(cfg.vocab_size, ("embed", "vocab"), cfg.init_std, self.dtype,
                                  use_bias=False)

  def body(self) -> trocr.TrOCRDecoder:
    return self.model.decoder

  def lm_logits(self, hidden: Array) -> Array:
    head = None if self.config.tie_word_embeddings else self.lm_head
    return layers.bias_free_lm_logits(hidden, self.model.decoder.embed_tokens.embedding, head,
                                      self.dtype)


def decoder_rules(config: BartConfig, hf: str, flax: str) -> list[convert.Rule]:
  """Bart/MBartForCausalLM: `model.decoder` + `lm_head` (untied only)."""
  rules = trocr.decoder_body_rules(config, hf, flax)
  if not config.tie_word_embeddings:
    rules.append(rule(f"{hf}lm_head.weight", f"{flax}lm_head/kernel", linear()))
  return rules


def _architecture(config_class: type) -> registry.Architecture:
  return registry.Architecture(
      config_class=config_class, modality=registry.TEXT, base_model_prefix="model",
      decoder=BartForCausalLM, decoder_rules=decoder_rules,
      fresh_on_warm_start=("encoder_attn", "lm_head."),
      # The tied lm_head copy of embed_tokens, and a full Bart/MBartModel's encoder half.
      ignored_hf_keys=(r"(^|\.)lm_head\.weight$", r"(^|\.)model\.encoder\.", r"(^|\.)model\.shared\.",
                       r"(^|\.)final_logits_bias$"))


ARCHITECTURES = (_architecture(BartConfig), _architecture(MBartConfig))
