"""Image-to-text input pipeline of the trainer (VisionEncoderDecoder): the seq2seq pipeline's
`TrainStream` / `EvalSet` over image-text data.

    stream, eval_set = vision_pipeline.build_vision(config.data, image_processor, dec_tok,
                                                    global_batch_size=64, seed=0)
    batch = stream.batch(step)                 # this host's rows of global batch `step`
    for b in eval_set.batches(32): ...         # the fixed eval subset, last batch padded

Batches (static shapes, one compiled train step)::

    pixel_values            [b, C, H, W] float32  `image_processor(uint8 images [b, h, w, 3])`
                                                  (NCHW, as HF's ViTImageProcessor returns)
    labels                  [b, max_target_length] int32  target tokens without a start token,
                                                  eos last, -100 on padding (`pipeline.tokenize`'s
                                                  convention, via `Tokenizer.encode_targets`)
    decoder_attention_mask  [b, max_target_length] int32  1 where labels != -100

plus `valid` / `index` on eval batches (see `pipeline.EvalSet.batches`). Targets are tokenized
once up front; images are rendered / read and preprocessed on demand in `rows`, so memory stays
flat and `TrainStream.batch(step)` stays a pure function of (seed, step).

Datasets (`data_config.name`):

* ``rendered_ocr``: printed text lines cut from WikiSplit sentences and rendered offline
  (`edjax.data.ocr`, TrOCR-style); keys and defaults in `get_config`. The eval set's examples are
  (``"rendered_ocr:test:<i>"``, text), so `EvalSet.references` are the line texts.
* ``coco_captions``: `edjax.data.coco_captions.build_coco_captions` (its own keys).
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import ml_collections
import numpy as np
from absl import logging

from edjax.data import ocr
from edjax.data.pipeline import IGNORE_INDEX, EvalSet, TrainStream, _check_sharding, _get
from edjax.processing.tokenizers import Tokenizer

NAMES = ("rendered_ocr", "coco_captions")

ImageProcessor = Callable[[np.ndarray], np.ndarray]  # uint8 [n, h, w, 3] -> float32 [n, C, H, W]


def get_config() -> ml_collections.ConfigDict:
  """The ``rendered_ocr`` data config with its defaults (all keys optional; "" / None = default).

  name               'rendered_ocr'
  num_train          training lines (default 50000), distinct, from WikiSplit tune + validation
  eval_examples      eval lines (default 500), distinct, from WikiSplit test, none of them a
                     training line
  image_height       rendered canvas height in pixels (default 32, >= 16); the image processor
                     then resizes to the encoder's input size
  image_width        rendered canvas width in pixels (default 128, >= 32)
  max_words          words per line, 1..max_words (default 4)
  max_chars          characters per line, spaces included (default 24)
  max_target_length  label length, eos included (default 32; a line that needs more tokens is an
                     error, never silently truncated)
  data_dir           the folder of the WikiSplit TSVs (default $EDJAX_DATA_DIR/wiki_split)
  render_seed        seed of the text lines and of every render (default 0), independent of the
                     training seed, so runs with different seeds see the same data
  target_units       'subwords' (default: the tokenizer's usual pieces) or 'characters' (one
                     WordPiece vocabulary entry per character, g ##u ##n: decodes to the same
                     text; lets a recogniser spell words it has rarely seen)
  """
  return ml_collections.ConfigDict(dict(
      name="rendered_ocr", num_train=50000, eval_examples=500, image_height=32, image_width=128,
      max_words=4, max_chars=24, max_target_length=32, data_dir="", render_seed=0,
      target_units="subwords"))


class ImageTextData:
  """Images (on demand) and tokenized texts: the `data` of `TrainStream` / `EvalSet`.

  images: any object with `images(idx) -> uint8 [n, h, w, 3]` and `__len__` (an
  `ocr.RenderedOCR`, or a reader of image files); texts: its targets (len(images) of them);
  image_processor: callable uint8 [n, h, w, 3] -> float32 [n, C, H, W].
  """

  def __init__(self, images, texts: Sequence[str], decoder_tokenizer: Tokenizer,
               image_processor: ImageProcessor, *, max_target_length: int,
               characters: bool = False):
    if len(images) != len(texts):
      raise ValueError(f"{len(images)} images but {len(texts)} texts: one target per image")
    if max_target_length < 2:
      raise ValueError(f"max_target_length must be >= 2 (a token and eos), got {max_target_length}")
    self.images = images
    self.image_processor = image_processor
    self.labels, self.label_len = tokenize_targets(texts, decoder_tokenizer, max_target_length,
                                                   characters)

  def __len__(self) -> int:
    return len(self.label_len)

  def rows(self, idx: np.ndarray) -> dict[str, np.ndarray]:
    """The model batch of examples `idx`: pixel_values, labels, decoder_attention_mask."""
    idx = np.asarray(idx, np.int64).reshape(-1)
    raw = self.images.images(idx)  # uint8 [n, h, w, 3]
    pixels = np.asarray(self.image_processor(raw))
    if (pixels.ndim != 4 or pixels.shape[0] != len(idx) or pixels.dtype.kind != "f"
        or (pixels.shape[1] not in (1, 3) and pixels.shape[-1] in (1, 3))):
      raise ValueError(f"the image processor returned {pixels.dtype} {pixels.shape} for "
                       f"{len(idx)} images: expected float [n, C, H, W] (NCHW pixel_values, "
                       "as edjax.processing.images.ImageProcessor returns)")
    mask = np.arange(self.labels.shape[1])[None, :] < self.label_len[idx][:, None]
    labels = np.where(mask, self.labels[idx], IGNORE_INDEX)
    return {"pixel_values": pixels.astype(np.float32),  # [n, C, H, W]
            "labels": labels.astype(np.int32),  # [n, max_target_length]
            "decoder_attention_mask": mask.astype(np.int32)}  # [n, max_target_length]


def tokenize_targets(texts: Sequence[str], tokenizer: Tokenizer, max_target_length: int,
                     characters: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """Texts -> (labels int32 [N, max_target_length] padded with pad_id, lengths int32 [N]) as
  `pipeline.tokenize` makes them (characters=True: one vocabulary piece per character, see
  `Tokenizer.char_pieces`). Raises ValueError when a text needs more than max_target_length
  tokens (eos included) instead of truncating its reference."""
  if not len(texts):
    return np.zeros((0, max_target_length), np.int32), np.zeros((0,), np.int32)
  ids, mask = tokenizer.encode_targets(list(texts), max_target_length, pad_to=max_target_length,
                                       characters=characters)
  lengths = mask.sum(1).astype(np.int32)  # [N]
  full = np.flatnonzero(lengths >= max_target_length)
  if len(full):  # maybe truncated: count their tokens without truncation
    if characters:
      counts = [len(tokenizer.char_pieces(texts[i])) for i in full]
    else:
      counts = [len(e.ids) for e in tokenizer.tok.encode_batch([texts[i] for i in full],
                                                               add_special_tokens=False)]
    need = np.array([c + (tokenizer.eos_id is not None) for c in counts])
    if need.max() > max_target_length:
      j = int(np.argmax(need))
      raise ValueError(
          f"{int((need > max_target_length).sum())} targets need more than max_target_length="
          f"{max_target_length} tokens (e.g. {texts[full[j]]!r}: {need[j]}): raise "
          f"data.max_target_length to {int(need.max())} or shorten the texts")
  return ids.astype(np.int32), lengths


def _positive_int(cfg, key: str, default: int, minimum: int = 1) -> int:
  value = _get(cfg, key, default)
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"data.{key} must be an integer >= {minimum}, got {value!r}")
  return int(value)


def build_rendered_ocr(data_config, image_processor: ImageProcessor,
                       decoder_tokenizer: Tokenizer, *, global_batch_size: int, seed: int,
                       process_index: int = 0, process_count: int = 1
                       ) -> tuple[TrainStream, EvalSet]:
  """(TrainStream, EvalSet) of the ``rendered_ocr`` dataset (keys: see `get_config`)."""
  defaults = get_config()
  sizes = {k: _positive_int(data_config, k, defaults[k], minimum)
           for k, minimum in (("num_train", 1), ("eval_examples", 1), ("image_height", 16),
                              ("image_width", 32), ("max_words", 1), ("max_chars", 1),
                              ("max_target_length", 2))}
  render_seed = _positive_int(data_config, "render_seed", 0, minimum=0)
  data_dir = _get(data_config, "data_dir", None)
  t0 = time.time()
  train_lines, eval_lines = ocr.wiki_split_lines(
      sizes["num_train"], sizes["eval_examples"], seed=render_seed,
      max_words=sizes["max_words"], max_chars=sizes["max_chars"], data_dir=data_dir)
  canvas = dict(seed=render_seed, height=sizes["image_height"], width=sizes["image_width"])
  train_images = ocr.RenderedOCR(train_lines, split="train", **canvas)
  eval_images = ocr.RenderedOCR(eval_lines, split="eval", **canvas)
  tgt_len = sizes["max_target_length"]
  units = _get(data_config, "target_units", "subwords")
  if units not in ("subwords", "characters"):
    raise ValueError(f"data.target_units must be 'subwords' or 'characters', got {units!r}")
  targets = dict(max_target_length=tgt_len, characters=units == "characters")
  train = ImageTextData(train_images, train_lines, decoder_tokenizer, image_processor, **targets)
  eval_data = ImageTextData(eval_images, eval_lines, decoder_tokenizer, image_processor, **targets)
  stream = TrainStream(train, global_batch_size=global_batch_size, seed=seed,
                       process_index=process_index, process_count=process_count)
  examples = [(f"rendered_ocr:test:{i}", text) for i, text in enumerate(eval_lines)]
  logging.info("data rendered_ocr: %d train / %d eval lines (<= %d words, <= %d chars) on a "
               "%d x %d canvas, labels of mean length %.1f, in %.1f s", len(train), len(eval_data),
               sizes["max_words"], sizes["max_chars"], sizes["image_height"],
               sizes["image_width"], float(train.label_len.mean()), time.time() - t0)
  return stream, EvalSet(examples, eval_data, process_index=process_index,
                         process_count=process_count)


def build_vision(data_config, image_processor: ImageProcessor, decoder_tokenizer: Tokenizer, *,
                 global_batch_size: int, seed: int, process_index: int = 0,
                 process_count: int = 1) -> tuple[TrainStream, EvalSet]:
  """This host's `TrainStream` and the `EvalSet` of an image-to-text dataset (see the module
  docstring), dispatching on data_config.name. Raises ValueError for an unknown name or bad
  sizes before any data is read."""
  name = _get(data_config, "name", "rendered_ocr")
  if name not in NAMES:
    raise ValueError(f"unknown image-text dataset name {name!r}: expected one of {NAMES} "
                     "(text-to-text datasets go through edjax.data.pipeline.build)")
  _check_sharding(global_batch_size, process_index, process_count)
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
  if not callable(image_processor):
    raise ValueError(f"image_processor must be callable (uint8 [n, h, w, 3] -> float32 "
                     f"[n, C, H, W]), got {type(image_processor).__name__}")
  kwargs = dict(global_batch_size=global_batch_size, seed=seed, process_index=process_index,
                process_count=process_count)
  if name == "rendered_ocr":
    return build_rendered_ocr(data_config, image_processor, decoder_tokenizer, **kwargs)
  try:
    from edjax.data import coco_captions
  except ModuleNotFoundError as e:
    if e.name != "edjax.data.coco_captions":
      raise
    raise ValueError("data.name='coco_captions' needs edjax/data/coco_captions.py "
                     "(build_coco_captions), which this checkout does not have yet") from e
  return coco_captions.build_coco_captions(data_config, image_processor, decoder_tokenizer,
                                           **kwargs)
