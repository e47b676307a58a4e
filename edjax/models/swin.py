"""Swin and Donut-Swin image encoders (`transformers.SwinModel` / `DonutSwinModel`).

A hierarchical vision transformer: a stride-`patch_size` conv embeds patches (the image padded
right / bottom to a multiple of the patch size, then LayerNorm), then `len(depths)` stages of
pre-LN blocks whose self-attention runs inside non-overlapping `window_size` x `window_size`
windows, with a learned relative position bias per head; every odd block of a stage shifts the
windows by `window_size // 2` (a cyclic roll) and masks the pairs that the roll brought together
(HF's region mask, -100.0). Between stages a patch merging layer concatenates each 2x2
neighbourhood (4C channels), normalises and projects it to 2C, halving the resolution. SwinModel
ends with a LayerNorm and a parameter-free mean pooler; DonutSwinModel (the encoder of Donut) is
the same model without the final LayerNorm.

The encoder width the decoder sees is `hidden_size = embed_dim * 2**(len(depths) - 1)`, as HF
sets it. Attention is the shared `layers.Attention` with its additive `bias=` hook carrying the
relative position bias (+ the shifted-window mask). HF semantics kept on purpose:
  * any image size works: inputs are padded to the patch size, each stage pads to the window and
    crops back; padded tokens are zeros that are attended to (HF does not mask them);
  * a stage whose resolution is at most the window uses one window and no shift
    (`set_shift_and_window_size`); a resolution *below* `window_size` is an error, as in
    transformers (its bias table is sized for `window_size`, so the shapes do not meet);
  * stochastic depth (a linspace over `drop_path_rate`) wraps the attention branch only, and the
    attention output dropout uses `attention_probs_dropout_prob`, as HF's SwinSelfOutput;
  * the embeddings' and patch merging's LayerNorms use torch's default eps 1e-5, the blocks and
    the final norm `layer_norm_eps`.
`use_absolute_embeddings=True`: HF stores `position_embeddings` [1, num_patches + 1, C] but its
forward adds it to num_patches tokens and fails (huggingface/transformers#37161). edjax keeps HF's
tensor (checkpoints convert both ways) and adds rows 1..num_patches, the patch rows of HF's own
`interpolate_pos_encoding` (row 0 is a class-token slot Swin never uses); the image must then be
`image_size`.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from edjax import convert
from edjax.convert import identity, linear, linear_rules, norm_rules, oihw_to_hwio, rule
from edjax.model_configs import ConfigError, HFConfig
from edjax.models import layers, registry, sharding
from edjax.models.outputs import ModelOutput
from edjax.models.dropout import Dropout

Array = jax.Array
TORCH_LAYER_NORM_EPS = 1e-5  # nn.LayerNorm(dim) without eps: the embeddings' and merging's norms
SHIFT_MASK_VALUE = -100.0  # HF fills the shifted-window mask with -100.0, not finfo.min


def _pair(value) -> tuple[int, int]:
  return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


@dataclasses.dataclass(frozen=True)
class _SwinFields(HFConfig):
  """The fields transformers.SwinConfig and DonutSwinConfig share."""

  image_size: int | tuple[int, int] = 224  # or [height, width], as HF accepts
  patch_size: int | tuple[int, int] = 4
  num_channels: int = 3
  embed_dim: int = 96
  depths: tuple[int, ...] = (2, 2, 6, 2)
  num_heads: tuple[int, ...] = (3, 6, 12, 24)
  window_size: int = 7
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  hidden_dropout_prob: float = 0.0
  attention_probs_dropout_prob: float = 0.0
  drop_path_rate: float = 0.1
  hidden_act: str = "gelu"
  use_absolute_embeddings: bool = False
  initializer_range: float = 0.02
  layer_norm_eps: float = 1e-5
  is_decoder: bool = False
  add_cross_attention: bool = False
  extra: tuple = ()

  # SwinModel ends with a LayerNorm; DonutSwinModel has none.
  final_layer_norm: ClassVar[bool] = True
  # Keys HF derives from the fields and writes to config.json: recomputed, never kept stale.
  derived_keys: ClassVar[tuple[str, ...]] = ("hidden_size", "num_layers")

  def __post_init__(self):
    super().__post_init__()
    for name in ("image_size", "patch_size", "depths", "num_heads"):  # JSON lists -> tuples
      value = getattr(self, name)
      if isinstance(value, list):
        object.__setattr__(self, name, tuple(value))
    if len(self.depths) != len(self.num_heads):
      raise ConfigError(f"depths {self.depths} and num_heads {self.num_heads} must have one "
                        "entry per stage")

  @classmethod
  def from_dict(cls, d) -> "_SwinFields":
    return super().from_dict({k: v for k, v in d.items() if k not in cls.derived_keys})

  def to_dict(self) -> dict:
    out = super().to_dict()
    for name in ("depths", "num_heads"):
      out[name] = list(out[name])
    out.update(self._derived())
    return out

  def _derived(self) -> dict:
    return {"hidden_size": self.hidden_size, "num_layers": self.num_layers}

  @property
  def hidden_size(self) -> int:
    """Width of the last stage: what a decoder's cross-attention reads (HF's `hidden_size`)."""
    return int(self.embed_dim * 2 ** (len(self.depths) - 1))

  @property
  def num_layers(self) -> int:
    """Number of stages (HF's `num_layers`)."""
    return len(self.depths)

  @property
  def dropout_rate(self) -> float:
    return self.hidden_dropout_prob

  @property
  def image_hw(self) -> tuple[int, int]:
    """(height, width) of the images the config was made for (any size runs)."""
    return _pair(self.image_size)

  @property
  def patch_hw(self) -> tuple[int, int]:
    return _pair(self.patch_size)

  def stage_dim(self, stage: int) -> int:
    return int(self.embed_dim * 2 ** stage)

  def grid(self, height: int, width: int) -> tuple[int, int]:
    """Patch grid of an image: its size padded up to a multiple of the patch size, divided."""
    (ph, pw) = self.patch_hw
    return -(-height // ph), -(-width // pw)

  def stage_resolutions(self, height: int, width: int) -> list[tuple[int, int]]:
    """(h, w) token grid every stage sees for an image (patch merging pads odd sizes)."""
    h, w = self.grid(height, width)
    out = []
    for _ in self.depths:
      out.append((h, w))
      h, w = (h + 1) // 2, (w + 1) // 2
    return out

  @property
  def num_patches(self) -> int:
    """Tokens of an `image_size` image before the first stage (HF floors, not pads, here)."""
    (h, w), (ph, pw) = self.image_hw, self.patch_hw
    return (h // ph) * (w // pw)

  def drop_path_rates(self) -> list[float]:
    """Stochastic-depth rate of every block in order: torch.linspace(0, drop_path_rate, n)."""
    return np.linspace(0.0, self.drop_path_rate, sum(self.depths), dtype=np.float32).tolist()


@dataclasses.dataclass(frozen=True)
class SwinConfig(_SwinFields):
  """transformers.SwinConfig (the backbone keys out_features / out_indices stay in `extra`)."""

  model_type: ClassVar[str] = "swin"
  encoder_stride: int = 32
  derived_keys: ClassVar[tuple[str, ...]] = ("hidden_size", "num_layers", "stage_names")

  def _derived(self) -> dict:
    stages = ["stem"] + [f"stage{i}" for i in range(1, len(self.depths) + 1)]
    return {**super()._derived(), "stage_names": stages}


@dataclasses.dataclass(frozen=True)
class DonutSwinConfig(_SwinFields):
  """transformers.DonutSwinConfig: Swin's fields; the model has no final LayerNorm."""

  model_type: ClassVar[str] = "donut-swin"
  final_layer_norm: ClassVar[bool] = False


# ----------------------------------------------------------------------------- inputs


def check_pixel_values(config: _SwinFields, pixel_values: Array) -> None:
  """Raises a ValueError naming the problem when pixel_values does not fit the config."""
  shape = tuple(np.shape(pixel_values))
  if len(shape) != 4:
    raise ValueError(f"pixel_values must be [batch, channels, height, width] (NCHW, as HF); "
                     f"got shape {shape} (rank {len(shape)})")
  if shape[1] != config.num_channels:
    hint = (" (it looks channels-last: transpose it to NCHW)"
            if shape[-1] == config.num_channels else "")
    raise ValueError(f"pixel_values has {shape[1]} channels in dim 1; the {config.model_type} "
                     f"config expects num_channels={config.num_channels}{hint}; got shape {shape}")
  height, width = shape[2:]
  (ph, pw), (h0, w0) = config.patch_hw, config.image_hw
  if config.use_absolute_embeddings and config.grid(height, width) != (h0 // ph, w0 // pw):
    raise ValueError(f"pixel_values image size {height}x{width} (height x width) does not match "
                     f"the {config.model_type} config's image_size "
                     f"{config.image_hw[0]}x{config.image_hw[1]}, which its absolute position "
                     "embeddings need; resize the images (interpolation is not supported)")
  for stage, (h, w) in enumerate(config.stage_resolutions(height, width)):
    if min(h, w) < config.window_size:
      raise ValueError(
          f"pixel_values image size {height}x{width} gives stage {stage} a {h}x{w} token grid, "
          f"smaller than window_size={config.window_size}; transformers' {config.model_type} "
          "cannot run it either (its relative position bias is sized for window_size): use "
          "larger images or fewer stages")


def _check_inputs(config: _SwinFields, inputs: dict) -> None:
  if inputs.get("pixel_values") is not None:
    check_pixel_values(config, inputs["pixel_values"])


def dummy_inputs(config: _SwinFields, batch: int = 1) -> dict:
  """Images that trace the encoder's shapes at init.

  The params do not depend on the image size (absolute embeddings aside: those need
  `image_size`), so this is the smallest image every stage runs on, one window per stage at the
  end: cheap to trace, and valid even when `image_size` itself is below the window.
  """
  hw = config.image_hw
  if not config.use_absolute_embeddings:
    scale = config.window_size * 2 ** (len(config.depths) - 1)
    hw = tuple(p * scale for p in config.patch_hw)
  return {"pixel_values": np.zeros((batch, config.num_channels, *hw), np.float32)}


# ----------------------------------------------------------------------------- windows


def window_partition(x: Array, window: int) -> Array:
  """[batch, H, W, C] -> [batch * H/window * W/window, window*window, C] (row-major windows)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // window, window, w // window, window, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(-1, window * window, c)


def window_reverse(windows: Array, window: int, height: int, width: int) -> Array:
  """[batch * windows, window*window, C] -> [batch, height, width, C]."""
  c = windows.shape[-1]
  x = windows.reshape(-1, height // window, width // window, window, window, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


def relative_position_index(window: int) -> np.ndarray:
  """[window², window²] int64: row of the bias table for each (query, key) pair of a window
  (HF's `relative_position_index` buffer)."""
  coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij")).reshape(2, -1)
  rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (window - 1)  # [q, k, 2]
  return (rel[..., 0] * (2 * window - 1) + rel[..., 1]).astype(np.int64)


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> np.ndarray:
  """[windows, window², window²] float32: -100.0 between tokens of different regions.

  After the cyclic shift a window at the border holds tokens from up to 4 image regions that were
  not neighbours; HF labels 3x3 regions of the (padded) grid and masks cross-region pairs.
  """
  regions = np.zeros((height, width), np.float32)
  slices = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
  count = 0
  for hs in slices:
    for ws in slices:
      regions[hs, ws] = count
      count += 1
  labels = regions.reshape(height // window, window, width // window, window)
  labels = labels.transpose(0, 2, 1, 3).reshape(-1, window * window)  # [windows, window²]
  diff = labels[:, None, :] - labels[:, :, None]
  return np.where(diff != 0, SHIFT_MASK_VALUE, 0.0).astype(np.float32)


# ----------------------------------------------------------------------------- modules


def block_config(config: _SwinFields, stage: int) -> layers.BlockConfig:
  dim = config.stage_dim(stage)
  return layers.BlockConfig(
      hidden_size=dim, num_heads=config.num_heads[stage],
      intermediate_size=int(config.mlp_ratio * dim), activation=config.hidden_act,
      layer_norm_eps=config.layer_norm_eps, pre_layer_norm=True,
      dropout_rate=config.hidden_dropout_prob,
      attention_dropout_rate=config.attention_probs_dropout_prob,
      init_std=config.initializer_range, qkv_bias=(config.qkv_bias,) * 3, **layers.runtime_options(config))


class DropPath(nn.Module):
  """Stochastic depth: drops the whole branch of a sample with probability `rate` (training).

  A scanned stage passes each block's rate at call time (`rate`, a traced scalar); the static
  `rate` then only says whether the stage drops paths at all (0.0: never, the branch is kept)."""

  rate: float

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True, rate: Array | None = None) -> Array:
    if deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - (self.rate if rate is None else rate)
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, 0.0).astype(x.dtype)


class SwinEmbeddings(nn.Module):
  """Patch conv (input padded to the patch size), LayerNorm, optional absolute positions."""

  config: _SwinFields
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    cfg, std = self.config, self.config.initializer_range
    p = cfg.patch_hw
    self.patch_embeddings = nn.Conv(
        cfg.embed_dim, kernel_size=p, strides=p, padding="VALID", dtype=self.dtype,
        param_dtype=jnp.float32,
        kernel_init=layers.normal_init(std, (None, None, None, "embed")),  # HWIO
        bias_init=layers.zeros_init(("embed",)))
    self.norm = layers.layer_norm(TORCH_LAYER_NORM_EPS, self.dtype)
    if cfg.use_absolute_embeddings:  # HF's shape: one unused row first (see the module doc)
      self.position_embeddings = self.param(
          "position_embeddings", layers.zeros_init((None, "length", "embed")),
          (1, cfg.num_patches + 1, cfg.embed_dim), jnp.float32)
    self.dropout = Dropout(cfg.hidden_dropout_prob)

  def __call__(self, pixel_values: Array, deterministic: bool = True) -> tuple[Array, tuple]:
    """pixel_values [batch, C, H, W] -> ([batch, h*w, embed_dim], (h, w) patch grid)."""
    (ph, pw) = self.config.patch_hw
    x = jnp.transpose(pixel_values, (0, 2, 3, 1)).astype(self.dtype)  # [batch, H, W, C]
    height, width = x.shape[1:3]
    x = jnp.pad(x, ((0, 0), (0, -height % ph), (0, -width % pw), (0, 0)))  # right / bottom
    x = self.patch_embeddings(x)  # [batch, h, w, embed_dim]
    batch, h, w, dim = x.shape
    x = self.norm(x.reshape(batch, h * w, dim))  # row-major patches, as torch's flatten(2)
    if self.config.use_absolute_embeddings:
      x = x + self.position_embeddings[:, 1:]
    return self.dropout(x, deterministic=deterministic).astype(self.dtype), (h, w)


class SwinLayer(nn.Module):
  """One block: LN -> (shifted) window attention -> residual; LN -> MLP -> residual."""

  config: _SwinFields
  stage: int
  shift_size: int = 0
  drop_path_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    cfg, block = self.config, block_config(self.config, self.stage)
    ws = cfg.window_size
    self.layernorm_before = layers.layer_norm(cfg.layer_norm_eps, self.dtype)
    self.attention = layers.Attention(block, dtype=self.dtype)
    self.relative_position_bias_table = self.param(
        "relative_position_bias_table", layers.zeros_init((None, "heads")),
        ((2 * ws - 1) ** 2, block.num_heads), jnp.float32)
    self.attention_dropout = Dropout(cfg.attention_probs_dropout_prob)  # HF SwinSelfOutput
    self.drop_path = DropPath(self.drop_path_rate)
    self.layernorm_after = layers.layer_norm(cfg.layer_norm_eps, self.dtype)
    self.mlp = layers.Mlp(block, self.dtype)
    self.output_dropout = Dropout(cfg.hidden_dropout_prob)  # HF SwinOutput

  def window_and_shift(self, h: int, w: int) -> tuple[int, int]:
    """HF's `set_shift_and_window_size`: a grid at most one window wide is one unshifted window."""
    window, shift = self.config.window_size, self.shift_size
    if min(h, w) <= window:
      window, shift = min(h, w), 0
    if window != self.config.window_size:
      raise ValueError(f"a {h}x{w} token grid is smaller than window_size="
                       f"{self.config.window_size}; use larger images (see check_pixel_values)")
    return window, shift

  def attention_bias(self, batch: int, height: int, width: int, window: int,
                     shift: int) -> Array:
    """[1 or batch*windows, heads, window², window²]: relative position bias (+ shift mask)."""
    index = relative_position_index(window).reshape(-1)
    bias = self.relative_position_bias_table[index]  # [window²*window², heads]
    bias = bias.reshape(window * window, window * window, -1).transpose(2, 0, 1)[None]
    if shift:
      mask = jnp.asarray(shifted_window_mask(height, width, window, shift))  # [windows, q, k]
      bias = jnp.tile(bias + mask[:, None], (batch, 1, 1, 1))  # windows are batch-major
    return bias

  def __call__(self, x: Array, dims: tuple[int, int], deterministic: bool = True,
               drop_path_rate: Array | None = None):
    """x [batch, h*w, dim] on a (h, w) grid -> (x, attention probs [batch*windows, heads, q, k]).

    drop_path_rate: this block's stochastic-depth rate when a scanned stage passes it (traced)."""
    h, w = dims
    window, shift = self.window_and_shift(h, w)
    batch, _, dim = x.shape
    shortcut = x
    x = self.layernorm_before(x).astype(self.dtype).reshape(batch, h, w, dim)
    x = jnp.pad(x, ((0, 0), (0, -h % window), (0, -w % window), (0, 0)))  # zeros, attended
    hp, wp = x.shape[1:3]
    if shift:
      x = jnp.roll(x, (-shift, -shift), axis=(1, 2))
    windows = window_partition(x, window)  # [batch*windows, window², dim]
    out, probs = self.attention(windows, bias=self.attention_bias(batch, hp, wp, window, shift),
                                deterministic=deterministic)
    out = self.attention_dropout(out, deterministic=deterministic)
    x = window_reverse(out, window, hp, wp)  # [batch, hp, wp, dim]
    if shift:
      x = jnp.roll(x, (shift, shift), axis=(1, 2))
    x = x[:, :h, :w].reshape(batch, h * w, dim)
    x = shortcut + self.drop_path(x, deterministic, drop_path_rate)  # attention branch only
    y = self.mlp(self.layernorm_after(x).astype(self.dtype), deterministic=deterministic)
    return x + self.output_dropout(y, deterministic=deterministic), probs


class SwinPatchMerging(nn.Module):
  """2x2 neighbourhoods -> 4C channels (HF's order) -> LayerNorm(4C) -> bias-free Linear to 2C."""

  dim: int
  init_std: float = 0.02
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.norm = layers.layer_norm(TORCH_LAYER_NORM_EPS, self.dtype)
    self.reduction = layers.dense(2 * self.dim, (None, "embed"), self.init_std, self.dtype,
                                  use_bias=False)

  def __call__(self, x: Array, dims: tuple[int, int]) -> Array:
    """x [batch, h*w, C] -> [batch, ceil(h/2)*ceil(w/2), 2C] (odd sizes padded with zeros)."""
    h, w = dims
    batch, _, c = x.shape
    x = jnp.pad(x.reshape(batch, h, w, c), ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    x = jnp.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]],
                        axis=-1)  # [batch, h/2, w/2, 4C]
    x = x.reshape(batch, -1, 4 * c)
    return self.reduction(self.norm(x).astype(self.dtype))


class SwinBlockPair(nn.Module):
  """Two consecutive blocks of a stage, unshifted (`even`) then shifted (`odd`): the body a
  scanned stage (scan_layers) repeats depth / 2 times, its params stacked on a leading axis."""

  config: _SwinFields
  stage: int
  drop_path_rate: float  # the stage's largest rate: 0.0 = no stochastic depth in this stage
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    cfg = self.config
    self.even = SwinLayer(cfg, self.stage, 0, self.drop_path_rate, self.dtype)
    self.odd = SwinLayer(cfg, self.stage, cfg.window_size // 2, self.drop_path_rate, self.dtype)

  def __call__(self, x: Array, rates: Array, dims: tuple[int, int], deterministic: bool,
               want_attentions: bool):
    """(x [batch, h*w, C], this pair's drop-path rates [2]) -> (x, odd block's probs | None)."""
    carry_dtype = x.dtype  # a scan carry keeps one dtype
    x = sharding.constrain_batch(x)  # the scan carry stays batch-sharded (GSPMD loses it here)
    x, _ = self.even(x, dims, deterministic, rates[0])
    y, probs = self.odd(x, dims, deterministic, rates[1])
    return sharding.constrain_batch(y.astype(carry_dtype)), probs if want_attentions else None


def scanned_block_pairs(config: _SwinFields, stage: int, drop_path_rate: float,
                        dtype: jnp.dtype) -> nn.Module:
  """SwinBlockPair (remat'ed as config.remat says) under nn.scan over depths[stage] / 2 pairs.

  A scan over pairs, not blocks, keeps each block's shift static (a roll and a region mask of
  its own), so a scanned stage runs exactly the unscanned stage's computation. Params get a
  leading `layers` axis; `edjax.models.stacking` maps blocks_{2k} / blocks_{2k+1} to row k of
  block_pairs/even / odd. Inside the scan, remat's recomputation of a pair happens in that
  pair's backward iteration, whatever the compiler's scheduler does.
  """
  step = layers.remat_module(SwinBlockPair, config.remat, static_argnums=(3, 4, 5),
                             prevent_cse=False)
  scanned = nn.scan(step, variable_axes={"params": 0},
                    split_rngs={"params": True, "dropout": True},
                    in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast),
                    length=config.depths[stage] // 2,
                    metadata_params={nn.PARTITION_NAME: "layers"})
  return scanned(config, stage, drop_path_rate, dtype)


class SwinStage(nn.Module):
  """`depths[stage]` blocks (odd ones shifted), then patch merging unless it is the last stage.

  config.scan_layers: the blocks run as a scan over pairs (`scanned_block_pairs`), which needs
  an even depth (every published Swin / Donut / Nougat config has one)."""

  config: _SwinFields
  stage: int
  drop_path_rates: tuple[float, ...]
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    cfg = self.config
    if cfg.scan_layers:
      if cfg.depths[self.stage] % 2:
        raise ConfigError(f"scan_layers=True scans a {cfg.model_type} stage in (unshifted, "
                          f"shifted) block pairs, but depths[{self.stage}] = "
                          f"{cfg.depths[self.stage]} is odd; set scan_layers=False for it "
                          "(remat works)")
      self.block_pairs = scanned_block_pairs(cfg, self.stage, max(self.drop_path_rates),
                                             self.dtype)
    else:
      # config.remat: each block under nn.remat (dims and deterministic are static).
      block = layers.remat_module(SwinLayer, cfg.remat, static_argnums=(2, 3))
      self.blocks = [block(cfg, self.stage, 0 if i % 2 == 0 else cfg.window_size // 2,
                           rate, self.dtype) for i, rate in enumerate(self.drop_path_rates)]
    if self.stage < len(cfg.depths) - 1:
      self.downsample = SwinPatchMerging(cfg.stage_dim(self.stage), cfg.initializer_range,
                                         self.dtype)

  def __call__(self, x: Array, dims: tuple[int, int], deterministic: bool = True,
               want_attentions: bool = False):
    """x [batch, h*w, C] -> (x [batch, h'*w', C'], (h', w'), last block's attention probs
    [batch*windows, heads, q, k] | None)."""
    if self.config.scan_layers:
      rates = jnp.asarray(self.drop_path_rates, jnp.float32).reshape(-1, 2)  # [pairs, 2]
      x, probs = self.block_pairs(x, rates, dims, deterministic, want_attentions)
      probs = probs[-1] if want_attentions else None  # [pairs, ...] -> the last pair's
    else:
      probs = None
      for block in self.blocks:
        x, probs = block(x, dims, deterministic)
    if self.stage < len(self.config.depths) - 1:
      x = self.downsample(x, dims)
      dims = ((dims[0] + 1) // 2, (dims[1] + 1) // 2)
    return x, dims, probs if want_attentions else None


class SwinEncoder(nn.Module):
  """The stages, named layers_0 ... (HF `encoder.layers.{i}`)."""

  config: _SwinFields
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    cfg, rates = self.config, self.config.drop_path_rates()
    starts = np.cumsum((0,) + tuple(cfg.depths))
    self.layers = [SwinStage(cfg, i, tuple(rates[starts[i]:starts[i + 1]]), self.dtype)
                   for i in range(len(cfg.depths))]

  def __call__(self, x: Array, dims: tuple[int, int], deterministic: bool = True,
               output_hidden_states: bool = False, output_attentions: bool = False):
    """x [batch, h*w, embed_dim] -> (x [batch, tokens, hidden_size], hidden_states | None,
    attentions | None). hidden_states: the embeddings and every stage's output (after its
    merging), as HF; attentions: per stage, the last block's [batch*windows, heads, q, k]."""
    hidden_states, attentions = [x], []
    for stage in self.layers:
      x, dims, probs = stage(x, dims, deterministic, output_attentions)
      hidden_states.append(x)
      attentions.append(probs)
    return (x, tuple(hidden_states) if output_hidden_states else None,
            tuple(attentions) if output_attentions else None)


class SwinModel(nn.Module):
  """transformers.SwinModel / DonutSwinModel (chosen by `config.final_layer_norm`)."""

  config: _SwinFields
  add_pooling_layer: bool = True
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    cfg = self.config
    self.embeddings = SwinEmbeddings(cfg, self.dtype)
    self.encoder = SwinEncoder(cfg, self.dtype)
    if cfg.final_layer_norm:
      self.layernorm = layers.layer_norm(cfg.layer_norm_eps, self.dtype)

  def __call__(self, pixel_values: Array, *, deterministic: bool = True,
               output_hidden_states: bool = False, output_attentions: bool = False) -> ModelOutput:
    """pixel_values [batch, C, H, W] float -> last_hidden_state [batch, tokens, hidden_size]
    (tokens = the last stage's grid) and pooler_output [batch, hidden_size] (token mean)."""
    check_pixel_values(self.config, pixel_values)
    x, dims = self.embeddings(pixel_values, deterministic)  # [batch, h*w, embed_dim]
    x, hidden_states, attentions = self.encoder(
        x, dims, deterministic, output_hidden_states, output_attentions)
    if self.config.final_layer_norm:
      x = self.layernorm(x).astype(self.dtype)
    pooled = jnp.mean(x, axis=1) if self.add_pooling_layer else None  # AdaptiveAvgPool1d(1)
    return ModelOutput(last_hidden_state=x, pooler_output=pooled, hidden_states=hidden_states,
                       attentions=attentions)


# ----------------------------------------------------------------------------- HF conversion


def _blocks(config: _SwinFields):
  """(stage, block, HF block name, param path) below `encoder.`."""
  for i, depth in enumerate(config.depths):
    for j in range(depth):
      yield i, j, f"encoder.layers.{i}.blocks.{j}", f"encoder/layers_{i}/blocks_{j}"


def encoder_rules(config: _SwinFields, hf: str, flax: str) -> list[convert.Rule]:
  """SwinModel / DonutSwinModel (the pooler has no parameters)."""
  emb = f"{hf}embeddings"
  rules = [rule(f"{emb}.patch_embeddings.projection.weight",
                f"{flax}embeddings/patch_embeddings/kernel", oihw_to_hwio()),
           rule(f"{emb}.patch_embeddings.projection.bias",
                f"{flax}embeddings/patch_embeddings/bias", identity())]
  rules += norm_rules(f"{emb}.norm", f"{flax}embeddings/norm")
  if config.use_absolute_embeddings:
    rules.append(rule(f"{emb}.position_embeddings", f"{flax}embeddings/position_embeddings",
                      identity()))
  for stage, _, src, dst in _blocks(config):
    src, dst = hf + src, flax + dst
    rules += norm_rules(f"{src}.layernorm_before", f"{dst}/layernorm_before")
    rules += convert.attention_rules(f"{src}.attention.self", f"{src}.attention.output.dense",
                                     f"{dst}/attention", config.num_heads[stage],
                                     qkv_bias=(config.qkv_bias,) * 3)
    rules.append(rule(f"{src}.attention.self.relative_position_bias_table",
                      f"{dst}/relative_position_bias_table", identity()))
    rules += norm_rules(f"{src}.layernorm_after", f"{dst}/layernorm_after")
    rules += linear_rules(f"{src}.intermediate.dense", f"{dst}/mlp/fc_in")
    rules += linear_rules(f"{src}.output.dense", f"{dst}/mlp/fc_out")
  for i in range(len(config.depths) - 1):
    src, dst = f"{hf}encoder.layers.{i}.downsample", f"{flax}encoder/layers_{i}/downsample"
    rules += norm_rules(f"{src}.norm", f"{dst}/norm")
    rules.append(rule(f"{src}.reduction.weight", f"{dst}/reduction/kernel", linear()))
  if config.final_layer_norm:
    rules += norm_rules(f"{hf}layernorm", f"{flax}layernorm")
  return rules


def hf_buffers(config: _SwinFields) -> dict[str, np.ndarray]:
  """Every block's persistent `relative_position_index` buffer (derived from window_size)."""
  index = relative_position_index(config.window_size)
  return {f"{src}.attention.self.relative_position_index": index
          for _, _, src, _ in _blocks(config)}


def _architecture(config_class: type, prefix: str) -> registry.Architecture:
  return registry.Architecture(
      config_class=config_class, modality=registry.IMAGE, base_model_prefix=prefix,
      encoder=SwinModel, encoder_rules=encoder_rules, check_inputs=_check_inputs,
      dummy_inputs=dummy_inputs, hf_buffers=hf_buffers,
      ignored_hf_keys=(r"(^|\.)relative_position_index$",))


ARCHITECTURES = (_architecture(SwinConfig, "swin"), _architecture(DonutSwinConfig, "donut"))
