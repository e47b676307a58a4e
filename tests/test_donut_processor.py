"""edjax's DonutImageProcessor kind against transformers' DonutImageProcessor (the oracle).

Images of different aspect ratios (portrait, landscape, square, a long text line, smaller and
larger than the canvas, RGBA / gray PIL images) through the numpy path and a real tf.data map,
for the default settings, align_long_axis, no thumbnail / no resize, and a list `size`
(transformers reads it as (width, height)).
"""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf
from transformers import DonutImageProcessor

from edjax.processing.images import MODEL_TYPES, ImageProcessor

TOL = 1e-6


def _images() -> dict[str, PIL.Image.Image]:
  rng = np.random.default_rng(0)

  def noise(h, w, c=3):
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], -1)
    arr = np.clip(base[..., :c] + rng.integers(0, 30, (h, w, c)), 0, 255).astype(np.uint8)
    return PIL.Image.fromarray(arr if c > 1 else arr[..., 0])

  rgba = np.concatenate([np.asarray(noise(50, 90)), np.full((50, 90, 1), 128, np.uint8)], -1)
  return {
      "portrait_120x70": noise(120, 70),
      "landscape_45x160": noise(45, 160),
      "square_64x64": noise(64, 64),
      "line_32x300": noise(32, 300),
      "small_9x14": noise(9, 14),
      "large_700x500": noise(700, 500),
      "rgba_50x90": PIL.Image.fromarray(rgba),
      "gray_77x41": noise(77, 41, 1),
  }


IMAGES = _images()
CONFIGS = {
    "default_96x64": dict(size={"height": 96, "width": 64}),
    "line_32x128": dict(size={"height": 32, "width": 128}),
    "align_long_axis": dict(size={"height": 96, "width": 64}, do_align_long_axis=True),
    "pad_only": dict(size={"height": 720, "width": 720}, do_resize=False, do_thumbnail=False),
    "no_resize": dict(size={"height": 100, "width": 180}, do_resize=False, resample=3),
    "list_size_w_h": dict(size=[64, 48]),
}


def _hf(config: dict) -> DonutImageProcessor:
  return DonutImageProcessor(**config)


def _ours(config: dict) -> ImageProcessor:
  return ImageProcessor.from_dict({"image_processor_type": "DonutImageProcessor", **config})


def _cases():
  for cname in CONFIGS:
    for iname in IMAGES:
      yield pytest.param(cname, iname, id=f"{cname}-{iname}")


@pytest.mark.parametrize("config_name,image_name", list(_cases()))
def test_numpy_path_equals_transformers(config_name, image_name):
  config, image = CONFIGS[config_name], IMAGES[image_name]
  want = _hf(config)(image, return_tensors="np").pixel_values
  got = _ours(config)(image)
  assert got.shape == want.shape and got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


@pytest.mark.parametrize("config_name", ["default_96x64", "line_32x128", "align_long_axis"])
def test_tf_data_path_equals_transformers(config_name):
  config = CONFIGS[config_name]
  processor = _ours(config)
  arrays = [np.asarray(image.convert("RGB")) for image in IMAGES.values()]
  ds = tf.data.Dataset.from_generator(
      lambda: iter(arrays), output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
  ds = ds.map(processor.tf_preprocess)
  assert ds.element_spec.shape.as_list() == [3, *processor.output_size]
  for got, image in zip(ds.as_numpy_iterator(), IMAGES.values()):
    want = _hf(config)(image.convert("RGB"), return_tensors="np").pixel_values[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


def test_batch_of_aspect_ratios_is_one_canvas():
  processor = _ours(CONFIGS["default_96x64"])
  images = list(IMAGES.values())
  want = _hf(CONFIGS["default_96x64"])(images, return_tensors="np").pixel_values
  got = processor(images)
  assert got.shape == (len(images), 3, 96, 64) and processor.output_size == (96, 64)
  np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


def test_defaults_round_trip_and_transformers_reads_them(tmp_path):
  ours = ImageProcessor.from_dict({"image_processor_type": "DonutImageProcessor"})
  hf = DonutImageProcessor()
  assert ours.kind == "donut" and dict(ours.size) == hf.size == {"height": 2560, "width": 1920}
  for key in ("do_thumbnail", "do_align_long_axis", "do_pad", "resample", "do_resize"):
    assert getattr(ours, key) == getattr(hf, key), key
  ours.save(str(tmp_path))
  loaded = DonutImageProcessor.from_pretrained(str(tmp_path))
  assert loaded.size == hf.size and loaded.do_thumbnail and not loaded.do_align_long_axis
  assert ImageProcessor.from_dir(str(tmp_path)) == ours
  hf.save_pretrained(str(tmp_path / "hf"))  # and transformers' file reads as ours
  from_hf = ImageProcessor.from_dir(str(tmp_path / "hf"))
  assert from_hf.to_dict()["size"] == hf.size and from_hf.do_pad
  with open(tmp_path / "hf" / "preprocessor_config.json") as f:
    assert json.load(f)["image_processor_type"] == "DonutImageProcessor"


def test_model_type_defaults():
  assert MODEL_TYPES["swin"] == "ViTImageProcessor"  # transformers' AutoImageProcessor mapping
  assert MODEL_TYPES["donut-swin"] == "DonutImageProcessor"
  p = ImageProcessor.for_image_size(64, 48, model_type="donut-swin")
  assert p.kind == "donut" and p.output_size == (64, 48)


def test_no_pad_keeps_aspect_and_too_large_errors():
  no_pad = _ours(dict(size={"height": 96, "width": 64}, do_pad=False))
  assert no_pad.output_size is None
  image = IMAGES["landscape_45x160"]
  want = _hf(dict(size={"height": 96, "width": 64}, do_pad=False))(image,
                                                                   return_tensors="np").pixel_values
  np.testing.assert_allclose(no_pad(image), want, rtol=0, atol=TOL)
  too_large = dict(size={"height": 400, "width": 400}, do_thumbnail=False)
  with pytest.raises(ValueError):  # resized beyond the canvas: transformers' pad fails too
    _hf(too_large)(IMAGES["portrait_120x70"])
  with pytest.raises(ValueError, match="cannot pad"):
    _ours(too_large)(IMAGES["portrait_120x70"])
