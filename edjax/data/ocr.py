"""Rendered-text OCR data (TrOCR-style printed text lines), built offline from WikiSplit text.

    train_lines, eval_lines = ocr.wiki_split_lines(50000, 500, seed=0)
    data = ocr.RenderedOCR(train_lines, seed=0, split="train")   # height 32, width 128
    data.text(7), data.image(7)     # the line (str), its render: uint8 [32, 128, 3]
    data.images([3, 7])             # uint8 [2, 32, 128, 3]

Text lines. WikiSplit's complex sentences (column 1; tune + validation for training, test for
eval, so eval text is disjoint by source) are detokenized (`detokenize`: " , " -> ", ",
" 's" -> "'s", "( x )" -> "(x)", `''` quotes -> '"'), split on spaces, and cut into
consecutive chunks of 1..max_words words of at most max_chars characters. Only printable ASCII
lines with at least one letter or digit are kept (the fonts render all of ASCII, and uncased
WordPiece round-trips it up to case and spacing). Each pass over the sentences chunks them with a
fresh seeded generator and shuffles the chunks; lines are deduplicated in that order until the
requested count is reached, so any prefix of the lines is a uniform sample. Eval lines that occur
verbatim among the training lines are dropped, which makes the eval lines depend on
(seed, num_train, max_words, max_chars) - keep these fixed when comparing runs.

Rendering. Example i of a `RenderedOCR` is a pure function of (seed, split, i): `params(i)` draws
the font face (DejaVu Sans / Sans Bold / Serif / Sans Mono, shipped with matplotlib), font size,
slight rotation, position, background / foreground gray levels (contrast >= 70 of 255), a
horizontal background gradient, gaussian noise and an optional slight blur from
`np.random.default_rng((seed, split, i))`; `render` draws the text with Pillow's FreeType (BASIC
layout, so the optional libraqm does not change pixels) into a tight ink mask and places it inside
the margins. Text too wide or tall for the canvas is drawn at a smaller font size (down to
`MIN_FONT_SIZE`, then the mask is resized down): it is never cut off. Pixels are identical on every
call and on every machine with the same pinned Pillow and matplotlib. Renders are cheap enough to
make on demand in every batch (README: measured speed).

The dataset ``rendered_ocr`` (`edjax.data.build_dataset`, keys in `DEFAULTS`): `wiki_split_lines`
rendered by `RenderedOCR` behind a `vision_pipeline.ImageTextData`, served by a random-access
`streams.IndexedStream`. The eval set's examples are (``"rendered_ocr:test:<i>"``, text), so its
references are the line texts.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from typing import Sequence

import numpy as np
from absl import logging
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from edjax import fileio, resources
from edjax.data import pipeline, registry, vision_pipeline
from edjax.data.streams import EvalSet, IndexedStream, config_value, positive_int

FONT_FILES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf")
SPLITS = {"train": 0, "eval": 1}  # the split's stream id in the render seed
TRAIN_FILES = ("tune", "validation")
EVAL_FILES = ("test",)
MIN_FONT_SIZE = 8
MIN_CONTRAST = 70
_MAX_PASSES = 32

# Detokenization of WikiSplit's space-separated tokens.
_ATTACH_LEFT = frozenset({",", ".", ";", ":", "!", "?", "%", ")", "]", "}", "..."})
_CLITICS = frozenset({"'s", "n't", "'re", "'d", "'m", "'ll", "'ve"})
_ATTACH_RIGHT = frozenset({"(", "[", "{", "$", "#"})
_DOUBLE_QUOTES = frozenset({"''", "``", '"'})


# ----------------------------------------------------------------------------- text lines


def detokenize(text: str) -> str:
  """WikiSplit's tokenized spacing -> natural text ("the band 's own words , ( 1990 )" ->
  "the band's own words, (1990)"). Double quotes (`''`, ``` `` ```) become '"' attached inside
  their pair; a lone "'" after a word ending in s is a possessive, otherwise a quote."""
  out: list[str] = []
  glue_next = True  # no space before the next token
  open_double = open_single = False
  tokens = text.split()
  for j, tok in enumerate(tokens):
    if tok in _DOUBLE_QUOTES and j and tokens[j - 1] in _DOUBLE_QUOTES:
      continue  # WikiSplit's doubled quotes ("'' '' New York '' ''") are one quote
    if tok in _DOUBLE_QUOTES or tok == "'":
      if tok == "'" and not open_single and out and out[-1][-1:].lower() == "s":
        out.append("'")  # possessive plural: "the players ' union" -> "the players' union"
        glue_next = False
        continue
      is_open = open_single if tok == "'" else open_double
      mark = "'" if tok == "'" else '"'
      if is_open:  # closing: attach to the previous token
        out.append(mark)
        glue_next = False
      else:
        out.append(mark if glue_next or not out else " " + mark)
        glue_next = True
      if tok == "'":
        open_single = not open_single
      else:
        open_double = not open_double
      continue
    if tok in _ATTACH_LEFT or tok.lower() in _CLITICS:
      out.append(tok)
    else:
      out.append(tok if glue_next or not out else " " + tok)
    glue_next = tok in _ATTACH_RIGHT
  return "".join(out)


def _line_ok(line: str) -> bool:
  """Printable ASCII only, with at least one letter or digit."""
  return line.isascii() and line.isprintable() and any(c.isalnum() for c in line)


def chunk_lines(sentences: Sequence[str], n: int, *, seed: int, max_words: int, max_chars: int,
                stream: int = 0, exclude: frozenset[str] | set[str] = frozenset()) -> list[str]:
  """`n` distinct text lines cut from detokenized `sentences` (see the module docstring).

  Each pass p chunks every sentence into consecutive runs of k ~ U{1..max_words} words (fewer
  when the run would exceed max_chars; a word longer than max_chars is skipped) with
  `default_rng((seed, stream, p))`, shuffles the chunks, and appends the new ones not in
  `exclude`. Raises ValueError when `_MAX_PASSES` passes (or a pass that adds no new line) leave
  fewer than n lines.
  """
  if max_words < 1 or max_chars < 1:
    raise ValueError(f"max_words ({max_words}) and max_chars ({max_chars}) must be >= 1")
  words = [s.split(" ") for s in sentences]
  lines: list[str] = []
  seen = set(exclude)
  for p in range(_MAX_PASSES):
    if len(lines) >= n:
      break
    rng = np.random.default_rng((seed, stream, p))
    chunks = []
    for sentence in words:
      ks = rng.integers(1, max_words + 1, size=len(sentence))
      start = 0
      while start < len(sentence):
        k = int(ks[start])
        line = " ".join(sentence[start:start + k])
        while k > 1 and len(line) > max_chars:
          k -= 1
          line = " ".join(sentence[start:start + k])
        if len(line) <= max_chars and _line_ok(line):
          chunks.append(line)
        start += k
    before = len(lines)
    for j in rng.permutation(len(chunks)):
      line = chunks[j]
      if line not in seen:
        seen.add(line)
        lines.append(line)
    if len(lines) == before:  # saturated (e.g. max_words=1: every pass cuts the same words)
      break
  if len(lines) < n:
    raise ValueError(f"only {len(lines)} distinct text lines of <= {max_words} words and <= "
                     f"{max_chars} characters in these sentences, {n} requested: lower the "
                     "number of lines or raise max_words / max_chars")
  return lines[:n]


def read_sentences(files: Sequence[str], data_dir: str | None = None) -> list[str]:
  """Detokenized WikiSplit complex sentences (column 1) of ``<data_dir>/<file>.tsv``, in order.

  data_dir defaults to ``$EDJAX_DATA_DIR/wiki_split``.
  """
  data_dir = data_dir or resources.wiki_split_dir()
  sentences = []
  for name in files:
    path = os.path.join(data_dir, f"{name}.tsv")
    if not os.path.isfile(path):
      raise FileNotFoundError(
          f"WikiSplit file {path} not found: set data.data_dir (or EDJAX_DATA_DIR) to the folder "
          "holding tune.tsv / validation.tsv / test.tsv")
    sentences.extend(detokenize(source) for source, _ in pipeline.read_tsv(path))
  return sentences


def wiki_split_lines(num_train: int, num_eval: int, *, seed: int = 0, max_words: int = 4,
                     max_chars: int = 24, data_dir: str | None = None
                     ) -> tuple[list[str], list[str]]:
  """(training lines from tune + validation, eval lines from test minus the training lines)."""
  train = chunk_lines(read_sentences(TRAIN_FILES, data_dir), num_train, seed=seed,
                      stream=SPLITS["train"], max_words=max_words, max_chars=max_chars)
  evals = chunk_lines(read_sentences(EVAL_FILES, data_dir), num_eval, seed=seed,
                      stream=SPLITS["eval"], max_words=max_words, max_chars=max_chars,
                      exclude=frozenset(train))
  return train, evals


# ----------------------------------------------------------------------------- rendering


@dataclasses.dataclass(frozen=True)
class RenderParams:
  """How one line is drawn (all drawn by `RenderedOCR.params`)."""
  font: str            # a file name of FONT_FILES
  font_size: int       # requested pixel size (reduced when the text does not fit)
  angle: float         # rotation in degrees (counter-clockwise)
  x_frac: float        # horizontal position of the text box in the free space, 0 = left margin
  y_frac: float        # vertical position, 0 = top margin
  background: float    # gray level at the horizontal center
  gradient: float      # background change from the left to the right edge (gray levels)
  foreground: float    # text gray level (background - foreground >= MIN_CONTRAST)
  blur: float          # gaussian blur radius in pixels (0 = none)
  noise_std: float     # gaussian pixel noise (gray levels)
  noise_seed: int


def font_dir() -> str:
  """matplotlib's bundled TrueType fonts (DejaVu)."""
  import matplotlib
  return os.path.join(matplotlib.get_data_path(), "fonts", "ttf")


