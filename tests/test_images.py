"""edjax.processing.images against transformers' ViTImageProcessor / DeiTImageProcessor (the oracle).

Real photos from matplotlib's sample data (grace_hopper.jpg: RGB JPEG; logo2.png and
Minduka_Present_Blue_Pack.png: RGBA PNGs) plus Pillow-made images (gradients, shapes, gray,
RGBA, palette, 1x1 to 1024x768), through the numpy path and a real tf.data map.
"""

from __future__ import annotations

import io
import json
import os

import matplotlib
import numpy as np
import PIL.Image
import PIL.ImageDraw
import pytest
import tensorflow as tf
from transformers import DeiTImageProcessor, ViTImageProcessor

from edjax.processing import images as images_lib
from edjax.processing.images import ImageProcessor

TOL = 1e-5
SAMPLE_DATA = os.path.join(matplotlib.get_data_path(), "sample_data")


def _real_images() -> dict[str, PIL.Image.Image]:
  out = {}
  for name in ("grace_hopper.jpg", "logo2.png", "Minduka_Present_Blue_Pack.png"):
    with PIL.Image.open(os.path.join(SAMPLE_DATA, name)) as image:
      image.load()
      out[name] = image.copy()
  assert out["grace_hopper.jpg"].mode == "RGB" and out["logo2.png"].mode == "RGBA"
  return out


