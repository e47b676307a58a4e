"""Image preprocessing equal to transformers' ViT / DeiT / Donut image processors (slow, PIL).

    processor = ImageProcessor.from_dir("/path/to/vit")       # reads preprocessor_config.json
    pixel_values = processor([pil_image, uint8_array])        # float32 [batch, 3, height, width]
    ds = ds.map(lambda ex: processor.tf_preprocess(ex["image"]))  # float32 [3, height, width]

Steps, in transformers' order (`ViTImageProcessor.preprocess`, `DeiTImageProcessor.preprocess`):

1. RGB. Every image becomes 3-channel uint8: a PIL image of another mode goes through
   `image.convert("RGB")`, a [height, width] or [height, width, 1] array is repeated over 3
   channels and an RGBA array loses its alpha channel (both equal to PIL's convert("RGB")).
   transformers converts only when `do_convert_rgb` is true (ViT) and otherwise fails on such
   images (wrong channel count for image_mean); here the conversion always runs (the models take
   3 channels), so outputs are equal wherever transformers gives one.
2. Resize (`do_resize`): PIL `Image.resize((width, height), resample)`, exactly as
   `transformers.image_transforms.resize` does for uint8 images.
3. Center crop (`do_center_crop`, DeiT only): `image_transforms.center_crop`, including its zero
   padding (in uint8, before rescaling) of images smaller than crop_size.
4. Rescale (`do_rescale`): float64 image * rescale_factor, cast to float32.
5. Normalize (`do_normalize`): (image - mean) / std in float32.
6. Channels first: [3, height, width].

DonutImageProcessor (`DonutImageProcessor.preprocess`) replaces steps 2-3 by its own, keeping the
aspect ratio of documents and text lines; `size` is the canvas {"height", "width"}:

2a. Align long axis (`do_align_long_axis`, default off): rotate by 90 degrees clockwise
    (`np.rot90(image, 3)`) when the image's long axis is not the canvas's.
2b. Resize (`do_resize`): the shortest edge to min(size) with PIL (`resample`, default bilinear),
    the long edge to int(min(size) * long / short) (`get_resize_output_image_size`).
2c. Thumbnail (`do_thumbnail`): shrink (never grow) to fit inside size, keeping the aspect ratio
    (int() of the scaled edge), with PIL bicubic and reducing_gap=2.0, as transformers does.
2d. Pad (`do_pad`): zeros around the image up to size, centred (delta // 2 on top / left;
    transformers' random_padding=False, the inference setting). An image still larger than size
    (do_thumbnail off) is an error here, as it is in transformers' pad.
A list `size` is (width, height) for this type, as transformers reverses it (Donut's original
input_size order); the other types read a list as (height, width).

Inputs are uint8 [height, width, channels] images (channels 1, 3 or 4, or a 2-D gray image), PIL
images, or lists / 4-D arrays of them. Integer arrays of another dtype are accepted when their
values lie in [0, 255]. Float arrays are rejected: transformers treats floats in [0, 1] as
already rescaled for the PIL resize but then rescales them by rescale_factor again (warning
"It looks like you are trying to rescale already rescaled images"), which is never what a caller
wants; convert with `(np.clip(x, 0, 1) * 255).round().astype(np.uint8)` instead.

The tf.data path (`tf_preprocess`) gives the same numbers (tests: max abs difference 0 against
transformers). Its resize calls the same PIL resize through `tf.numpy_function`, because
`tf.image.resize` is not PIL (other filters and sampling positions: README has the measured
differences). Crop, rescale, normalisation and the transposition are TensorFlow ops. For
DonutImageProcessor the whole geometry (2a-2d) runs through one `tf.numpy_function`.
JPEG decoding: `tf_decode_image` decodes with dct_method="INTEGER_ACCURATE", which equals PIL's
decoder (tests); TensorFlow's default (INTEGER_FAST) does not.

Configs: `image_processor_type` "ViTImageProcessor" / "DeiTImageProcessor" /
"DonutImageProcessor" (their "...Fast" names
are read as the slow processor, like `AutoImageProcessor.from_pretrained(path, use_fast=False)`),
or the legacy `feature_extractor_type` "ViTFeatureExtractor" / "DeiTFeatureExtractor". Missing
keys take transformers' defaults for the type; unknown keys are kept for `to_dict` / `save`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping

import numpy as np
import PIL.Image

from edjax import fileio

CONFIG_NAME = "preprocessor_config.json"
IMAGENET_STANDARD_MEAN = (0.5, 0.5, 0.5)
IMAGENET_STANDARD_STD = (0.5, 0.5, 0.5)
RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box",
                  5: "hamming"}

# image_processor_type -> the processor whose semantics (and defaults) apply.
_TYPES = {"ViTImageProcessor": "vit", "ViTImageProcessorFast": "vit",
          "DeiTImageProcessor": "deit", "DeiTImageProcessorFast": "deit",
          "DonutImageProcessor": "donut", "DonutImageProcessorFast": "donut"}
_LEGACY_TYPES = {"ViTFeatureExtractor": "ViTImageProcessor",
                 "DeiTFeatureExtractor": "DeiTImageProcessor"}
# The keys each processor's __init__ takes, with transformers' defaults (4.57).
_DEFAULTS = {
    "vit": dict(do_resize=True, size={"height": 224, "width": 224}, resample=2, do_rescale=True,
                rescale_factor=1 / 255, do_normalize=True, image_mean=list(IMAGENET_STANDARD_MEAN),
                image_std=list(IMAGENET_STANDARD_STD), do_convert_rgb=None),
    "deit": dict(do_resize=True, size={"height": 256, "width": 256}, resample=3,
                 do_center_crop=True, crop_size={"height": 224, "width": 224}, do_rescale=True,
                 rescale_factor=1 / 255, do_normalize=True, image_mean=list(IMAGENET_STANDARD_MEAN),
                 image_std=list(IMAGENET_STANDARD_STD)),
    "donut": dict(do_resize=True, size={"height": 2560, "width": 1920}, resample=2,
                  do_thumbnail=True, do_align_long_axis=False, do_pad=True, do_rescale=True,
                  rescale_factor=1 / 255, do_normalize=True, image_mean=list(IMAGENET_STANDARD_MEAN),
                  image_std=list(IMAGENET_STANDARD_STD)),
}
# model_type (config.json) -> image_processor_type, as transformers' AutoImageProcessor maps them.
MODEL_TYPES = {"vit": "ViTImageProcessor", "vit_mae": "ViTImageProcessor",
               "vit_msn": "ViTImageProcessor", "swin": "ViTImageProcessor",
               "swinv2": "ViTImageProcessor", "deit": "DeiTImageProcessor",
               "donut-swin": "DonutImageProcessor"}


def _size_dict(value, name: str) -> dict[str, int]:
  """transformers' `get_size_dict` for these processors: an int means a square, a pair is
  (height, width); anything but {"height", "width"} is rejected (their resize / center_crop
  raise for {"shortest_edge"} too)."""
  if isinstance(value, bool):
    raise ValueError(f"{name} must be {{'height': h, 'width': w}}, an int or [h, w]; got {value!r}")
  if isinstance(value, (int, np.integer)):
    value = {"height": int(value), "width": int(value)}
  elif isinstance(value, (list, tuple)) and len(value) == 2:
    value = {"height": value[0], "width": value[1]}
  if not isinstance(value, Mapping) or set(value) != {"height", "width"}:
    hint = (" (transformers' ViT / DeiT processors cannot resize to a shortest edge either: give "
            "{'height': h, 'width': w})" if isinstance(value, Mapping) and "shortest_edge" in value
            else "")
    raise ValueError(f"{name} must be {{'height': h, 'width': w}}, an int or [h, w]; got "
                     f"{value!r}{hint}")
  out = {}
  for key in ("height", "width"):
    v = value[key]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
      raise ValueError(f"{name}[{key!r}] must be a positive int, got {v!r}")
    out[key] = int(v)
  return out


def _channel_values(value, name: str) -> np.ndarray:
  """image_mean / image_std: a number or 3 numbers -> float32 [3]."""
  arr = np.asarray(value, dtype=np.float64)
  if arr.ndim == 0:
    arr = np.full(3, float(arr))
  if arr.shape != (3,) or not np.all(np.isfinite(arr)):
    raise ValueError(f"{name} must be a number or 3 numbers (R, G, B), got {value!r}")
  return arr.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class ImageProcessor:
  """A ViTImageProcessor / DeiTImageProcessor config and its preprocessing (numpy and tf.data).

  Fields keep transformers' names and values: size / crop_size are {"height", "width"} dicts,
  resample a PIL code (0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming),
  image_mean / image_std a number or 3 numbers. `extra` holds the config's other keys verbatim.
  Build with `from_dir`, `from_dict` or `for_image_size` (direct construction takes the same
  fields; defaults are the ViTImageProcessor ones).
  """
  image_processor_type: str = "ViTImageProcessor"
  do_resize: bool = True
  size: Mapping[str, int] = dataclasses.field(
      default_factory=lambda: {"height": 224, "width": 224})
  resample: int = 2
  do_center_crop: bool = False
  crop_size: Mapping[str, int] | None = None
  do_rescale: bool = True
  rescale_factor: float = 1 / 255
  do_normalize: bool = True
  image_mean: Any = IMAGENET_STANDARD_MEAN
  image_std: Any = IMAGENET_STANDARD_STD
  do_convert_rgb: bool | None = None
  do_thumbnail: bool = True  # DonutImageProcessor only (as are the next two)
  do_align_long_axis: bool = False
  do_pad: bool = True
  extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.image_processor_type not in _TYPES:
      raise ValueError(f"unsupported image_processor_type {self.image_processor_type!r}: edjax "
                       f"implements {sorted(_TYPES)} (and the legacy feature_extractor_type "
                       f"{sorted(_LEGACY_TYPES)})")
    for name in ("do_resize", "do_center_crop", "do_rescale", "do_normalize", "do_thumbnail",
                 "do_align_long_axis", "do_pad"):
      if not isinstance(getattr(self, name), (bool, np.bool_)):
        raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
    if self.do_convert_rgb is not None and not isinstance(self.do_convert_rgb, (bool, np.bool_)):
      raise ValueError(f"do_convert_rgb must be true, false or null, got {self.do_convert_rgb!r}")
    object.__setattr__(self, "size", _size_dict(self.size, "size"))
    if self.crop_size is not None:
      object.__setattr__(self, "crop_size", _size_dict(self.crop_size, "crop_size"))
    if self.kind == "deit" and self.do_center_crop and self.crop_size is None:
      raise ValueError("do_center_crop is true but crop_size is missing: give crop_size "
                       "{'height': h, 'width': w}")
    if (isinstance(self.resample, bool) or not isinstance(self.resample, (int, np.integer))
        or int(self.resample) not in RESAMPLE_NAMES):
      raise ValueError(f"resample must be a PIL filter code {RESAMPLE_NAMES}, got "
                       f"{self.resample!r}")
    object.__setattr__(self, "resample", int(self.resample))
    if (isinstance(self.rescale_factor, bool) or not isinstance(self.rescale_factor, (int, float))
        or not math.isfinite(self.rescale_factor)):
      raise ValueError(f"rescale_factor must be a finite number, got {self.rescale_factor!r}")
    _channel_values(self.image_mean, "image_mean")
    if np.any(_channel_values(self.image_std, "image_std") == 0):
      raise ValueError(f"image_std must not contain 0, got {self.image_std!r}")
    object.__setattr__(self, "extra", dict(self.extra))

  def __hash__(self):  # size / extra are dicts: hash the config's JSON form
    return hash(json.dumps(self.to_dict(), sort_keys=True, default=str))

  # --------------------------------------------------------------------------- construction

  @property
  def kind(self) -> str:
    """'vit', 'deit' or 'donut': whose preprocessing (and to_dict keys) apply."""
    return _TYPES[self.image_processor_type]

  @classmethod
  def from_dict(cls, config: Mapping[str, Any]) -> "ImageProcessor":
    """From a preprocessor_config.json dict; missing keys take the type's transformers defaults."""
    config = dict(config)
    legacy = config.pop("feature_extractor_type", None)  # transformers drops it too
    type_name = config.pop("image_processor_type", None)
    if type_name is None:
      if legacy is None:
        raise ValueError("the preprocessor config names neither image_processor_type nor "
                         "feature_extractor_type: add \"image_processor_type\": "
                         "\"ViTImageProcessor\" (or \"DeiTImageProcessor\") to it")
      if legacy not in _LEGACY_TYPES:
        raise ValueError(f"unsupported feature_extractor_type {legacy!r}: edjax implements "
                         f"{sorted(_LEGACY_TYPES)} and image_processor_type {sorted(_TYPES)}")
      type_name = _LEGACY_TYPES[legacy]
    if type_name not in _TYPES:
      raise ValueError(f"unsupported image_processor_type {type_name!r}: edjax implements "
                       f"{sorted(_TYPES)} (and the legacy feature_extractor_type "
                       f"{sorted(_LEGACY_TYPES)})")
    defaults = _DEFAULTS[_TYPES[type_name]]
    # The type's own keys; the others (DeiT's do_convert_rgb, ViT's crop keys, processor_class,
    # ...) stay in `extra`, unused, as transformers keeps them as plain attributes.
    values = {**defaults, **{k: config.pop(k) for k in list(config) if k in defaults}}
    if _TYPES[type_name] == "donut" and isinstance(values["size"], (list, tuple)):
      values["size"] = list(values["size"])[::-1]  # transformers: a list is (width, height)
    for key in ("size", "crop_size", "image_mean", "image_std"):  # null: the __init__ default
      if key in values and values[key] is None:
        values[key] = defaults[key]
    if values["resample"] is None:  # transformers' resize() falls back to bilinear
      values["resample"] = 2
    if "do_center_crop" not in defaults:  # ViT has no center crop
      values["do_center_crop"] = False
    return cls(image_processor_type=type_name, extra=config, **values)

  @classmethod
  def from_dir(cls, path: str) -> "ImageProcessor":
    """From `path`/preprocessor_config.json (or `path` itself when it is that file)."""
    file = path if os.path.isfile(path) else os.path.join(path, CONFIG_NAME)
    if not os.path.isfile(file):
      raise FileNotFoundError(f"no {CONFIG_NAME} in {path}: save one with transformers' "
                              "image_processor.save_pretrained(path) or ImageProcessor.save(path), "
                              "or build one with ImageProcessor.for_image_size(height, width)")
    with open(file, encoding="utf-8") as f:
      try:
        config = json.load(f)
      except json.JSONDecodeError as e:
        raise ValueError(f"{file} is not valid JSON: {e}") from e
    if not isinstance(config, dict):
      raise ValueError(f"{file} must hold a JSON object, got {type(config).__name__}")
    return cls.from_dict(config)

  @classmethod
  def for_image_size(cls, height: int, width: int, model_type: str = "vit") -> "ImageProcessor":
    """The transformers default processor of `model_type` for an encoder with no preprocessor file.

    ViT-family types (vit, vit_mae, vit_msn, swin, swinv2): ViTImageProcessor defaults (bilinear
    resize to height x width, mean = std = 0.5). deit: DeiTImageProcessor defaults scaled to the
    size, i.e. bicubic resize to (height * 256 // 224, width * 256 // 224) and a center crop to
    height x width (exactly transformers' 256 / 224 at 224). donut-swin: DonutImageProcessor
    defaults with size height x width (aspect-keeping resize + thumbnail, centred zero padding).
    """
    if model_type not in MODEL_TYPES:
      raise ValueError(f"no default image processor for model_type {model_type!r}: expected one "
                       f"of {sorted(MODEL_TYPES)}, or load a preprocessor_config.json (from_dir)")
    size = _size_dict({"height": height, "width": width}, "image size")
    if MODEL_TYPES[model_type] == "DeiTImageProcessor":
      return cls.from_dict({"image_processor_type": "DeiTImageProcessor", "crop_size": size,
                            "size": {"height": size["height"] * 256 // 224,
                                     "width": size["width"] * 256 // 224}})
    if MODEL_TYPES[model_type] == "DonutImageProcessor":  # the canvas: aspect kept, then padded
      return cls.from_dict({"image_processor_type": "DonutImageProcessor", "size": size})
    return cls.from_dict({"image_processor_type": "ViTImageProcessor", "size": size})

  def to_dict(self) -> dict[str, Any]:
    """The preprocessor_config.json dict, as transformers' `to_dict` writes it, plus `extra`."""
    out = dict(self.extra)
    for key in _DEFAULTS[self.kind]:
      value = getattr(self, key)
      if key in ("image_mean", "image_std") and not isinstance(value, (int, float)):
        value = [float(v) for v in value]
      elif key in ("size", "crop_size") and value is not None:
        value = dict(value)
      out[key] = value
    out["image_processor_type"] = self.image_processor_type
    return out

  def save(self, directory: str) -> str:
    """Writes `directory`/preprocessor_config.json atomically; returns its path."""
    return fileio.atomic_write(os.path.join(directory, CONFIG_NAME),
                               json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

  # --------------------------------------------------------------------------- numpy path

  @property
  def output_size(self) -> tuple[int, int] | None:
    """(height, width) of every output, or None when it follows the input (no resize, no crop)."""
    if self.kind == "deit" and self.do_center_crop:
      return self.crop_size["height"], self.crop_size["width"]
    if self.kind == "donut":  # only padding fixes the size: resize and thumbnail keep the aspect
      return (self.size["height"], self.size["width"]) if self.do_pad else None
    if self.do_resize:
      return self.size["height"], self.size["width"]
    return None

  def __call__(self, images) -> np.ndarray:
    """One image or a list / 4-D array of images -> pixel_values float32 [batch, 3, height, width].

    transformers' `processor(images, return_tensors="np").pixel_values` (see the module docstring
    for the accepted inputs). Images of different sizes need do_resize or a center crop.
    """
    items = _image_list(images)
    resized = [self.resize_crop(image) for image in items]
    shapes = {r.shape for r in resized}
    if len(shapes) > 1:
      raise ValueError(f"images of different sizes {sorted(shapes)} cannot form one batch without "
                       "resizing: use a processor with do_resize=True (or a center crop)")
    return self.normalize(np.stack(resized))

  def resize_crop(self, image) -> np.ndarray:
    """Steps 1-3 (RGB, resize, center crop) of one image -> uint8 [height, width, 3]."""
    rgb = to_rgb(image)  # [h, w, 3] uint8
    if self.kind == "donut":
      return _donut_geometry(rgb, self)
    if self.do_resize:
      rgb = _pil_resize(rgb, self.size["height"], self.size["width"], self.resample)
    if self.kind == "deit" and self.do_center_crop:
      rgb = _center_crop(rgb, self.crop_size["height"], self.crop_size["width"])
    return rgb

  def normalize(self, images: np.ndarray) -> np.ndarray:
    """Steps 4-6 of `resize_crop` outputs: uint8 [batch, h, w, 3] -> float32 [batch, 3, h, w]."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"normalize takes uint8 [batch, height, width, 3] (from resize_crop), got "
                       f"{images.dtype} {images.shape}")
    if self.do_rescale:  # transformers: image.astype(float64) * scale, then float32
      x = (images.astype(np.float64) * self.rescale_factor).astype(np.float32)
    else:
      x = images.astype(np.float32)
    if self.do_normalize:
      x = (x - _channel_values(self.image_mean, "image_mean")) / _channel_values(
          self.image_std, "image_std")
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # [batch, 3, height, width]

  # --------------------------------------------------------------------------- tf.data path

  def tf_preprocess(self, image):
    """One uint8 image tf.Tensor [height, width, channels] (any size) -> float32 [3, h, w].

    For `tf.data.Dataset.map`. Same numbers as `__call__`: channels 1 / 3 / 4 become RGB as there,
    the resize is PIL's (through `tf.numpy_function`, so it runs in Python, GIL-bound outside
    Pillow's resampling loop), crop / rescale / normalize are TensorFlow ops mirroring the numpy
    arithmetic (float64 rescale, float32 normalisation).
    """
    import tensorflow as tf
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
      raise ValueError(f"tf_preprocess takes a uint8 image, got {image.dtype.name}: decode with "
                       "tf_decode_image or cast [0, 255] values to tf.uint8")
    image = _tf_to_rgb(image)  # [h, w, 3]
    if self.kind == "donut":
      image = tf.numpy_function(lambda x: _donut_geometry(x, self), [image], tf.uint8,
                                stateful=False)
      size = self.output_size
      image = tf.ensure_shape(image, [*(size or (None, None)), 3])
    elif self.do_resize:
      height, width, resample = self.size["height"], self.size["width"], self.resample
      image = tf.numpy_function(lambda x: _pil_resize(x, height, width, resample), [image],
                                tf.uint8, stateful=False)
      image = tf.ensure_shape(image, [height, width, 3])
    if self.kind == "deit" and self.do_center_crop:
      image = _tf_center_crop(image, self.crop_size["height"], self.crop_size["width"])
    if self.do_rescale:
      x = tf.cast(tf.cast(image, tf.float64) * self.rescale_factor, tf.float32)
    else:
      x = tf.cast(image, tf.float32)
    if self.do_normalize:
      x = (x - tf.constant(_channel_values(self.image_mean, "image_mean"))) / tf.constant(
          _channel_values(self.image_std, "image_std"))
    return tf.transpose(x, [2, 0, 1])  # [3, height, width]


# ----------------------------------------------------------------------------- helpers


def _image_list(images) -> list:
  """A single image, a list / tuple of images, or a 4-D array -> list of images."""
  if isinstance(images, PIL.Image.Image):
    return [images]
  if isinstance(images, (list, tuple)):
    if not images:
      raise ValueError("no images: got an empty list")
    return list(images)
  arr = np.asarray(images)
  if arr.ndim == 4:
    if arr.shape[0] == 0:
      raise ValueError("no images: got an empty batch")
    return list(arr)
  return [arr]


def to_rgb(image) -> np.ndarray:
  """A PIL image or uint8 [h, w] / [h, w, 1|3|4] array -> uint8 [h, w, 3] (PIL's convert("RGB")).

  Raises ValueError for float arrays, integer values outside [0, 255] and other shapes.
  """
  if isinstance(image, PIL.Image.Image):
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
  arr = np.asarray(image)
  if arr.dtype != np.uint8:
    if not np.issubdtype(arr.dtype, np.integer):  # bool and float are not integer dtypes
      raise ValueError(
          f"images must be uint8 (values 0..255), got dtype {arr.dtype}: convert float images in "
          "[0, 1] with (np.clip(x, 0, 1) * 255).round().astype(np.uint8)")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
      raise ValueError(f"integer image values must lie in [0, 255], got [{arr.min()}, {arr.max()}]")
    arr = arr.astype(np.uint8)
  if arr.ndim == 3 and arr.shape[-1] == 1:
    arr = arr[..., 0]
  if arr.ndim == 2:
    arr = np.repeat(arr[..., None], 3, axis=-1)
  elif arr.ndim == 3 and arr.shape[-1] == 4:
    arr = arr[..., :3]
  if arr.ndim != 3 or arr.shape[-1] != 3:
    hint = (" (channels first? transpose to [height, width, channels])"
            if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) else "")
    raise ValueError(f"an image must be [height, width] or [height, width, channels] with 1, 3 or "
                     f"4 channels, got shape {np.shape(image)}{hint}")
  if arr.shape[0] < 1 or arr.shape[1] < 1:
    raise ValueError(f"empty image of shape {np.shape(image)}")
  return arr


def _pil_resize(image: np.ndarray, height: int, width: int, resample: int,
                reducing_gap: float | None = None) -> np.ndarray:
  """uint8 [h, w, 3] -> uint8 [height, width, 3] with PIL, as transformers' `resize` does."""
  resized = PIL.Image.fromarray(np.ascontiguousarray(image)).resize(
      (width, height), resample=resample, reducing_gap=reducing_gap)
  return np.asarray(resized)


def _donut_geometry(image: np.ndarray, p: "ImageProcessor") -> np.ndarray:
  """DonutImageProcessor's steps 2a-2d (module docstring) of a uint8 [h, w, 3] image."""
  out_h, out_w = p.size["height"], p.size["width"]
  if p.do_align_long_axis:  # transformers' align_long_axis
    in_h, in_w = image.shape[:2]
    if (out_w < out_h and in_w > in_h) or (out_w > out_h and in_w < in_h):
      image = np.ascontiguousarray(np.rot90(image, 3, axes=(0, 1)))
  if p.do_resize:  # shortest edge to min(size): get_resize_output_image_size(default_to_square=False)
    in_h, in_w = image.shape[:2]
    target = min(out_h, out_w)
    short, long = (in_w, in_h) if in_w <= in_h else (in_h, in_w)
    new_short, new_long = target, int(target * long / short)
    new_h, new_w = (new_long, new_short) if in_w <= in_h else (new_short, new_long)
    image = _pil_resize(image, new_h, new_w, p.resample)
  if p.do_thumbnail:  # transformers' thumbnail: bicubic, reducing_gap 2.0, never enlarges
    in_h, in_w = image.shape[:2]
    height, width = min(in_h, out_h), min(in_w, out_w)
    if (height, width) != (in_h, in_w):
      if in_h > in_w:
        width = int(in_w * height / in_h)
      elif in_w > in_h:
        height = int(in_h * width / in_w)
      image = _pil_resize(image, height, width, 3, reducing_gap=2.0)
  if p.do_pad:  # pad_image(random_padding=False): centred zeros
    in_h, in_w = image.shape[:2]
    dh, dw = out_h - in_h, out_w - in_w
    if dh < 0 or dw < 0:
      raise ValueError(f"DonutImageProcessor cannot pad a {in_h}x{in_w} image to the smaller size "
                       f"{out_h}x{out_w}: turn do_thumbnail on (it shrinks images to fit)")
    image = np.pad(image, ((dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2), (0, 0)))
  return image


def _crop_box(height: int, width: int, crop_height: int, crop_width: int):
  """transformers' center_crop geometry: (pad_top, pad_bottom, pad_left, pad_right, top, left).

  The image is zero-padded to at least the crop size (ceil half on top / left), then cropped at
  (top, left) of the padded image.
  """
  new_h, new_w = max(crop_height, height), max(crop_width, width)
  pad_top, pad_left = -(-(new_h - height) // 2), -(-(new_w - width) // 2)
  top = (height - crop_height) // 2 + pad_top
  left = (width - crop_width) // 2 + pad_left
  return pad_top, new_h - height - pad_top, pad_left, new_w - width - pad_left, top, left


def _center_crop(image: np.ndarray, crop_height: int, crop_width: int) -> np.ndarray:
  """uint8 [h, w, 3] -> [crop_height, crop_width, 3], zero-padded where the image is smaller."""
  pt, pb, pl, pr, top, left = _crop_box(image.shape[0], image.shape[1], crop_height, crop_width)
  if pt or pb or pl or pr:
    image = np.pad(image, ((pt, pb), (pl, pr), (0, 0)))
  return image[top:top + crop_height, left:left + crop_width]


def _tf_to_rgb(image):
  """uint8 tf.Tensor [h, w] / [h, w, 1|3|4] -> [h, w, 3] (as `to_rgb`)."""
  import tensorflow as tf
  if image.shape.rank == 2:
    image = image[..., None]
  if image.shape.rank != 3:
    raise ValueError(f"tf_preprocess takes one image [height, width, channels], got shape "
                     f"{image.shape}")
  channels = image.shape[-1]
  if channels == 3:
    return image
  if channels == 1:
    return tf.tile(image, [1, 1, 3])
  if channels == 4:
    return image[..., :3]
  if channels is not None:
    raise ValueError(f"an image must have 1, 3 or 4 channels, got shape {image.shape}")
  n = tf.shape(image)[-1]
  check = tf.debugging.Assert(tf.reduce_any(tf.equal(n, [1, 3, 4])),
                              ["an image must have 1, 3 or 4 channels, got", n])
  with tf.control_dependencies([check]):
    rgb = tf.cond(tf.equal(n, 1), lambda: tf.tile(image[..., :1], [1, 1, 3]),
                  lambda: image[..., :3])
  return tf.ensure_shape(rgb, [None, None, 3])


def _tf_center_crop(image, crop_height: int, crop_width: int):
  """`_center_crop` in TensorFlow for a dynamic-size uint8 [h, w, 3] image."""
  import tensorflow as tf
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  new_h, new_w = tf.maximum(crop_height, height), tf.maximum(crop_width, width)
  pad_top = (new_h - height + 1) // 2
  pad_left = (new_w - width + 1) // 2
  image = tf.pad(image, [[pad_top, new_h - height - pad_top], [pad_left, new_w - width - pad_left],
                         [0, 0]])
  top = tf.math.floordiv(height - crop_height, 2) + pad_top
  left = tf.math.floordiv(width - crop_width, 2) + pad_left
  image = image[top:top + crop_height, left:left + crop_width]
  return tf.ensure_shape(image, [crop_height, crop_width, 3])


def tf_decode_image(encoded):
  """Encoded image bytes (scalar tf.string) -> uint8 [height, width, 3], equal to PIL's decoding.

  JPEG with dct_method="INTEGER_ACCURATE" (libjpeg's ISLOW, PIL's default; TensorFlow's default
  differs), other formats (PNG, GIF, BMP) with `tf.io.decode_image`; gray images become RGB.
  """
  import tensorflow as tf
  image = tf.cond(
      tf.io.is_jpeg(encoded),
      lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
      lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False))
  return tf.ensure_shape(image, [None, None, 3])


def decode_image(encoded: bytes) -> np.ndarray:
  """Encoded image bytes -> uint8 [height, width, 3] with PIL (what transformers users do)."""
  import io
  with PIL.Image.open(io.BytesIO(encoded)) as image:
    return to_rgb(image)


def check_same_size(processor: ImageProcessor) -> tuple[int, int]:
  """The processor's fixed output (height, width); ValueError when outputs follow the input size."""
  size = processor.output_size
  if size is None:
    raise ValueError("the image processor keeps each image's own size (do_resize false and no "
                     "center crop), so images cannot be batched: set do_resize true")
  return size


__all__ = ["ImageProcessor", "CONFIG_NAME", "MODEL_TYPES", "to_rgb", "tf_decode_image",
           "decode_image", "check_same_size"]