@functools.lru_cache(maxsize=512)
def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
  path = os.path.join(font_dir(), name)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"font {path} not found: fonts must be TrueType files of "
                            "matplotlib's mpl-data/fonts/ttf (e.g. DejaVuSans.ttf)")
  return ImageFont.truetype(path, size, layout_engine=ImageFont.Layout.BASIC)


def margins(height: int, width: int) -> tuple[int, int]:
  """(vertical, horizontal) margin in pixels kept free of text on each side of the canvas."""
  return max(1, round(0.05 * height)), max(2, round(0.03 * width))


def _text_mask(text: str, font: str, size: int, angle: float) -> np.ndarray:
  """Anti-aliased ink of `text`, cropped to its ink box: uint8 [h, w] (255 = ink)."""
  f = _font(font, size)
  left, top, right, bottom = f.getbbox(text)
  pad = size // 2 + 2
  while True:  # the canvas must hold all ink: grow it if ink touches its border
    im = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(im).text((pad - left, pad - top), text, font=f, fill=255)
    if angle:
      im = im.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    a = np.asarray(im)
    if not (a[0].any() or a[-1].any() or a[:, 0].any() or a[:, -1].any()):
      break
    pad *= 2
  box = im.getbbox()
  if box is None:
    raise ValueError(f"text {text!r} draws no ink: lines need a visible character")
  return np.asarray(im.crop(box))


