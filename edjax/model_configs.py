"""Model configurations: frozen dataclasses that read and write HF `config.json` dicts.

Each architecture config keeps the field names of its transformers counterpart, so a
`config.json` written by transformers loads here and the one we write loads there.
Keys we do not model are kept in `extra` and written back unchanged (round trip).
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


@dataclasses.dataclass(frozen=True)
class _HFConfig:
  """Shared from_dict / to_dict / replace behaviour of all model configs."""

  model_type: ClassVar[str] = ""
  # Unknown HF keys, kept verbatim for the round trip (a tuple of items so the config hashes).
  extra: tuple = ()

  @classmethod
  def field_names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.name != "extra"}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "_HFConfig":
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

  def to_dict(self) -> dict:
    """The HF config.json dict (model_type first, then fields, then the kept unknown keys)."""
    out = {"model_type": self.model_type}
    for f in dataclasses.fields(self):
      if f.name == "extra":
        continue
      out[f.name] = getattr(self, f.name)
    out.update(dict(self.extra))
    return out

  def replace(self, **overrides) -> "_HFConfig":
    """Returns a copy with fields replaced; a key that is not a field is a ConfigError."""
    unknown = sorted(set(overrides) - self.field_names())
    if unknown:
      raise ConfigError(
          f"unknown {type(self).__name__} key(s) {unknown}; valid keys are: "
          f"{', '.join(sorted(self.field_names()))}")
    return dataclasses.replace(self, **overrides)

  def __hash__(self):
    return hash(tuple((f.name, _freeze(getattr(self, f.name))) for f in dataclasses.fields(self)))

  # Uniform accessors used by the shared modules.
  @property
  def dropout_rate(self) -> float:
    raise NotImplementedError


class _HFLayerNames:
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
class BertConfig(_HFLayerNames, _HFConfig):
  """transformers.BertConfig fields (BERT, also the base of RoBERTa)."""

  model_type: ClassVar[str] = "bert"
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


@dataclasses.dataclass(frozen=True)
class RobertaConfig(BertConfig):
  """transformers.RobertaConfig: BERT with RoBERTa's defaults and padding-offset positions.

  Defaults are transformers.RobertaConfig's (so a config.json that omits a key builds the model
  HF builds), not roberta-base's checkpoint values (514 positions, type_vocab_size 1, eps 1e-5).
  """

  model_type: ClassVar[str] = "roberta"
  vocab_size: int = 50265
  pad_token_id: int | None = 1
  bos_token_id: int | None = 0
  eos_token_id: int | None = 2

  @property
  def max_positions(self) -> int:
    return self.max_position_embeddings - (self.pad_token_id or 0) - 1


@dataclasses.dataclass(frozen=True)
class GPT2Config(_HFConfig):
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


@dataclasses.dataclass(frozen=True)
class ViTConfig(_HFLayerNames, _HFConfig):
  """transformers.ViTConfig fields (the ViT image encoder)."""

  model_type: ClassVar[str] = "vit"
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  hidden_dropout_prob: float = 0.0
  attention_probs_dropout_prob: float = 0.0
  initializer_range: float = 0.02
  layer_norm_eps: float = 1e-12
  image_size: int | tuple[int, int] = 224  # or [height, width], as HF accepts
  patch_size: int | tuple[int, int] = 16
  num_channels: int = 3
  qkv_bias: bool = True
  encoder_stride: int = 16
  pooler_output_size: int | None = None  # None = hidden_size (HF resolves it the same way)
  pooler_act: str = "tanh"
  is_decoder: bool = False
  add_cross_attention: bool = False
  extra: tuple = ()

  # Special tokens prepended to the patch sequence: [CLS] (DeiT adds a distillation token).
  num_special_tokens: ClassVar[int] = 1

  def __post_init__(self):
    super().__post_init__()
    for name in ("image_size", "patch_size"):  # JSON lists -> tuples (hashable, frozen)
      value = getattr(self, name)
      if isinstance(value, list):
        object.__setattr__(self, name, tuple(value))

  @staticmethod
  def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))

  @property
  def image_hw(self) -> tuple[int, int]:
    """(height, width) of the input images."""
    return self._pair(self.image_size)

  @property
  def patch_hw(self) -> tuple[int, int]:
    return self._pair(self.patch_size)

  @property
  def num_patches(self) -> int:
    (h, w), (ph, pw) = self.image_hw, self.patch_hw
    return (h // ph) * (w // pw)

  @property
  def max_positions(self) -> int:
    """Encoder sequence length: patches + special tokens."""
    return self.num_patches + self.num_special_tokens

  @property
  def pooler_size(self) -> int:
    return self.pooler_output_size if self.pooler_output_size else self.hidden_size


@dataclasses.dataclass(frozen=True)
class DeiTConfig(ViTConfig):
  """transformers.DeiTConfig: ViT's fields; the model adds a distillation token."""

  model_type: ClassVar[str] = "deit"
  num_special_tokens: ClassVar[int] = 2


