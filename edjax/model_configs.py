"""Model configurations: frozen dataclasses that read and write HF `config.json` dicts.

`HFConfig` is the base every family's config derives from (each family's config class lives in
its own `edjax/models/<family>.py`, next to its modules); this module holds the shared
behaviour and the two composites, `EncoderDecoderConfig` and `VisionEncoderDecoderConfig`.
Each config keeps the field names of its transformers counterpart, so a `config.json` written by
transformers loads here and the one we write loads there. Keys we do not model are kept in
`extra` and written back unchanged (round trip). Which class a `model_type` names is the
registry's answer (`edjax.models.registry`), never a table here.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, ClassVar, Mapping


class ConfigError(ValueError):
  """A config dict or override that edjax cannot turn into a model."""


def _freeze(value):
  if isinstance(value, dict):
    return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
  if isinstance(value, list):
    return tuple(_freeze(v) for v in value)
  return value


class _Extra(tuple):
  """The kept unknown keys, ((key, value), ...): values stay as read (lists, dicts), hashed frozen.

  Frozen dataclass subclasses get a generated __hash__ over all fields, so `extra` itself must
  hash even when config.json holds lists ("architectures") or dicts ("id2label").
  """

  def __hash__(self):
    return hash(tuple((k, _freeze(v)) for k, v in self))


# HFConfig fields that say how a model runs, not what it is: kept out of config.json.
RUNTIME_FIELDS = ("attention_impl", "scan_layers", "remat")
ATTENTION_IMPLS = ("einsum", "xla", "cudnn")
# 'none', 'full' (save nothing: recompute the whole block) or a jax.checkpoint_policies name.
REMAT_POLICIES = ("none", "full", "dots", "dots_with_no_batch_dims", "nothing_saveable",
                  "everything_saveable", "checkpoint_dots", "checkpoint_dots_with_no_batch_dims")


def check_runtime_options(attention_impl: str, scan_layers, remat: str) -> None:
  """ConfigError for an attention_impl / scan_layers / remat value edjax does not know."""
  if attention_impl not in ATTENTION_IMPLS:
    raise ConfigError(f"attention_impl={attention_impl!r}: use one of {ATTENTION_IMPLS}")
  if not isinstance(scan_layers, bool):
    raise ConfigError(f"scan_layers={scan_layers!r}: use True or False")
  if remat not in REMAT_POLICIES:
    raise ConfigError(f"remat={remat!r}: use one of {REMAT_POLICIES}")


@dataclasses.dataclass(frozen=True)
class HFConfig:
  """Shared from_dict / to_dict / replace behaviour of all model configs."""

  model_type: ClassVar[str] = ""
  # Unknown HF keys, kept verbatim for the round trip (a tuple of items so the config hashes).
  extra: tuple = ()
  # How the model runs, not what it is (like HF's `_attn_implementation`): never written to
  # config.json, settable like any field (`replace`, `encoder_overrides`, `config.model.*`).
  # attention_impl: 'einsum' (the parity oracle) | 'xla' (jax.nn.dot_product_attention) |
  #   'cudnn' (GPU); scan_layers: run the layer stack under nn.scan (params stacked on a
  #   leading `layers` axis); remat: 'none' | 'full' | a jax.checkpoint_policies name, per block.
  attention_impl: str = "einsum"
  scan_layers: bool = False
  remat: str = "none"

  @classmethod
  def field_names(cls) -> set[str]:
    """The HF config keys this class models (not `extra`, not the RUNTIME_FIELDS)."""
    return {f.name for f in dataclasses.fields(cls)
            if f.name != "extra" and f.name not in RUNTIME_FIELDS}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "HFConfig":
    """Builds the config from an HF config.json dict; unknown keys go to `extra`."""
    d = dict(d)
    model_type = d.pop("model_type", cls.model_type)
    if model_type != cls.model_type:
      raise ConfigError(f"{cls.__name__} got a config with model_type={model_type!r}; "
                        f"expected {cls.model_type!r}. Use edjax.model_configs.config_from_dict to dispatch.")
    names = cls.field_names()
    known = {k: v for k, v in d.items() if k in names}
    extra = {k: v for k, v in d.items() if k not in names}
    return cls(**known, extra=tuple(sorted(extra.items(), key=lambda kv: kv[0])))

  def __post_init__(self):
    if not isinstance(self.extra, _Extra):
      object.__setattr__(self, "extra", _Extra(self.extra))
    check_runtime_options(self.attention_impl, self.scan_layers, self.remat)

  def to_dict(self) -> dict:
    """The HF config.json dict (model_type first, then fields, then the kept unknown keys)."""
    out = {"model_type": self.model_type}
    for f in dataclasses.fields(self):
      if f.name == "extra" or f.name in RUNTIME_FIELDS:
        continue
      out[f.name] = getattr(self, f.name)
    out.update(dict(self.extra))
    return out

  def replace(self, **overrides) -> "HFConfig":
    """Returns a copy with fields replaced; a key that is not a field is a ConfigError."""
    valid = self.field_names() | set(RUNTIME_FIELDS)
    unknown = sorted(set(overrides) - valid)
    if unknown:
      raise ConfigError(
          f"unknown {type(self).__name__} key(s) {unknown}; valid keys are: "
          f"{', '.join(sorted(valid))}")
    return dataclasses.replace(self, **overrides)

  def __hash__(self):
    return hash(tuple((f.name, _freeze(getattr(self, f.name))) for f in dataclasses.fields(self)))

  # Uniform accessors used by the shared modules.
  @property
  def dropout_rate(self) -> float:
    raise NotImplementedError

  def lm_head_flops(self, length: int) -> float:
    """Matmul FLOPs of the causal-LM head over `length` positions: the vocabulary projection
    (hidden -> vocab). Families whose head has a transform first (BERT's dense) override it."""
    return 2.0 * length * self.hidden_size * self.vocab_size


class HFLayerNames:
  """Uniform accessors for configs that use HF's num_hidden_layers / num_attention_heads names."""

  @property
  def num_layers(self) -> int:
    return self.num_hidden_layers

  @property
  def num_heads(self) -> int:
    return self.num_attention_heads

  @property
  def dropout_rate(self) -> float:
    return self.hidden_dropout_prob


@dataclasses.dataclass(frozen=True)
class EncoderDecoderConfig:
  """transformers.EncoderDecoderConfig: an encoder config, a decoder config, shared settings."""

  model_type: ClassVar[str] = "encoder-decoder"
  encoder: HFConfig  # required, as in transformers: there is no default encoder or decoder
  decoder: HFConfig
  tie_encoder_decoder: bool = False
  decoder_start_token_id: int | None = None
  pad_token_id: int | None = None
  eos_token_id: int | None = None
  bos_token_id: int | None = None
  extra: tuple = ()

  @classmethod
  def from_encoder_decoder_configs(cls, encoder: HFConfig, decoder: HFConfig,
                                   **kwargs) -> "EncoderDecoderConfig":
    """Joins two model configs; the decoder is made causal with cross-attention, as HF does."""
    decoder = decoder.replace(is_decoder=True, add_cross_attention=True)
    return cls(encoder=encoder, decoder=decoder, **kwargs)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "EncoderDecoderConfig":
    d = dict(d)
    d.pop("model_type", None)
    for part in ("encoder", "decoder"):
      if part not in d:
        raise ConfigError(f"encoder-decoder config has no {part!r} sub-config; "
                          "is this a single-model checkpoint? Use from_encoder_decoder_pretrained.")
    encoder = config_from_dict(d.pop("encoder"))
    decoder = config_from_dict(d.pop("decoder"))
    names = {f.name for f in dataclasses.fields(cls)} - {"encoder", "decoder", "extra"}
    known = {k: d.pop(k) for k in list(d) if k in names}
    d.pop("is_encoder_decoder", None)
    return cls(encoder=encoder, decoder=decoder, **known,
               extra=tuple(sorted(d.items(), key=lambda kv: kv[0])))

  def to_dict(self) -> dict:
    out = {
        "model_type": self.model_type,
        "is_encoder_decoder": True,
        "encoder": self.encoder.to_dict(),
        "decoder": self.decoder.to_dict(),
    }
    for name in ("tie_encoder_decoder", "decoder_start_token_id", "pad_token_id",
                 "eos_token_id", "bos_token_id"):
      out[name] = getattr(self, name)
    out.update(dict(self.extra))
    return out

  def replace(self, **overrides) -> "EncoderDecoderConfig":
    names = {f.name for f in dataclasses.fields(self)}
    unknown = sorted(set(overrides) - names)
    if unknown:
      raise ConfigError(f"unknown EncoderDecoderConfig key(s) {unknown}; valid keys are: "
                        f"{', '.join(sorted(names))}")
    return dataclasses.replace(self, **overrides)

  def __hash__(self):
    return hash((self.encoder, self.decoder, self.tie_encoder_decoder, self.decoder_start_token_id,
                 self.pad_token_id, self.eos_token_id, self.bos_token_id, _freeze(dict(self.extra))))

  @property
  def needs_enc_to_dec_proj(self) -> bool:
    """HF adds `enc_to_dec_proj` when widths differ and the decoder sets no cross width."""
    return (self.encoder.hidden_size != self.decoder.hidden_size
            and self.decoder.cross_attention_hidden_size is None)


@dataclasses.dataclass(frozen=True)
class VisionEncoderDecoderConfig(EncoderDecoderConfig):
  """transformers.VisionEncoderDecoderConfig: an image encoder + a text decoder."""

  model_type: ClassVar[str] = "vision-encoder-decoder"

  def __post_init__(self):
    if modality(self.encoder) != "image":
      raise ConfigError(f"a vision-encoder-decoder needs an image encoder ({_image_types()}), "
                        f"got {self.encoder.model_type!r}; use EncoderDecoderConfig for text encoders")

  def __hash__(self):
    return hash((self.model_type, super().__hash__()))


COMPOSITES = (EncoderDecoderConfig, VisionEncoderDecoderConfig)


def _image_types() -> tuple[str, ...]:
  from edjax.models import registry
  return tuple(t for t in registry.model_types() if registry.get(t).modality == "image")


def modality(config: HFConfig) -> str:
  """'text' or 'image': what the model of `config` reads (the registry's answer)."""
  from edjax.models import registry
  return registry.get(config.model_type).modality


def config_from_dict(d: Mapping[str, Any]) -> HFConfig | EncoderDecoderConfig:
  """Builds the config class named by `d['model_type']`; an unknown type is a ConfigError."""
  from edjax.models import registry
  composites = {c.model_type: c for c in COMPOSITES}
  if "model_type" not in d:
    raise ConfigError("config has no 'model_type' key; add one of "
                      f"{sorted(registry.model_types()) + list(composites)}")
  model_type = d["model_type"]
  if model_type in composites:
    return composites[model_type].from_dict(d)
  return registry.get(model_type).config_class.from_dict(d)


def join_configs(encoder: HFConfig, decoder: HFConfig, **kwargs) -> EncoderDecoderConfig:
  """The composite config of an encoder and a decoder: VisionEncoderDecoderConfig for an image
  encoder, else EncoderDecoderConfig (kwargs: tie_encoder_decoder and the special token ids)."""
  cls = VisionEncoderDecoderConfig if modality(encoder) == "image" else EncoderDecoderConfig
  return cls.from_encoder_decoder_configs(encoder, decoder, **kwargs)


def load_config_file(path: str) -> Any:
  """Reads `config.json` from a directory (or the file itself) into a config object."""
  if os.path.isdir(path):
    path = os.path.join(path, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"no config.json at {path}: pass an HF-format model directory")
  with open(path) as f:
    try:
      d = json.load(f)
    except json.JSONDecodeError as e:
      raise ConfigError(f"{path} is not valid JSON ({e}); re-export the checkpoint") from e
  return config_from_dict(d)


def with_runtime_options(config, **options):
  """`config` (a model config or a composite: both parts) with RUNTIME_FIELDS replaced; keys
  left out or given as None keep their value. ConfigError for another key or a bad value."""
  unknown = sorted(set(options) - set(RUNTIME_FIELDS))
  if unknown:
    raise ConfigError(f"unknown runtime option(s) {unknown}; valid: {RUNTIME_FIELDS}")
  options = {k: v for k, v in options.items() if v is not None}
  if not options:
    return config
  if isinstance(config, EncoderDecoderConfig):
    return config.replace(encoder=config.encoder.replace(**options),
                          decoder=config.decoder.replace(**options))
  return config.replace(**options)
