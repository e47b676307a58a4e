"""BEiT image encoder (`transformers.BeitModel`): config, modules and HF conversion rules.

What differs from ViT, all read from the config:
- the key projection has no bias (query and value keep theirs);
- layer scale: each residual branch is multiplied by a learned per-channel `lambda_1` /
  `lambda_2` (when `layer_scale_init_value > 0`);
- a relative position bias added to the attention scores, per layer
  (`use_relative_position_bias`) or one table shared by all layers
  (`use_shared_relative_position_bias`): a [(2*Wh-1)*(2*Ww-1) + 3, heads] table indexed by the
  precomputed relative position index, whose 3 extra entries are token->[CLS], [CLS]->token and
  [CLS]->[CLS];
- absolute position embeddings only with `use_absolute_position_embeddings`;
- HF's output rule: with `use_mean_pooling` the final LayerNorm is the identity (the decoder
  cross-attends the un-normed states) and the pooler is a LayerNorm of the mean patch token;
  without it, a final LayerNorm and the [CLS] state as pooler output;
- stochastic depth (`drop_path_rate`, linspace over the layers) in training.
Images are `image_size`; a checkpoint pretrained at another size loads at this config's size with
its absolute positions interpolated (bicubic) and its relative tables resized (bilinear), as HF's
BeitModel does on every call with a new resolution.
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
from edjax.models import layers, registry, vit
from edjax.models.outputs import ModelOutput
from edjax.models.dropout import Dropout

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class BeitConfig(HFLayerNames, HFConfig):
  """transformers.BeitConfig fields the encoder reads (segmentation-head keys stay in `extra`)."""

  model_type: ClassVar[str] = "beit"
  vocab_size: int = 8192
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  hidden_dropout_prob: float = 0.0
  attention_probs_dropout_prob: float = 0.0
  initializer_range: float = 0.02
  layer_norm_eps: float = 1e-12
  image_size: int | tuple[int, int] = 224
  patch_size: int | tuple[int, int] = 16
  num_channels: int = 3
  use_mask_token: bool = False
  use_absolute_position_embeddings: bool = False
  use_relative_position_bias: bool = False
  use_shared_relative_position_bias: bool = False
  layer_scale_init_value: float = 0.1
  drop_path_rate: float = 0.1
  use_mean_pooling: bool = True
  is_decoder: bool = False
  add_cross_attention: bool = False
  extra: tuple = ()

  num_special_tokens: ClassVar[int] = 1  # [CLS]

  def __post_init__(self):
    super().__post_init__()
    for name in ("image_size", "patch_size"):  # JSON lists -> tuples (hashable, frozen)
      if isinstance(getattr(self, name), list):
        object.__setattr__(self, name, tuple(getattr(self, name)))

  image_hw = vit.ViTConfig.image_hw
  patch_hw = vit.ViTConfig.patch_hw
  _pair = staticmethod(vit.ViTConfig._pair)

  @property
  def patch_grid(self) -> tuple[int, int]:
    """(rows, cols) of patches: HF's `patch_shape`, the relative bias's window."""
    (h, w), (ph, pw) = self.image_hw, self.patch_hw
    return h // ph, w // pw

  @property
  def max_positions(self) -> int:
    """Encoder sequence length: [CLS] + patches."""
    rows, cols = self.patch_grid
    return rows * cols + 1


def block_config(config: BeitConfig) -> layers.BlockConfig:
  return layers.BlockConfig(
      hidden_size=config.hidden_size, num_heads=config.num_attention_heads,
      intermediate_size=config.intermediate_size, activation=config.hidden_act,
      layer_norm_eps=config.layer_norm_eps, pre_layer_norm=True,
      dropout_rate=config.hidden_dropout_prob,
      attention_dropout_rate=config.attention_probs_dropout_prob,
      init_std=config.initializer_range, qkv_bias=(True, False, True), **layers.runtime_options(config))


def relative_position_index(grid: tuple[int, int]) -> np.ndarray:
  """[tokens, tokens] indices into the bias table (tokens = 1 + rows*cols), as HF builds them."""
  rows, cols = grid
  distances = (2 * rows - 1) * (2 * cols - 1) + 3
  coords = np.stack(np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")).reshape(2, -1)
  rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0)  # [n, n, 2]
  rel[:, :, 0] += rows - 1
  rel[:, :, 1] += cols - 1
  rel[:, :, 0] *= 2 * cols - 1
  index = np.zeros((rows * cols + 1,) * 2, np.int32)
  index[1:, 1:] = rel.sum(-1)
  index[0, 0:] = distances - 3  # [CLS] -> token
  index[0:, 0] = distances - 2  # token -> [CLS]
  index[0, 0] = distances - 1  # [CLS] -> [CLS]
  return index


def bilinear_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
  """[out_size, in_size] weights of torch's `interpolate(mode='bilinear', align_corners=False)`
  along one axis (source index clamped at 0, as torch does for linear modes)."""
  weights = np.zeros((out_size, in_size), np.float64)
  scale = in_size / out_size
  for i in range(out_size):
    src = max((i + 0.5) * scale - 0.5, 0.0)
    lo = min(int(np.floor(src)), in_size - 1)
    hi = min(lo + 1, in_size - 1)
    frac = src - lo
    weights[i, lo] += 1.0 - frac
    weights[i, hi] += frac
  return weights


def resize_relative_table(table: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
  """A [(2*h-1)*(2*w-1) + 3, heads] table of a square pretrained grid -> the table of `grid`:
  the relative-distance part resized bilinearly as HF's BeitRelativePositionBias.forward does,
  the 3 [CLS] entries kept."""
  distances, heads = table.shape[0] - 3, table.shape[1]
  side = int(round(np.sqrt(distances)))
  if side * side != distances:
    raise ValueError(f"cannot resize a relative position table of {distances} distances: not a "
                     "square grid")
  new_h, new_w = 2 * grid[0] - 1, 2 * grid[1] - 1
  sub = table[:distances].reshape(side, side, heads).astype(np.float64)  # HF: [old_w, old_h, heads]
  out = np.einsum("hi,ijd,wj->hwd", bilinear_resize_matrix(side, new_h), sub,
                  bilinear_resize_matrix(side, new_w))  # [new_h, new_w, heads]
  return np.concatenate([out.reshape(new_h * new_w, heads).astype(table.dtype), table[distances:]])


def relative_table_hooks(config: BeitConfig):
  """Identity, except that a table of another patch grid is resized to this config's grid."""
  rows, cols = config.patch_grid
  want = (2 * rows - 1) * (2 * cols - 1) + 3

  def to_flax(a):
    return (resize_relative_table(a, (rows, cols)) if a.shape[0] != want else a,)
  return to_flax, identity()[1]


