"""ViT and DeiT image encoders (`transformers.ViTModel` / `DeiTModel`): configs, modules, rules.

Pre-LN transformer blocks (the shared `layers.TransformerStack` with `pre_layer_norm=True`), a
final LayerNorm, and a dense + `pooler_act` pooler on token 0. Inputs are `pixel_values`
[batch, channels, height, width] (NCHW, as HF); the patch projection is a stride-`patch_size`
`nn.Conv` whose kernel is HWIO (torch's Conv2d weight is OIHW; `convert.oihw_to_hwio` maps it).
DeiT differs only by a distillation token after [CLS] (and one more position embedding).
Images are `image_size` (an int: square, or [height, width] as HF allows). To fine-tune a
checkpoint at another size, set the config's image_size (e.g. `from_encoder_decoder_pretrained(
vit_dir, dec_dir, encoder_image_size=384)`): the pretrained position table is interpolated on
load, bicubic exactly as HF's `interpolate_pos_encoding=True` computes it on every call.
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
from edjax.model_configs import ConfigError, HFConfig, HFLayerNames
from edjax.models import layers, registry
from edjax.models.outputs import ModelOutput
from edjax.models.dropout import Dropout

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
    (h, w), (ph, pw) = self.image_hw, self.patch_hw
    if h % ph or w % pw:
      raise ConfigError(f"{self.model_type} image_size {h}x{w} is not a multiple of patch_size "
                        f"{ph}x{pw}: use an image size that is (e.g. {h // ph * ph}x{w // pw * pw})")

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
      init_std=config.initializer_range, qkv_bias=(config.qkv_bias,) * 3, **layers.runtime_options(config))


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
                     "resize the images, or build the model at that size (encoder_image_size=...: "
                     "the position embeddings are interpolated on load)")


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
    self.dropout = Dropout(cfg.hidden_dropout_prob)

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
  rules += [rule(f"{emb}.position_embeddings", f"{flax}embeddings/position_embeddings",
                 position_embedding_hooks(config)),
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


def bicubic_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
  """[out_size, in_size] weights of torch's `interpolate(mode='bicubic', align_corners=False)`
  along one axis (cubic convolution with A = -0.75, edge indices clamped), so that
  `W @ x` resizes x [in_size, ...] exactly as HF's `interpolate_pos_encoding` does."""
  a = -0.75

  def near(x):  # |x| <= 1
    return ((a + 2) * x - (a + 3)) * x * x + 1

  def far(x):  # 1 < |x| < 2
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

  weights = np.zeros((out_size, in_size), np.float64)
  scale = in_size / out_size
  for i in range(out_size):
    src = (i + 0.5) * scale - 0.5
    base = int(np.floor(src))
    t = src - base
    for offset, w in zip((-1, 0, 1, 2), (far(t + 1), near(t), near(1 - t), far(2 - t))):
      weights[i, min(max(base + offset, 0), in_size - 1)] += w
  return weights


def interpolate_position_embeddings(table: np.ndarray, num_special: int,
                                    grid: tuple[int, int]) -> np.ndarray:
  """A pretrained [1, special + n*n, hidden] table -> [1, special + gh*gw, hidden] for a patch
  grid (gh, gw), bicubic as HF's `interpolate_pos_encoding` (the pretrained grid is square, as
  HF assumes); the special tokens' rows are kept."""
  special, patches = table[:, :num_special], table[0, num_special:]  # [n*n, hidden]
  side = int(round(np.sqrt(patches.shape[0])))
  if side * side != patches.shape[0]:
    raise ValueError(f"cannot interpolate {patches.shape[0]} position embeddings: not a square "
                     "grid (HF interpolates square pretrained grids only)")
  grid_in = patches.reshape(side, side, -1).astype(np.float64)  # [n, n, hidden]
  rows, cols = bicubic_resize_matrix(side, grid[0]), bicubic_resize_matrix(side, grid[1])
  out = np.einsum("hi,ijd,wj->hwd", rows, grid_in, cols)  # [gh, gw, hidden]
  out = out.reshape(1, grid[0] * grid[1], -1).astype(table.dtype)
  return np.concatenate([special, out], axis=1)


def position_embedding_hooks(config: ViTConfig):
  """Identity, except that a checkpoint table of another patch grid (an encoder pretrained at
  224 fine-tuned at `config.image_size`) is interpolated to this config's grid on load."""
  (h, w), (ph, pw) = config.image_hw, config.patch_hw
  grid, special = (h // ph, w // pw), config.num_special_tokens

  def to_flax(a):
    if a.ndim == 3 and a.shape[1] != config.max_positions:
      a = interpolate_position_embeddings(a, special, grid)
    return (a,)
  return to_flax, identity()[1]


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
