"""The registry: everything edjax knows about each model family, and the ONLY list of families.

Each family is one file in `edjax/models/` that defines its config class, its linen modules and
its HF conversion rules, and ends with `ARCHITECTURES = (Architecture(...), ...)`. Adding a family
is that file plus one line in `FAMILIES` below. Nothing outside the family's file branches on a
`model_type`: the composite, the converter, the loaders and generation ask the registry.

    arch = registry.get("bert")
    arch.config_class, arch.modality           # BertConfig, 'text'
    arch.encoder(config, dtype=...)            # a linen module (None: cannot encode)
    arch.decoder_rules(config, "decoder.", "decoder/")   # HF name <-> param path rules
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Optional

import numpy as np

from edjax.model_configs import ConfigError

# One line per family: the modules that define ARCHITECTURES. Registration order is the order
# error messages list families in.
FAMILIES = (
    "edjax.models.bert",  # bert, roberta, xlm-roberta, camembert
    "edjax.models.gpt2",  # gpt2
    "edjax.models.vit",  # vit, deit
    "edjax.models.trocr",  # trocr
    "edjax.models.swin",  # swin, donut-swin
    "edjax.models.bart",  # bart, mbart
    "edjax.models.beit",  # beit
    "edjax.models.bert_generation",  # bert-generation
    "edjax.models.electra",  # electra
)

Rules = Callable[[Any, str, str], list]  # (config, hf_prefix 'x.', flax_prefix 'x/') -> [Rule]
TEXT, IMAGE = "text", "image"


@dataclasses.dataclass(frozen=True)
class Architecture:
  """What edjax knows of one HF `model_type` (and its aliases).

  config_class:      the family's HFConfig subclass (`config_class.model_type` is the HF name).
  modality:          'text' (encoder reads input_ids + attention_mask [+ token_type_ids]) or
                     'image' (encoder reads pixel_values [batch, C, H, W], every patch attended).
  base_model_prefix: HF's base_model_prefix: the body inside a task model ('bert', 'transformer').
  encoder / decoder: (config, dtype=...) -> linen module; None when the family cannot be one.
                     Encoders follow `interfaces.TextEncoder` / `ImageEncoder`, decoders
                     `interfaces.CausalDecoder`.
  encoder_rules / decoder_rules: (config, hf_prefix, flax_prefix) -> conversion rules of the
                     single-model HF checkpoint (BertModel / BertLMHeadModel, ...).
  check_inputs:      (config, inputs dict) -> None; raises a clear ValueError for encoder inputs
                     that do not fit the config (shapes, ids >= vocab, image size).
  dummy_inputs:      (config, batch) -> encoder inputs used to trace shapes at init.
  fresh_on_warm_start: substrings of HF tensor names a warm start may leave randomly
                     initialised (cross-attention, LM head, pooler), as HF does.
  ignored_hf_keys:   regexes of HF buffers / derived tensors skipped on load.
  hf_buffers:        config -> {HF name (below the part's prefix): array} of persistent buffers
                     transformers expects in a checkpoint but edjax has no param for.
  aliases:           other HF model_type names served by the same config class and modules.
  """

  config_class: type
  modality: str
  base_model_prefix: str
  encoder: Optional[Callable[..., Any]] = None
  decoder: Optional[Callable[..., Any]] = None
  encoder_rules: Optional[Rules] = None
  decoder_rules: Optional[Rules] = None
  check_inputs: Optional[Callable[[Any, dict], None]] = None
  dummy_inputs: Optional[Callable[[Any, int], dict]] = None
  fresh_on_warm_start: tuple[str, ...] = ()
  ignored_hf_keys: tuple[str, ...] = ()
  hf_buffers: Optional[Callable[[Any], dict[str, np.ndarray]]] = None
  aliases: tuple[str, ...] = ()

  @property
  def model_type(self) -> str:
    return self.config_class.model_type

  @property
  def input_names(self) -> tuple[str, ...]:
    """The encoder's model inputs."""
    return ("pixel_values",) if self.modality == IMAGE else (
        "input_ids", "attention_mask", "token_type_ids")


_REGISTRY: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
  """Adds `arch` under its model_type and aliases; a second family claiming a name is an error."""
  if arch.modality not in (TEXT, IMAGE):
    raise ValueError(f"{arch.model_type}: modality must be {TEXT!r} or {IMAGE!r}")
  for name in (arch.model_type, *arch.aliases):
    if name in _REGISTRY and _REGISTRY[name] is not arch:
      raise ValueError(f"model_type {name!r} is registered twice")
    _REGISTRY[name] = arch
  return arch


def _load() -> dict[str, Architecture]:
  if not _REGISTRY:
    for module in FAMILIES:
      for arch in importlib.import_module(module).ARCHITECTURES:
        register(arch)
  return _REGISTRY


def model_types() -> list[str]:
  """Every registered model_type (and alias), in registration order."""
  return list(_load())


def get(model_type: str) -> Architecture:
  """The Architecture of an HF model_type; an unknown one is a ConfigError listing the known."""
  registry = _load()
  if model_type not in registry:
    raise ConfigError(f"unknown model_type {model_type!r}: edjax supports {sorted(registry)}")
  return registry[model_type]


def encoder_module(config, dtype) -> Any:
  """The linen encoder module of a model config (ConfigError if the family cannot encode)."""
  arch = get(config.model_type)
  if arch.encoder is None:
    raise ConfigError(f"model_type {config.model_type!r} cannot be an encoder; "
                      f"encoders: {[k for k, a in _load().items() if a.encoder]}")
  return arch.encoder(config, dtype=dtype)


def decoder_module(config, dtype) -> Any:
  """The linen causal-LM decoder module of a model config (ConfigError if it cannot decode)."""
  arch = get(config.model_type)
  if arch.decoder is None:
    raise ConfigError(f"model_type {config.model_type!r} cannot be a decoder; "
                      f"decoders: {[k for k, a in _load().items() if a.decoder]}")
  return arch.decoder(config, dtype=dtype)


def encoder_rules(config, hf: str = "", flax: str = "") -> list:
  """Conversion rules of an encoder checkpoint (e.g. BertModel, ViTModel, with pooler)."""
  arch = get(config.model_type)
  if arch.encoder_rules is None:
    raise ConfigError(f"model_type {config.model_type!r} has no encoder conversion rules")
  return arch.encoder_rules(config, hf, flax)


def decoder_rules(config, hf: str = "", flax: str = "") -> list:
  """Conversion rules of a causal-LM checkpoint (e.g. BertLMHeadModel, GPT2LMHeadModel)."""
  arch = get(config.model_type)
  if arch.decoder_rules is None:
    raise ConfigError(f"model_type {config.model_type!r} has no decoder conversion rules")
  return arch.decoder_rules(config, hf, flax)