def fit_mask(text: str, params: RenderParams, height: int, width: int) -> np.ndarray:
  """The ink mask of `text` [h, w] at the largest font size <= params.font_size that fits the
  canvas inside the margins (resized down below MIN_FONT_SIZE)."""
  my, mx = margins(height, width)
  avail_h, avail_w = height - 2 * my, width - 2 * mx
  size = params.font_size
  mask = _text_mask(text, params.font, size, params.angle)
  while (mask.shape[0] > avail_h or mask.shape[1] > avail_w) and size > MIN_FONT_SIZE:
    scale = min(avail_h / mask.shape[0], avail_w / mask.shape[1])
    size = max(MIN_FONT_SIZE, min(size - 1, int(size * scale)))
    mask = _text_mask(text, params.font, size, params.angle)
  if mask.shape[0] > avail_h or mask.shape[1] > avail_w:
    scale = min(avail_h / mask.shape[0], avail_w / mask.shape[1])
    new_w = max(1, min(avail_w, int(mask.shape[1] * scale)))
    new_h = max(1, min(avail_h, int(mask.shape[0] * scale)))
    mask = np.asarray(Image.fromarray(mask).resize((new_w, new_h), Image.Resampling.BILINEAR))
  return mask


def render(text: str, params: RenderParams, height: int = 32, width: int = 128) -> np.ndarray:
  """`text` drawn with `params` on a [height, width] canvas: uint8 [height, width, 3] (gray)."""
  mask = fit_mask(text, params, height, width)  # [h, w]
  my, mx = margins(height, width)
  h, w = mask.shape
  y0 = my + int(round(params.y_frac * (height - 2 * my - h)))
  x0 = mx + int(round(params.x_frac * (width - 2 * mx - w)))
  alpha = np.zeros((height, width), np.float32)
  alpha[y0:y0 + h, x0:x0 + w] = mask.astype(np.float32) / 255.0
  ramp = np.linspace(-0.5, 0.5, width, dtype=np.float32) * np.float32(params.gradient)
  background = np.clip(np.float32(params.background) + ramp, 0, 255)[None, :]  # [1, width]
  gray = background * (1 - alpha) + np.float32(params.foreground) * alpha  # [height, width]
  gray = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
  if params.blur > 0:
    gray = np.asarray(Image.fromarray(gray).filter(ImageFilter.GaussianBlur(params.blur)))
  if params.noise_std > 0:
    noise = np.random.default_rng(params.noise_seed).standard_normal((height, width))
    gray = np.clip(np.rint(gray + params.noise_std * noise), 0, 255).astype(np.uint8)
  return np.repeat(gray[:, :, None], 3, axis=2)  # [height, width, 3]


