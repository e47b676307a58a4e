"""model_type -> (config class, encoder module, decoder module, HF class names)."""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import flax.linen as nn

from edjax import model_configs as configs
from edjax.models import bert, gpt2, trocr, vit


@dataclasses.dataclass(frozen=True)
class Architecture:
  """What edjax knows of one HF model_type."""

  config_class: type
  encoder: Optional[Callable[..., nn.Module]]  # (config, dtype) -> module, None if decoder-only
  decoder: Optional[Callable[..., nn.Module]]  # causal LM with cross-attention
  hf_encoder_class: Optional[str]
  hf_decoder_class: Optional[str]
  base_model_prefix: str  # HF base_model_prefix: a task model's body (e.g. 'bert.', 'vit.')


ARCHITECTURES: dict[str, Architecture] = {
    "bert": Architecture(configs.BertConfig, bert.BertModel, bert.BertLMHeadModel,
                         "BertModel", "BertLMHeadModel", "bert"),
    "roberta": Architecture(configs.RobertaConfig, bert.BertModel, bert.BertLMHeadModel,
                            "RobertaModel", "RobertaForCausalLM", "roberta"),
    "gpt2": Architecture(configs.GPT2Config, None, gpt2.GPT2LMHeadModel,
                         None, "GPT2LMHeadModel", "transformer"),
    "vit": Architecture(configs.ViTConfig, vit.ViTModel, None, "ViTModel", None, "vit"),
    "deit": Architecture(configs.DeiTConfig, vit.ViTModel, None, "DeiTModel", None, "deit"),
    "trocr": Architecture(configs.TrOCRConfig, None, trocr.TrOCRForCausalLM, None,
                          "TrOCRForCausalLM", "model"),
}


def get(model_type: str) -> Architecture:
  if model_type not in ARCHITECTURES:
    raise configs.ConfigError(f"unknown model_type {model_type!r}: edjax supports "
                              f"{sorted(ARCHITECTURES)}")
  return ARCHITECTURES[model_type]


def encoder_module(config, dtype) -> nn.Module:
  arch = get(config.model_type)
  if arch.encoder is None:
    raise configs.ConfigError(f"model_type {config.model_type!r} cannot be an encoder; "
                              f"encoders: {[k for k, a in ARCHITECTURES.items() if a.encoder]}")
  return arch.encoder(config, dtype=dtype)


def decoder_module(config, dtype) -> nn.Module:
  arch = get(config.model_type)
  if arch.decoder is None:
    raise configs.ConfigError(f"model_type {config.model_type!r} cannot be a decoder; "
                              f"decoders: {[k for k, a in ARCHITECTURES.items() if a.decoder]}")
  return arch.decoder(config, dtype=dtype)