@dataclasses.dataclass(frozen=True)
class TrOCRConfig(_HFConfig):
  """transformers.TrOCRConfig fields (the TrOCR text decoder: post-LN, BART-style names)."""

  model_type: ClassVar[str] = "trocr"
  vocab_size: int = 50265
  d_model: int = 1024
  decoder_layers: int = 12
  decoder_attention_heads: int = 16
  decoder_ffn_dim: int = 4096
  activation_function: str = "gelu"
  max_position_embeddings: int = 512
  dropout: float = 0.1
  attention_dropout: float = 0.0
  activation_dropout: float = 0.0
  init_std: float = 0.02
  decoder_layerdrop: float = 0.0
  use_cache: bool = True
  scale_embedding: bool = False
  use_learned_position_embeddings: bool = True
  layernorm_embedding: bool = True
  pad_token_id: int | None = 1
  bos_token_id: int | None = 0
  eos_token_id: int | None = 2
  decoder_start_token_id: int | None = 2
  is_decoder: bool = False
  add_cross_attention: bool = False
  cross_attention_hidden_size: int | None = None
  tie_word_embeddings: bool = True
  extra: tuple = ()

  layer_norm_eps: ClassVar[float] = 1e-5  # torch.nn.LayerNorm's default, used by TrOCR

  @property
  def hidden_size(self) -> int:
    return self.d_model

  @property
  def num_layers(self) -> int:
    return self.decoder_layers

  @property
  def num_heads(self) -> int:
    return self.decoder_attention_heads

  @property
  def intermediate_size(self) -> int:
    return self.decoder_ffn_dim

  @property
  def initializer_range(self) -> float:
    return self.init_std

  @property
  def max_positions(self) -> int:
    return self.max_position_embeddings

  @property
  def dropout_rate(self) -> float:
    return self.dropout


MODEL_CONFIGS: dict[str, type[_HFConfig]] = {
    "bert": BertConfig,
    "roberta": RobertaConfig,
    "gpt2": GPT2Config,
    "vit": ViTConfig,
    "deit": DeiTConfig,
    "trocr": TrOCRConfig,
}


def config_from_dict(d: Mapping[str, Any]) -> _HFConfig:
  """Builds the config class named by `d['model_type']`; an unknown type is a ConfigError."""
  if "model_type" not in d:
    raise ConfigError("config has no 'model_type' key; add one of "
                      f"{sorted(MODEL_CONFIGS) + ['encoder-decoder', 'vision-encoder-decoder']}")
  model_type = d["model_type"]
  for composite in (EncoderDecoderConfig, VisionEncoderDecoderConfig):
    if model_type == composite.model_type:
      return composite.from_dict(d)
  if model_type not in MODEL_CONFIGS:
    raise ConfigError(f"unknown model_type {model_type!r}: edjax supports "
                      f"{sorted(MODEL_CONFIGS)} (and the 'encoder-decoder' / "
                      "'vision-encoder-decoder' composites)")
  return MODEL_CONFIGS[model_type].from_dict(d)


@dataclasses.dataclass(frozen=True)
class EncoderDecoderConfig:
  """transformers.EncoderDecoderConfig: an encoder config, a decoder config, shared settings."""

  model_type: ClassVar[str] = "encoder-decoder"
  encoder: _HFConfig = dataclasses.field(default_factory=BertConfig)
  decoder: _HFConfig = dataclasses.field(
      default_factory=lambda: BertConfig(is_decoder=True, add_cross_attention=True))
  tie_encoder_decoder: bool = False
  decoder_start_token_id: int | None = None
  pad_token_id: int | None = None
  eos_token_id: int | None = None
  bos_token_id: int | None = None
  extra: tuple = ()

  @classmethod
  def from_encoder_decoder_configs(cls, encoder: _HFConfig, decoder: _HFConfig,
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


VISION_MODEL_TYPES = ("vit", "deit")


@dataclasses.dataclass(frozen=True)
class VisionEncoderDecoderConfig(EncoderDecoderConfig):
  """transformers.VisionEncoderDecoderConfig: an image encoder (ViT, DeiT) + a text decoder."""

  model_type: ClassVar[str] = "vision-encoder-decoder"
  encoder: _HFConfig = dataclasses.field(default_factory=ViTConfig)

  def __post_init__(self):
    if self.encoder.model_type not in VISION_MODEL_TYPES:
      raise ConfigError(f"a vision-encoder-decoder needs an image encoder ({VISION_MODEL_TYPES}), "
                        f"got {self.encoder.model_type!r}; use EncoderDecoderConfig for text encoders")

  def __hash__(self):
    return hash((self.model_type, super().__hash__()))


def join_configs(encoder: _HFConfig, decoder: _HFConfig, **kwargs) -> EncoderDecoderConfig:
  """The composite config of an encoder and a decoder: VisionEncoderDecoderConfig for an image
  encoder, else EncoderDecoderConfig (kwargs: tie_encoder_decoder and the special token ids)."""
  cls = VisionEncoderDecoderConfig if encoder.model_type in VISION_MODEL_TYPES else EncoderDecoderConfig
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