class RenderedOCR:
  """Text lines and their renders: example i is a pure function of (seed, split, i).

  `image(i)` renders on demand (nothing cached). `fonts` is a tuple of file names in
  `font_dir()`.
  """

  def __init__(self, lines: Sequence[str], *, seed: int = 0, split: str = "train",
               height: int = 32, width: int = 128, fonts: Sequence[str] = FONT_FILES):
    if split not in SPLITS:
      raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
    if height < 16 or width < 32:
      raise ValueError(f"the canvas must be at least 16 x 32 pixels (height x width), got "
                       f"{height} x {width}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
      raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    bad = [t for t in lines if not _line_ok(t)]
    if bad:
      raise ValueError(f"{len(bad)} lines are not printable ASCII with a letter or digit, e.g. "
                       f"{bad[0]!r}: the fonts and the uncased tokenizers need such text")
    if not fonts:
      raise ValueError("fonts is empty: give at least one TrueType file name, e.g. DejaVuSans.ttf")
    for name in fonts:
      _font(name, MIN_FONT_SIZE)  # fail now on a missing font
    self.lines = list(lines)
    self.seed, self.split = int(seed), split
    self.height, self.width = int(height), int(width)
    self.fonts = tuple(fonts)

  def __len__(self) -> int:
    return len(self.lines)

  def text(self, i: int) -> str:
    """The target text of example i: exactly the rendered string."""
    return self.lines[i]

  def params(self, i: int) -> RenderParams:
    """The render parameters of example i, drawn from `default_rng((seed, split, i))`."""
    if not 0 <= i < len(self.lines):
      raise IndexError(f"example {i} out of range [0, {len(self.lines)})")
    rng = np.random.default_rng((self.seed, SPLITS[self.split], int(i)))
    u = rng.random(10)
    background = 120 + 135 * u[3]
    return RenderParams(
        font=self.fonts[int(rng.integers(len(self.fonts)))],
        font_size=int(round(self.height * (0.45 + 0.35 * u[0]))),
        angle=float(0.0 if u[1] < 0.5 else 5.0 * (u[2] - 0.5)),  # half: within +-2.5 degrees
        x_frac=float(u[4]), y_frac=float(u[5]),
        background=float(background),
        gradient=float(30 * (u[6] - 0.5)),
        foreground=float((background - MIN_CONTRAST) * u[7]),
        blur=float(0.0 if u[8] < 0.6 else 0.3 + 0.6 * (u[8] - 0.6) / 0.4),
        noise_std=float(10 * u[9]),
        noise_seed=int(rng.integers(2**63)))

  def image(self, i: int) -> np.ndarray:
    """Example i: uint8 [height, width, 3]."""
    return render(self.lines[i], self.params(i), self.height, self.width)

  def images(self, idx) -> np.ndarray:
    """Examples idx: uint8 [n, height, width, 3]."""
    idx = np.asarray(idx, np.int64).reshape(-1)
    out = np.empty((len(idx), self.height, self.width, 3), np.uint8)
    for k, i in enumerate(idx):
      out[k] = self.image(int(i))
    return out


def from_wiki_split(num_train: int, num_eval: int, *, seed: int = 0, height: int = 32,
                    width: int = 128, max_words: int = 4, max_chars: int = 24,
                    data_dir: str | None = None) -> tuple[RenderedOCR, RenderedOCR]:
  """(train, eval) `RenderedOCR` of `wiki_split_lines` (same seed for text and rendering)."""
  train, evals = wiki_split_lines(num_train, num_eval, seed=seed, max_words=max_words,
                                  max_chars=max_chars, data_dir=data_dir)
  return (RenderedOCR(train, seed=seed, split="train", height=height, width=width),
          RenderedOCR(evals, seed=seed, split="eval", height=height, width=width))


def save_sample_grid(path: str, n: int = 16, *, seed: int = 0, split: str = "eval",
                     num_train: int = 50000, cols: int = 4, zoom: int = 2,
                     data_dir: str | None = None) -> str:
  """Saves the first n examples of `split` as one PNG grid, each render enlarged `zoom` times
  above its target text; returns `path`. With the defaults these are the first n eval examples
  of the default ``rendered_ocr`` data config (`edjax.data.get_config("rendered_ocr")`)."""
  if n < 1 or cols < 1 or zoom < 1:
    raise ValueError(f"n ({n}), cols ({cols}) and zoom ({zoom}) must be >= 1")
  if split not in SPLITS:
    raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
  train, evals = from_wiki_split(max(n, num_train), n, seed=seed, data_dir=data_dir)
  data = train if split == "train" else evals
  h, w = data.height * zoom, data.width * zoom
  caption, gap = 14, 4
  rows = -(-n // cols)
  grid = Image.new("RGB", (cols * (w + gap) + gap, rows * (h + caption + gap) + gap), "white")
  draw = ImageDraw.Draw(grid)
  for k in range(n):
    r, c = divmod(k, cols)
    x, y = gap + c * (w + gap), gap + r * (h + caption + gap)
    grid.paste(Image.fromarray(data.image(k)).resize((w, h), Image.Resampling.NEAREST), (x, y))
    draw.text((x, y + h + 1), repr(data.text(k)), font=_font("DejaVuSansMono.ttf", 10),
              fill=(180, 0, 0))
  image_format = os.path.splitext(path)[1].lstrip(".") or "png"
  return fileio.atomic_write(path, lambda tmp: grid.save(tmp, format=image_format))


# ----------------------------------------------------------------------------- the dataset

DEFAULTS = dict(
    num_train=50000,        # training lines, distinct, from WikiSplit tune + validation
    eval_examples=500,      # eval lines, distinct, from WikiSplit test, none of them a train line
    image_height=32,        # rendered canvas height (>= 16); the image processor then resizes
    image_width=128,        # rendered canvas width (>= 32)
    max_words=4,            # words per line, 1..max_words
    max_chars=24,           # characters per line, spaces included
    max_target_length=32,   # label length, eos included (a longer line is an error, never cut)
    data_dir="",            # the folder of the WikiSplit TSVs ("": $EDJAX_DATA_DIR/wiki_split)
    render_seed=0,          # seed of the lines and of every render, independent of the training
                            # seed, so runs with different seeds see the same data
    target_units="subwords",  # or 'characters': one WordPiece piece per character (g ##u ##n),
                              # decoding to the same text; lets a recogniser spell rare words
)
_MINIMUMS = dict(num_train=1, eval_examples=1, image_height=16, image_width=32, max_words=1,
                 max_chars=1, max_target_length=2)


def _read_config(data_config) -> dict:
  """The checked settings of a ``rendered_ocr`` data config (missing / None / "" = DEFAULTS)."""
  out = {k: positive_int(data_config, k, DEFAULTS[k], minimum)
         for k, minimum in _MINIMUMS.items()}
  out["render_seed"] = positive_int(data_config, "render_seed", DEFAULTS["render_seed"], minimum=0)
  out["data_dir"] = config_value(data_config, "data_dir", None)
  units = config_value(data_config, "target_units", DEFAULTS["target_units"])
  if units not in ("subwords", "characters"):
    raise ValueError(f"data.target_units must be 'subwords' or 'characters', got {units!r}")
  out["characters"] = units == "characters"
  return out


def _build(data_config, decoder_tokenizer, image_processor, *, with_train: bool):
  """(train ImageTextData or None, eval lines, eval ImageTextData, settings)."""
  cfg = _read_config(data_config)
  train_lines, eval_lines = wiki_split_lines(
      cfg["num_train"], cfg["eval_examples"], seed=cfg["render_seed"],
      max_words=cfg["max_words"], max_chars=cfg["max_chars"], data_dir=cfg["data_dir"])
  canvas = dict(seed=cfg["render_seed"], height=cfg["image_height"], width=cfg["image_width"])
  targets = dict(max_target_length=cfg["max_target_length"], characters=cfg["characters"])
  train = None
  if with_train:
    train = vision_pipeline.ImageTextData(RenderedOCR(train_lines, split="train", **canvas),
                                          train_lines, decoder_tokenizer, image_processor,
                                          **targets)
  evals = vision_pipeline.ImageTextData(RenderedOCR(eval_lines, split="eval", **canvas),
                                        eval_lines, decoder_tokenizer, image_processor, **targets)
  return train, eval_lines, evals, cfg


def _eval_set(eval_lines, evals, process_index, process_count) -> EvalSet:
  examples = [(f"rendered_ocr:test:{i}", text) for i, text in enumerate(eval_lines)]
  return EvalSet(examples, evals, process_index=process_index, process_count=process_count)


def build_rendered_ocr_eval(data_config, *, encoder_tokenizer=None, decoder_tokenizer,
                            image_processor, process_index: int = 0,
                            process_count: int = 1) -> EvalSet:
  """The ``rendered_ocr`` `EvalSet` alone (the training lines are cut, to exclude them, not
  rendered)."""
  _, eval_lines, evals, _ = _build(data_config, decoder_tokenizer, image_processor,
                                   with_train=False)
  return _eval_set(eval_lines, evals, process_index, process_count)


@registry.register_dataset("rendered_ocr", modality="image", defaults=DEFAULTS,
                           build_eval=build_rendered_ocr_eval)
def build_rendered_ocr(data_config, *, encoder_tokenizer=None, decoder_tokenizer,
                       image_processor, global_batch_size: int, seed: int,
                       process_index: int = 0, process_count: int = 1
                       ) -> tuple[IndexedStream, EvalSet]:
  """(IndexedStream, EvalSet) of the ``rendered_ocr`` dataset (keys: `DEFAULTS`)."""
  t0 = time.time()
  train, eval_lines, evals, cfg = _build(data_config, decoder_tokenizer, image_processor,
                                         with_train=True)
  stream = IndexedStream(train, global_batch_size=global_batch_size, seed=seed,
                         process_index=process_index, process_count=process_count)
  logging.info("data rendered_ocr: %d train / %d eval lines (<= %d words, <= %d chars) on a "
               "%d x %d canvas, labels of mean length %.1f, in %.1f s", len(train), len(evals),
               cfg["max_words"], cfg["max_chars"], cfg["image_height"], cfg["image_width"],
               float(train.label_len.mean()), time.time() - t0)
  return stream, _eval_set(eval_lines, evals, process_index, process_count)


if __name__ == "__main__":  # python -m edjax.data.ocr samples.png
  print(save_sample_grid(sys.argv[1] if len(sys.argv) > 1 else "ocr_samples.png"))