def _made_images() -> dict[str, PIL.Image.Image]:
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[0:37, 0:53]
  gradient = np.stack([xx * 255 // 52, yy * 255 // 36, (xx + yy) * 255 // 88], -1).astype(np.uint8)
  shapes = PIL.Image.new("RGB", (100, 80), (250, 240, 230))
  draw = PIL.ImageDraw.Draw(shapes)
  draw.ellipse((10, 5, 60, 70), fill=(200, 30, 40))
  draw.rectangle((50, 20, 95, 60), fill=(20, 90, 200), outline=(0, 0, 0), width=3)
  draw.line((0, 79, 99, 0), fill=(10, 200, 10), width=2)
  rgba = np.concatenate([rng.integers(0, 256, (40, 70, 3)),
                         np.tile(np.linspace(0, 255, 70), (40, 1))[..., None]], -1).astype(np.uint8)
  yy, xx = np.mgrid[0:768, 0:1024]
  large = np.stack([xx % 256, yy % 256, (xx * yy) % 251], -1) + rng.integers(0, 5, (768, 1024, 3))
  return {
      "gradient_37x53": PIL.Image.fromarray(gradient),
      "shapes_80x100": shapes,
      "gray_61x47": PIL.Image.fromarray(rng.integers(0, 256, (61, 47), dtype=np.uint8)),
      "rgba_40x70": PIL.Image.fromarray(rgba),
      "palette": shapes.convert("P", palette=PIL.Image.Palette.ADAPTIVE, colors=16),
      "tiny_1x1": PIL.Image.fromarray(np.array([[[12, 200, 77]]], np.uint8)),
      "tiny_2x3": PIL.Image.fromarray(rng.integers(0, 256, (2, 3, 3), dtype=np.uint8)),
      "large_768x1024": PIL.Image.fromarray(np.clip(large, 0, 255).astype(np.uint8)),
  }


IMAGES = {**_real_images(), **_made_images()}

# (name, transformers processor). ViT gets do_convert_rgb=True so that it accepts gray / RGBA /
# palette images; DeiT has no such option and is given image.convert("RGB").
CONFIGS = [
    ("vit_default", ViTImageProcessor(do_convert_rgb=True)),
    ("vit_32x128_bicubic", ViTImageProcessor(size={"height": 32, "width": 128}, resample=3,
                                             do_convert_rgb=True)),
    ("vit_48_nearest_custom_norm", ViTImageProcessor(
        size=48, resample=0, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])),
    ("vit_no_normalize_40x30", ViTImageProcessor(size={"height": 40, "width": 30},
                                                 do_normalize=False)),
    ("vit_lanczos_scalar_norm", ViTImageProcessor(size=20, resample=1, image_mean=0.3,
                                                  image_std=0.7)),
    ("vit_box", ViTImageProcessor(size={"height": 17, "width": 9}, resample=4)),
    ("vit_hamming_no_rescale", ViTImageProcessor(size=24, resample=5, do_rescale=False)),
    ("deit_default", DeiTImageProcessor()),
    ("deit_crop_pads", DeiTImageProcessor(size={"height": 20, "width": 50},
                                          crop_size={"height": 33, "width": 40})),
    ("deit_bilinear_crop", DeiTImageProcessor(size={"height": 64, "width": 72}, resample=2,
                                              crop_size={"height": 56, "width": 31})),
    ("deit_no_crop_no_rescale", DeiTImageProcessor(size=28, do_center_crop=False, do_rescale=False,
                                                   image_mean=[100, 110, 120],
                                                   image_std=[50, 60, 70])),
]


def _reference(hf, image: PIL.Image.Image) -> np.ndarray:
  """transformers' pixel_values [1, 3, h, w] of one image."""
  return hf(image.convert("RGB"), return_tensors="np",
            input_data_format="channels_last").pixel_values  # a 1x1x3 image is ambiguous there


def _ours(hf) -> ImageProcessor:
  return ImageProcessor.from_dict(_hf_json(hf))


def _hf_json(hf) -> dict:
  """The preprocessor_config.json dict transformers writes for `hf`."""
  return json.loads(hf.to_json_string())


def _max_diff(a, b) -> float:
  assert a.shape == b.shape, (a.shape, b.shape)
  return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


@pytest.mark.parametrize("config_name,hf", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_numpy_path_equals_transformers(config_name, hf):
  processor = _ours(hf)
  for name, image in IMAGES.items():
    ref = _reference(hf, image)
    got = processor(image)  # the original mode (RGBA, L, P, ...): converted here
    assert got.dtype == np.float32 and got.shape == ref.shape, (name, got.shape, ref.shape)
    assert _max_diff(got, ref) <= TOL, (config_name, name, _max_diff(got, ref))
    if image.mode in ("RGB", "RGBA", "L"):  # the same pixels as a numpy array
      assert _max_diff(processor(np.asarray(image)), ref) <= TOL, (config_name, name)


def test_batches_lists_and_4d_arrays():
  hf = ViTImageProcessor(size={"height": 32, "width": 128}, resample=3, do_convert_rgb=True)
  processor = _ours(hf)
  batch = [IMAGES[n] for n in ("grace_hopper.jpg", "gray_61x47", "logo2.png", "tiny_1x1")]
  ref = hf([im.convert("RGB") for im in batch], return_tensors="np",
           input_data_format="channels_last").pixel_values
  got = processor(batch)
  assert got.shape == (4, 3, 32, 128) and _max_diff(got, ref) <= TOL
  same_size = np.stack([np.asarray(IMAGES["gradient_37x53"])] * 2)  # [2, 37, 53, 3]
  ref = hf(list(same_size), return_tensors="np").pixel_values
  assert _max_diff(processor(same_size), ref) <= TOL
  gray_hw1 = np.asarray(IMAGES["gray_61x47"])[..., None]  # [61, 47, 1]
  assert _max_diff(processor(gray_hw1), _reference(hf, IMAGES["gray_61x47"])) <= TOL
  int64 = np.asarray(IMAGES["shapes_80x100"]).astype(np.int64)  # integer values in [0, 255]
  assert _max_diff(processor(int64), _reference(hf, IMAGES["shapes_80x100"])) <= TOL


def test_no_resize_keeps_size():
  hf = ViTImageProcessor(do_resize=False)
  processor = _ours(hf)
  image = IMAGES["shapes_80x100"]
  assert processor.output_size is None
  got = processor(image)
  assert got.shape == (1, 3, 80, 100) and _max_diff(got, _reference(hf, image)) <= TOL
  with pytest.raises(ValueError, match="different sizes"):
    processor([image, IMAGES["gradient_37x53"]])


def _tf_map(processor: ImageProcessor, arrays, channels) -> list[np.ndarray]:
  """Runs processor.tf_preprocess inside a real tf.data map over dynamic-size uint8 images."""
  ds = tf.data.Dataset.from_generator(
      lambda: iter(arrays), output_signature=tf.TensorSpec([None, None, channels], tf.uint8))
  ds = ds.map(processor.tf_preprocess, num_parallel_calls=2, deterministic=True)
  return [x for x in ds.as_numpy_iterator()]


@pytest.mark.parametrize("config_name,hf", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_tf_data_path_equals_transformers(config_name, hf):
  processor = _ours(hf)
  names = [n for n in IMAGES if n != "large_768x1024"]  # covered by the numpy test; keep it fast
  rgb = [np.asarray(IMAGES[n].convert("RGB")) for n in names]
  got = _tf_map(processor, rgb, 3)
  for name, x in zip(names, got):
    ref = _reference(hf, IMAGES[name])[0]
    assert x.dtype == np.float32 and _max_diff(x, ref) <= TOL, (config_name, name)


def test_tf_data_path_converts_channels():
  hf = ViTImageProcessor(size={"height": 32, "width": 128}, do_convert_rgb=True)
  processor = _ours(hf)
  gray, rgba = IMAGES["gray_61x47"], IMAGES["rgba_40x70"]
  for arrays, channels in (([np.asarray(gray)[..., None]], 1), ([np.asarray(rgba)], 4),
                           ([np.asarray(gray)[..., None], np.asarray(rgba),
                             np.asarray(IMAGES["grace_hopper.jpg"])], None)):
    refs = [_reference(hf, PIL.Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a))[0]
            for a in arrays]
    for got, ref in zip(_tf_map(processor, arrays, channels), refs):
      assert got.shape == (3, 32, 128) and _max_diff(got, ref) <= TOL
  two_d = tf.constant(np.asarray(gray))  # [h, w]: eager call, outside tf.data
  assert _max_diff(processor.tf_preprocess(two_d).numpy(), _reference(hf, gray)[0]) <= TOL


def test_tf_decode_equals_pil_decode():
  with open(os.path.join(SAMPLE_DATA, "grace_hopper.jpg"), "rb") as f:
    encoded = {"grace_hopper.jpg": f.read()}
  shapes = IMAGES["shapes_80x100"]
  for subsampling in (0, 1, 2):  # 4:4:4, 4:2:2, 4:2:0
    buf = io.BytesIO()
    IMAGES["large_768x1024"].save(buf, "JPEG", quality=85, subsampling=subsampling)
    encoded[f"jpeg_subsampling_{subsampling}"] = buf.getvalue()
  for name, image, fmt in (("gray_jpeg", IMAGES["gray_61x47"], "JPEG"),
                           ("rgba_png", IMAGES["rgba_40x70"], "PNG"),
                           ("shapes_png", shapes, "PNG")):
    buf = io.BytesIO()
    image.save(buf, fmt)
    encoded[name] = buf.getvalue()
  ds = tf.data.Dataset.from_tensor_slices(list(encoded.values())).map(images_lib.tf_decode_image)
  for (name, data), got in zip(encoded.items(), ds.as_numpy_iterator()):
    ref = images_lib.decode_image(data)
    assert got.shape == ref.shape and np.array_equal(got, ref), name


def test_from_dir_matches_transformers_save_pretrained(tmp_path):
  hf = DeiTImageProcessor(size={"height": 40, "width": 50}, crop_size=32, resample=2,
                          image_mean=[0.1, 0.2, 0.3])
  hf.save_pretrained(str(tmp_path / "hf"))
  ours = ImageProcessor.from_dir(str(tmp_path / "hf"))
  with open(tmp_path / "hf" / "preprocessor_config.json") as f:
    written = json.load(f)
  assert ours.to_dict() == written  # the same keys and values transformers wrote
  assert ours.image_processor_type == "DeiTImageProcessor" and ours.crop_size == {
      "height": 32, "width": 32}
  image = IMAGES["grace_hopper.jpg"]
  assert _max_diff(ours(image), _reference(hf, image)) <= TOL
  # ours -> disk -> transformers and back
  path = ours.save(str(tmp_path / "ours"))
  assert os.listdir(tmp_path / "ours") == ["preprocessor_config.json"]  # no temp file left
  back = DeiTImageProcessor.from_pretrained(str(tmp_path / "ours"))
  assert _hf_json(back) == _hf_json(hf)
  assert ImageProcessor.from_dir(path) == ours  # the file path itself works too


def test_unknown_keys_kept_and_vit_round_trip(tmp_path):
  config = dict(_hf_json(ViTImageProcessor(size={"height": 32, "width": 128}, do_convert_rgb=True)),
                my_future_key=[1, 2], processor_class="TrOCRProcessor")
  ours = ImageProcessor.from_dict(config)
  assert ours.extra == {"my_future_key": [1, 2], "processor_class": "TrOCRProcessor"}
  assert ours.to_dict() == config
  ours.save(str(tmp_path))
  assert ImageProcessor.from_dir(str(tmp_path)) == ours
  hf_back = ViTImageProcessor.from_pretrained(str(tmp_path))
  assert hf_back.size == {"height": 32, "width": 128} and hf_back.do_convert_rgb is True


@pytest.mark.parametrize("legacy,hf_cls", [
    ({"feature_extractor_type": "ViTFeatureExtractor", "size": 40, "resample": 3,
      "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
      "do_normalize": True, "do_resize": True}, ViTImageProcessor),
    ({"feature_extractor_type": "DeiTFeatureExtractor", "size": 36, "crop_size": 30,
      "resample": 3, "do_center_crop": True}, DeiTImageProcessor),
])
def test_legacy_feature_extractor_configs(tmp_path, legacy, hf_cls):
  with open(tmp_path / "preprocessor_config.json", "w") as f:
    json.dump(legacy, f)
  ours = ImageProcessor.from_dir(str(tmp_path))
  hf = hf_cls.from_pretrained(str(tmp_path))
  assert ours.to_dict() == _hf_json(hf)  # int sizes became dicts, feature_extractor_type dropped
  image = IMAGES["shapes_80x100"]
  assert _max_diff(ours(image), _reference(hf, image)) <= TOL


def test_for_image_size():
  vit = ImageProcessor.for_image_size(32, 128)
  hf = ViTImageProcessor(size={"height": 32, "width": 128})
  assert vit.to_dict() == _hf_json(hf)
  photo = IMAGES["grace_hopper.jpg"]
  assert _max_diff(vit(photo), _reference(hf, photo)) <= TOL
  assert ImageProcessor.for_image_size(224, 224, "deit").to_dict() == _hf_json(DeiTImageProcessor())
  assert ImageProcessor.for_image_size(32, 32, "deit").output_size == (32, 32)
  with pytest.raises(ValueError, match="model_type 'clip'"):
    ImageProcessor.for_image_size(224, 224, "clip")


def test_config_errors(tmp_path):
  with pytest.raises(ValueError, match="'CLIPImageProcessor'.*ViTImageProcessor"):
    ImageProcessor.from_dict({"image_processor_type": "CLIPImageProcessor"})
  with pytest.raises(ValueError, match="'CLIPFeatureExtractor'"):
    ImageProcessor.from_dict({"feature_extractor_type": "CLIPFeatureExtractor"})
  with pytest.raises(ValueError, match="neither image_processor_type nor feature_extractor_type"):
    ImageProcessor.from_dict({"size": 224})
  with pytest.raises(ValueError, match="shortest edge"):
    ImageProcessor.from_dict({"image_processor_type": "ViTImageProcessor",
                              "size": {"shortest_edge": 224}})
  with pytest.raises(ValueError, match="resample"):
    ImageProcessor.from_dict({"image_processor_type": "ViTImageProcessor", "resample": 9})
  with pytest.raises(ValueError, match="image_mean"):
    ImageProcessor.from_dict({"image_processor_type": "ViTImageProcessor",
                              "image_mean": [0.5, 0.5]})
  with pytest.raises(ValueError, match="image_std must not contain 0"):
    ImageProcessor.from_dict({"image_processor_type": "ViTImageProcessor", "image_std": 0})
  with pytest.raises(FileNotFoundError, match="no preprocessor_config.json"):
    ImageProcessor.from_dir(str(tmp_path))


def test_image_errors():
  processor = ImageProcessor.for_image_size(8, 8)
  with pytest.raises(ValueError, match="must be uint8.*np.clip"):
    processor(np.zeros((4, 4, 3), np.float32))
  with pytest.raises(ValueError, match=r"\[0, 255\]"):
    processor(np.full((4, 4, 3), 300, np.int32))
  with pytest.raises(ValueError, match="1, 3 or 4 channels, got shape \\(4, 4, 2\\)"):
    processor(np.zeros((4, 4, 2), np.uint8))
  with pytest.raises(ValueError, match="channels first"):
    processor(np.zeros((3, 16, 16), np.uint8))
  with pytest.raises(ValueError, match="got shape \\(16,\\)"):
    processor(np.zeros(16, np.uint8))
  with pytest.raises(ValueError, match="empty list"):
    processor([])
  with pytest.raises(ValueError, match="1, 3 or 4 channels"):
    processor.tf_preprocess(tf.zeros((4, 4, 2), tf.uint8))
  with pytest.raises(ValueError, match="takes a uint8 image"):
    processor.tf_preprocess(tf.zeros((4, 4, 3), tf.float32))
  ds = tf.data.Dataset.from_generator(  # channels unknown when the graph is built
      lambda: iter([np.zeros((4, 4, 2), np.uint8)]),
      output_signature=tf.TensorSpec([None, None, None], tf.uint8)).map(processor.tf_preprocess)
  with pytest.raises(tf.errors.InvalidArgumentError, match="1, 3 or 4 channels"):
    next(iter(ds))
