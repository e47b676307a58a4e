"""Image-to-text datasets (VisionEncoderDecoder): images and tokenized targets behind the same
`streams.IndexedStream` / `streams.EvalSet` as the text datasets.

    stream, eval_set = edjax.data.build_dataset(
        config.data, decoder_tokenizer=dec_tok, image_processor=processor,
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

plus `valid` / `index` on eval batches (`streams.EvalSet.batches`). Targets are tokenized once up
front; images are rendered / read and preprocessed on demand in `ImageTextData.rows`, so memory
stays flat and `IndexedStream.batch(step)` stays a pure function of (seed, step).

The image datasets: ``rendered_ocr`` (`edjax.data.ocr`) over `ImageTextData`, and
``coco_captions`` (`edjax.data.coco_captions`, a forward-only tf.data stream).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from edjax.losses import IGNORE_INDEX
from edjax.processing.tokenizers import Tokenizer

ImageProcessor = Callable[[np.ndarray], np.ndarray]  # uint8 [n, h, w, 3] -> float32 [n, C, H, W]


class ImageTextData:
  """Images (on demand) and tokenized texts: the `streams.Rows` of an `IndexedStream` / `EvalSet`.

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