class RelativePositionBias(nn.Module):
  """The learned table, gathered into a [1, heads, tokens, tokens] score bias."""

  config: BeitConfig

  @nn.compact
  def __call__(self) -> Array:
    cfg = self.config
    rows, cols = cfg.patch_grid
    table = self.param("relative_position_bias_table", layers.zeros_init((None, "heads")),
                       ((2 * rows - 1) * (2 * cols - 1) + 3, cfg.num_attention_heads), jnp.float32)
    index = relative_position_index(cfg.patch_grid)  # [tokens, tokens]
    return jnp.transpose(table[index], (2, 0, 1))[None]  # [1, heads, tokens, tokens]


class BeitLayer(nn.Module):
  """Pre-LN block with layer scale and drop path around the shared Attention and Mlp."""

  config: BeitConfig
  drop_path: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, shared_bias: Array | None, deterministic: bool):
    cfg, block = self.config, block_config(self.config)
    bias = shared_bias
    if cfg.use_relative_position_bias:
      bias = RelativePositionBias(cfg, name="relative_position_bias")()
    hidden = cfg.hidden_size
    scale_init = nn.initializers.constant(cfg.layer_scale_init_value)
    # Stochastic depth: a whole sample's branch is dropped (one draw per row).
    drop = Dropout(self.drop_path, broadcast_dims=(1, 2))
    dropout = Dropout(cfg.hidden_dropout_prob)

    h = layers.layer_norm(cfg.layer_norm_eps, self.dtype, "layernorm_before")(x)
    h, probs = layers.Attention(block, dtype=self.dtype, name="self_attn")(
        h, bias=bias, deterministic=deterministic)  # [batch, tokens, hidden]
    h = dropout(h, deterministic=deterministic)
    if cfg.layer_scale_init_value > 0:
      h = h * self.param("lambda_1", nn.with_logical_partitioning(scale_init, ("embed",)),
                         (hidden,), jnp.float32)
    x = x + drop(h, deterministic=deterministic)
    h = layers.layer_norm(cfg.layer_norm_eps, self.dtype, "layernorm_after")(x)
    h = layers.Mlp(block, self.dtype, name="mlp")(h, deterministic=deterministic)
    h = dropout(h, deterministic=deterministic)
    if cfg.layer_scale_init_value > 0:
      h = h * self.param("lambda_2", nn.with_logical_partitioning(scale_init, ("embed",)),
                         (hidden,), jnp.float32)
    return (x + drop(h, deterministic=deterministic)).astype(self.dtype), probs


