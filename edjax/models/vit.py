"""ViT and DeiT image encoders (`transformers.ViTModel` / `DeiTModel`): configs, modules, rules.

Pre-LN transformer blocks (the shared `layers.TransformerStack` with `pre_layer_norm=True`), a
final LayerNorm, and a dense + `pooler_act` pooler on token 0. Inputs are `pixel_values`
[batch, channels, height, width] (NCHW, as HF); the patch projection is a stride-`patch_size`
`nn.Conv` whose kernel is HWIO (torch's Conv2d weight is OIHW; `convert.oihw_to_hwio` maps it).
DeiT differs only by a distillation token after [CLS] (and one more position embedding).
Position-embedding interpolation for other image sizes is not implemented: the image must be
`image_size` (an int: square, or [height, width] as HF allows).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from edjax import convert
from edjax.convert import identity, linear_rules, norm_rules, oihw_to_hwio, rule
from edjax.model_configs import HFConfig, HFLayerNames
from edjax.models import layers, registry
from edjax.models.outputs import ModelOutput

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ViTConfig(HFLayerNames, HFConfig):
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
  num_special_tokens: ClassVar[int] = 2  # [CLS] + the distillation token




def block_config(config: ViTConfig) -> layers.BlockConfig:
  return layers.BlockConfig(
      hidden_size=config.hidden_size, num_heads=config.num_attention_heads,
      intermediate_size=config.intermediate_size, activation=config.hidden_act,
      layer_norm_eps=config.layer_norm_eps, pre_layer_norm=True,
      cross_attention=False, dropout_rate=config.hidden_dropout_prob,
      attention_dropout_rate=config.attention_probs_dropout_prob,
      init_std=config.initializer_range, qkv_bias=(config.qkv_bias,) * 3)


def check_pixel_values(config: ViTConfig, pixel_values: Array) -> None:
  """Raises a ValueError naming the problem when pixel_values does not fit the config."""
  shape = tuple(np.shape(pixel_values))
  want = (config.num_channels, *config.image_hw)
  if len(shape) != 4:
    raise ValueError(f"pixel_values must be [batch, channels, height, width] (NCHW, as HF); "
                     f"got shape {shape} (rank {len(shape)})")
  if shape[1] != config.num_channels:
    hint = (" (it looks channels-last: transpose it to NCHW)"
            if shape[-1] == config.num_channels else "")
    raise ValueError(f"pixel_values has {shape[1]} channels in dim 1; the {config.model_type} "
                     f"config expects num_channels={config.num_channels}{hint}; got shape {shape}")
  if shape[2:] != want[1:]:
    raise ValueError(f"pixel_values image size {shape[2]}x{shape[3]} (height x width) does not "
                     f"match the {config.model_type} config's image_size {want[1]}x{want[2]}; "
                     "resize the images (position-embedding interpolation is not supported)")


class ViTEmbeddings(nn.Module):
  """Patch projection, [CLS] (+ DeiT distillation) token, position embeddings, dropout."""

  config: ViTConfig
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    cfg, std = self.config, self.config.initializer_range
    p, hidden = cfg.patch_hw, cfg.hidden_size
    self.patch_embeddings = nn.Conv(
        hidden, kernel_size=p, strides=p, padding="VALID", dtype=self.dtype,
        param_dtype=jnp.float32,
        kernel_init=layers.normal_init(std, (None, None, None, "embed")),  # HWIO
        bias_init=layers.zeros_init(("embed",)))
    self.cls_token = self.param("cls_token", layers.normal_init(std, (None, None, "embed")),
                                (1, 1, hidden), jnp.float32)
    if cfg.num_special_tokens == 2:  # DeiT
      self.distillation_token = self.param(
          "distillation_token", layers.normal_init(std, (None, None, "embed")), (1, 1, hidden),
          jnp.float32)
    self.position_embeddings = self.param(
        "position_embeddings", layers.normal_init(std, (None, "length", "embed")),
        (1, cfg.max_positions, hidden), jnp.float32)
    self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

  def __call__(self, pixel_values: Array, deterministic: bool = True) -> Array:
    """pixel_values [batch, C, H, W] -> [batch, special + patches, hidden]."""
    batch = pixel_values.shape[0]
    x = jnp.transpose(pixel_values, (0, 2, 3, 1)).astype(self.dtype)  # NHWC
    x = self.patch_embeddings(x)  # [batch, H/p, W/p, hidden]
    x = x.reshape(batch, -1, x.shape[-1])  # row-major patches, as torch's flatten(2)
    special = [self.cls_token]
    if self.config.num_special_tokens == 2:  # DeiT
      special.append(self.distillation_token)
    special = [jnp.broadcast_to(t, (batch, 1, x.shape[-1])).astype(x.dtype) for t in special]
    x = jnp.concatenate(special + [x], axis=1) + self.position_embeddings
    return self.dropout(x, deterministic=deterministic).astype(self.dtype)


class ViTModel(nn.Module):
  """transformers.ViTModel / DeiTModel (chosen by `config.model_type`)."""

  config: ViTConfig
  add_pooling_layer: bool = True
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    cfg = self.config
    self.embeddings = ViTEmbeddings(cfg, self.dtype)
    self.encoder = layers.TransformerStack(block_config(cfg), cfg.num_hidden_layers, self.dtype)
    self.layernorm = layers.layer_norm(cfg.layer_norm_eps, self.dtype)
    if self.add_pooling_layer:
      self.pooler = layers.dense(cfg.pooler_size, ("embed", "mlp"), cfg.initializer_range,
                                 self.dtype)

  def __call__(self, pixel_values: Array, *, deterministic: bool = True,
               output_hidden_states: bool = False, output_attentions: bool = False) -> ModelOutput:
    """pixel_values [batch, C, H, W] float -> last_hidden_state [batch, seq, hidden]."""
    check_pixel_values(self.config, pixel_values)
    x = self.embeddings(pixel_values, deterministic)  # [batch, special + patches, hidden]
    x, hidden_states, attentions, _ = self.encoder(
        x, deterministic=deterministic, output_hidden_states=output_hidden_states,
        output_attentions=output_attentions)
    x = self.layernorm(x).astype(self.dtype)
    pooled = None
    if self.add_pooling_layer:
      pooled = layers.get_activation(self.config.pooler_act)(self.pooler(x[:, 0]))
    return ModelOutput(last_hidden_state=x, pooler_output=pooled, hidden_states=hidden_states,
                       attentions=attentions)


# ----------------------------------------------------------------------------- HF conversion


def encoder_rules(config: ViTConfig, hf: str, flax: str) -> list[convert.Rule]:
  """ViTModel / DeiTModel (pre-LN blocks, final `layernorm`, pooler)."""
  h = config.num_attention_heads
  emb = f"{hf}embeddings"
  rules = [rule(f"{emb}.cls_token", f"{flax}embeddings/cls_token", identity())]
  if config.num_special_tokens == 2:  # DeiT
    rules.append(rule(f"{emb}.distillation_token", f"{flax}embeddings/distillation_token",
                      identity()))
  rules += [rule(f"{emb}.position_embeddings", f"{flax}embeddings/position_embeddings", identity()),
            rule(f"{emb}.patch_embeddings.projection.weight",
                 f"{flax}embeddings/patch_embeddings/kernel", oihw_to_hwio()),
            rule(f"{emb}.patch_embeddings.projection.bias",
                 f"{flax}embeddings/patch_embeddings/bias", identity())]
  for i in range(config.num_hidden_layers):
    src, dst = f"{hf}encoder.layer.{i}", f"{flax}encoder/layers_{i}"
    rules += convert.attention_rules(f"{src}.attention.attention", f"{src}.attention.output.dense",
                                     f"{dst}/self_attn", h, qkv_bias=(config.qkv_bias,) * 3)
    rules += norm_rules(f"{src}.layernorm_before", f"{dst}/self_attn_norm")
    rules += norm_rules(f"{src}.layernorm_after", f"{dst}/mlp_norm")
    rules += linear_rules(f"{src}.intermediate.dense", f"{dst}/mlp/fc_in")
    rules += linear_rules(f"{src}.output.dense", f"{dst}/mlp/fc_out")
  rules += norm_rules(f"{hf}layernorm", f"{flax}layernorm")
  rules += linear_rules(f"{hf}pooler.dense", f"{flax}pooler")
  return rules


def _check_inputs(config: ViTConfig, inputs: dict) -> None:
  if inputs.get("pixel_values") is not None:
    check_pixel_values(config, inputs["pixel_values"])


def dummy_inputs(config: ViTConfig, batch: int = 1) -> dict:
  """Images that trace the encoder's shapes at init."""
  return {"pixel_values": np.zeros((batch, config.num_channels, *config.image_hw), np.float32)}


def _architecture(config_class: type) -> registry.Architecture:
  return registry.Architecture(
      config_class=config_class, modality=registry.IMAGE,
      base_model_prefix=config_class.model_type, encoder=ViTModel, encoder_rules=encoder_rules,
      check_inputs=_check_inputs, dummy_inputs=dummy_inputs, fresh_on_warm_start=("pooler.",))


ARCHITECTURES = (_architecture(ViTConfig), _architecture(DeiTConfig))