class BeitModel(nn.Module):
  """transformers.BeitModel: patch embeddings, BEiT layers, HF's output rule and pooler."""

  config: BeitConfig
  add_pooling_layer: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, pixel_values: Array, *, deterministic: bool = True,
               output_hidden_states: bool = False, output_attentions: bool = False) -> ModelOutput:
    """pixel_values [batch, C, H, W] -> last_hidden_state [batch, 1 + patches, hidden]."""
    cfg = self.config
    if cfg.scan_layers:
      raise ConfigError("scan_layers=True is not supported for the beit encoder; set "
                        "scan_layers=False for it (remat works)")
    vit.check_pixel_values(cfg, pixel_values)
    x = BeitEmbeddings(cfg, self.dtype, name="embeddings")(pixel_values, deterministic)
    # x: [batch, 1 + patches, hidden]
    shared = None
    if cfg.use_shared_relative_position_bias:
      shared = RelativePositionBias(cfg, name="relative_position_bias")()
    rates = np.linspace(0.0, cfg.drop_path_rate, cfg.num_hidden_layers)
    # config.remat: each layer under nn.remat (deterministic is static).
    layer = layers.remat_module(BeitLayer, cfg.remat, static_argnums=(3,))
    hidden_states, attentions = [], []
    for i in range(cfg.num_hidden_layers):
      if output_hidden_states:
        hidden_states.append(x)
      x, probs = layer(cfg, float(rates[i]), self.dtype, name=f"layers_{i}")(
          x, shared, deterministic)
      attentions.append(probs)
    if output_hidden_states:
      hidden_states.append(x)
    pooled = None
    if cfg.use_mean_pooling:  # the final LayerNorm is the identity; the pooler norms the mean
      if self.add_pooling_layer:
        pooled = layers.layer_norm(cfg.layer_norm_eps, self.dtype, "pooler_norm")(
            jnp.mean(x[:, 1:], axis=1))  # [batch, hidden]
    else:
      x = layers.layer_norm(cfg.layer_norm_eps, self.dtype, "layernorm")(x)
      pooled = x[:, 0] if self.add_pooling_layer else None
    return ModelOutput(last_hidden_state=x, pooler_output=pooled,
                       hidden_states=tuple(hidden_states) if output_hidden_states else None,
                       attentions=tuple(attentions) if output_attentions else None)


class BeitEmbeddings(nn.Module):
  """Patch projection, [CLS] (+ an unused mask token), optional absolute positions, dropout."""

  config: BeitConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, pixel_values: Array, deterministic: bool) -> Array:
    cfg, std = self.config, self.config.initializer_range
    hidden, batch = cfg.hidden_size, pixel_values.shape[0]
    x = jnp.transpose(pixel_values, (0, 2, 3, 1)).astype(self.dtype)  # NHWC
    x = nn.Conv(hidden, kernel_size=cfg.patch_hw, strides=cfg.patch_hw, padding="VALID",
                dtype=self.dtype, param_dtype=jnp.float32, name="patch_embeddings",
                kernel_init=layers.normal_init(std, (None, None, None, "embed")),
                bias_init=layers.zeros_init(("embed",)))(x)  # [batch, rows, cols, hidden]
    x = x.reshape(batch, -1, hidden)  # row-major patches, as torch's flatten(2)
    token_init = layers.normal_init(std, (None, None, "embed"))
    cls = self.param("cls_token", token_init, (1, 1, hidden), jnp.float32)
    if cfg.use_mask_token:  # masked image modelling only: kept for the checkpoint round trip
      self.param("mask_token", token_init, (1, 1, hidden), jnp.float32)
    x = jnp.concatenate([jnp.broadcast_to(cls, (batch, 1, hidden)).astype(x.dtype), x], axis=1)
    if cfg.use_absolute_position_embeddings:
      x = x + self.param("position_embeddings", layers.normal_init(std, (None, "length", "embed")),
                         (1, cfg.max_positions, hidden), jnp.float32)
    return Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic).astype(self.dtype)


# ----------------------------------------------------------------------------- HF conversion


def encoder_rules(config: BeitConfig, hf: str, flax: str) -> list[convert.Rule]:
  """BeitModel (with its pooler)."""
  h = config.num_attention_heads
  emb = f"{hf}embeddings"
  rules = [rule(f"{emb}.cls_token", f"{flax}embeddings/cls_token", identity()),
           rule(f"{emb}.patch_embeddings.projection.weight",
                f"{flax}embeddings/patch_embeddings/kernel", oihw_to_hwio()),
           rule(f"{emb}.patch_embeddings.projection.bias",
                f"{flax}embeddings/patch_embeddings/bias", identity())]
  if config.use_mask_token:
    rules.append(rule(f"{emb}.mask_token", f"{flax}embeddings/mask_token", identity()))
  if config.use_absolute_position_embeddings:
    rules.append(rule(f"{emb}.position_embeddings", f"{flax}embeddings/position_embeddings",
                      vit.position_embedding_hooks(config)))
  table = "relative_position_bias.relative_position_bias_table"
  if config.use_shared_relative_position_bias:
    rules.append(rule(f"{hf}encoder.{table}", f"{flax}relative_position_bias/"
                      "relative_position_bias_table", relative_table_hooks(config)))
  for i in range(config.num_hidden_layers):
    src, dst = f"{hf}encoder.layer.{i}", f"{flax}layers_{i}"
    rules += convert.attention_rules(f"{src}.attention.attention", f"{src}.attention.output.dense",
                                     f"{dst}/self_attn", h, qkv_bias=(True, False, True))
    if config.use_relative_position_bias:
      rules.append(rule(f"{src}.attention.attention.{table}",
                        f"{dst}/relative_position_bias/relative_position_bias_table",
                        relative_table_hooks(config)))
    rules += norm_rules(f"{src}.layernorm_before", f"{dst}/layernorm_before")
    rules += norm_rules(f"{src}.layernorm_after", f"{dst}/layernorm_after")
    rules += linear_rules(f"{src}.intermediate.dense", f"{dst}/mlp/fc_in")
    rules += linear_rules(f"{src}.output.dense", f"{dst}/mlp/fc_out")
    if config.layer_scale_init_value > 0:
      rules += [rule(f"{src}.lambda_1", f"{dst}/lambda_1", identity()),
                rule(f"{src}.lambda_2", f"{dst}/lambda_2", identity())]
  if config.use_mean_pooling:
    rules += norm_rules(f"{hf}pooler.layernorm", f"{flax}pooler_norm")
  else:
    rules += norm_rules(f"{hf}layernorm", f"{flax}layernorm")
  return rules


def _check_inputs(config: BeitConfig, inputs: dict) -> None:
  if inputs.get("pixel_values") is not None:
    vit.check_pixel_values(config, inputs["pixel_values"])


ARCHITECTURES = (registry.Architecture(
    config_class=BeitConfig, modality=registry.IMAGE, base_model_prefix="beit",
    encoder=BeitModel, encoder_rules=encoder_rules, check_inputs=_check_inputs,
    dummy_inputs=vit.dummy_inputs, fresh_on_warm_start=("pooler.",),
    ignored_hf_keys=(r"(^|\.)relative_position_index$",)),)
