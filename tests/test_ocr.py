"""Rendered-text OCR data (edjax.data.ocr) and the image-to-text pipeline (vision_pipeline)."""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np
import pytest
from PIL import Image, ImageDraw

import edjax.data
from edjax.data import ocr, vision_pipeline
from edjax.processing.images import ImageProcessor
from edjax.processing.tokenizers import Tokenizer

H, W = 32, 128  # render canvas
PH, PW = 48, 192  # pixel_values (the image processor's size)
NUM_TRAIN, NUM_EVAL = 2000, 200


# ViTImageProcessor defaults, resizing the 32 x 128 renders to PH x PW: float32 [n, 3, PH, PW].
_processor = ImageProcessor.for_image_size(PH, PW)


@pytest.fixture(scope="module")
def tok(minilm_dir) -> Tokenizer:
  return Tokenizer.from_dir(minilm_dir)


@pytest.fixture(scope="module")
def lines() -> tuple[list[str], list[str]]:
  return ocr.wiki_split_lines(NUM_TRAIN, NUM_EVAL, seed=0)


@pytest.fixture(scope="module")
def train_set(lines) -> ocr.RenderedOCR:
  return ocr.RenderedOCR(lines[0], seed=0, split="train", height=H, width=W)


def _cfg(**kw) -> ml_collections.ConfigDict:
  cfg = edjax.data.get_config("rendered_ocr")
  cfg.update(dict(num_train=300, eval_examples=40))
  cfg.update(kw)
  return cfg


def _build(cfg, image_processor, decoder_tokenizer, **kw):
  return edjax.data.build_dataset(cfg, decoder_tokenizer=decoder_tokenizer,
                                  image_processor=image_processor, **kw)


@pytest.fixture(scope="module")
def built(tok):
  return _build(_cfg(), _processor, tok, global_batch_size=8, seed=0)


def _decode(tok: Tokenizer, labels: np.ndarray) -> list[str]:
  """Labels [n, length] (-100 padding) -> lowercased texts without whitespace."""
  return [_squash(t) for t in tok.decode_batch(np.where(labels == -100, tok.pad_id, labels))]


def _squash(text: str) -> str:
  return "".join(text.lower().split())


def _clean(params: ocr.RenderParams, **kw) -> ocr.RenderParams:
  """No noise, blur or gradient, black on white: every pixel of nonzero ink is off-white."""
  return dataclasses.replace(params, noise_std=0.0, blur=0.0, gradient=0.0, background=255.0,
                             foreground=0.0, **kw)


# ----------------------------------------------------------------------------- text lines


def test_detokenize_reads_naturally():
  assert ocr.detokenize("the band 's own words , ( 1990 ) ; it is n't $ 5 .") == (
      "the band's own words, (1990); it isn't $5.")
  assert ocr.detokenize("'' '' New York '' '' by the players ' union and ' Eden Black ' :") == (
      "\"New York\" by the players' union and 'Eden Black':")
  assert ocr.detokenize("a `` quoted '' word") == 'a "quoted" word'


def test_lines_are_deterministic_short_ascii_and_disjoint(lines):
  train, evals = lines
  assert (train, evals) == ocr.wiki_split_lines(NUM_TRAIN, NUM_EVAL, seed=0)
  other = ocr.wiki_split_lines(NUM_TRAIN, NUM_EVAL, seed=1)
  assert len(set(train) & set(other[0])) < NUM_TRAIN // 2
  assert ocr.wiki_split_lines(500, 50, seed=0)[0] == train[:500]  # prefixes are stable
  assert len(set(train)) == NUM_TRAIN and len(set(evals)) == NUM_EVAL
  assert not set(train) & set(evals)
  for line in train + evals:
    assert 1 <= len(line.split(" ")) <= 4 and len(line) <= 24, line
    assert line.isascii() and line.isprintable() and line == line.strip(), line
    assert " ," not in line and " 's" not in line and "( " not in line, line
  assert {len(line.split(" ")) for line in train} == {1, 2, 3, 4}
  # Disjoint by source: train lines come from tune + validation, eval lines from test.
  train_text = "\n".join(ocr.read_sentences(ocr.TRAIN_FILES))
  test_text = "\n".join(ocr.read_sentences(ocr.EVAL_FILES))
  assert all(line in train_text for line in train[:300])
  assert all(line in test_text for line in evals)
  assert sum(line in test_text for line in train[:300]) < 300  # test.tsv is another source


def test_chunk_lines_errors_when_the_text_is_too_small():
  assert ocr.chunk_lines(["one two three"], 2, seed=0, max_words=1, max_chars=5) in (
      ["one", "two"], ["one", "three"], ["two", "one"], ["two", "three"], ["three", "one"],
      ["three", "two"])
  with pytest.raises(ValueError, match="distinct text lines"):
    ocr.chunk_lines(["one two three"], 4, seed=0, max_words=1, max_chars=5)
  with pytest.raises(ValueError, match="max_words"):
    ocr.chunk_lines(["one"], 1, seed=0, max_words=0, max_chars=5)


# ----------------------------------------------------------------------------- rendering


def test_render_is_a_pure_function_of_seed_split_and_index(lines, train_set):
  idx = np.arange(0, 64)
  first = train_set.images(idx)
  assert first.dtype == np.uint8 and first.shape == (64, H, W, 3)
  np.testing.assert_array_equal(first, train_set.images(idx))
  again = ocr.RenderedOCR(lines[0], seed=0, split="train")
  np.testing.assert_array_equal(first[::-1], again.images(idx[::-1]))  # any order, new object
  np.testing.assert_array_equal(first[5], again.image(5))
  assert [train_set.text(i) for i in idx] == lines[0][:64]
  for other in (ocr.RenderedOCR(lines[0], seed=1), ocr.RenderedOCR(lines[0], split="eval")):
    differs = [not np.array_equal(first[i], other.image(i)) for i in range(16)]
    assert all(differs)
  assert (first[..., 0] == first[..., 1]).all() and (first[..., 0] == first[..., 2]).all()
  wide = ocr.RenderedOCR(lines[0][:4], height=48, width=320).images([0, 3])
  assert wide.shape == (2, 48, 320, 3)


def test_text_mask_holds_all_ink():
  """`_text_mask` (the renderer's tight ink box) equals the ink box of an independent draw on a
  large canvas, so no glyph part is lost before placement."""
  for text, font, size in [("Wgjpqy|([{", "DejaVuSerif.ttf", 26), ("f.", "DejaVuSans.ttf", 8),
                           ("'Tango\"; Q_", "DejaVuSans-Bold.ttf", 17),
                           ("jjj ~ ___", "DejaVuSansMono.ttf", 20)]:
    im = Image.new("L", (800, 200), 0)
    ImageDraw.Draw(im).text((100, 60), text, font=ocr._font(font, size), fill=255)
    left, top, right, bottom = im.getbbox()
    reference = np.asarray(im)[top:bottom, left:right]
    np.testing.assert_array_equal(ocr._text_mask(text, font, size, 0.0), reference)


def test_rendered_text_is_never_cut_off(lines, train_set):
  """On clean renders (black on white) of 300 lines - the 100 longest at the largest
  font size, rotated, pushed to either side - all the text's ink lies inside the margins, and the
  ink on the canvas is the whole fitted mask."""
  my, mx = ocr.margins(H, W)
  longest = sorted(range(NUM_TRAIN), key=lambda i: -len(lines[0][i]))[:100]
  scaled = 0
  for k, i in enumerate(longest + list(range(200))):
    params = train_set.params(i)
    if k < 100:
      params = dataclasses.replace(params, font_size=int(0.8 * H), angle=(-2.5, 2.5)[k % 2],
                                   x_frac=float(k % 2), y_frac=float(k // 2 % 2))
    params = _clean(params)
    gray = ocr.render(train_set.text(i), params, H, W)[..., 0].astype(int)  # [H, W]
    ink = gray != 255
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    assert cols[0] >= mx and cols[-1] < W - mx, (i, train_set.text(i))
    assert rows[0] >= my and rows[-1] < H - my, (i, train_set.text(i))
    mask = ocr.fit_mask(train_set.text(i), params, H, W)  # [h, w]
    box = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    assert box.shape == mask.shape and np.array_equal(box, mask > 0), i
    scaled += mask.shape[1] > 0.8 * (W - 2 * mx)
  assert scaled > 50  # the long lines filled the width (made to fit, not clipped)


def test_images_vary(lines, train_set):
  images = train_set.images(np.arange(200))[..., 0].astype(np.float32)  # [200, H, W]
  params = [train_set.params(i) for i in range(200)]
  assert {p.font for p in params} == set(ocr.FONT_FILES)
  assert np.ptp([p.font_size for p in params]) >= 8
  assert sum(p.angle != 0 for p in params) > 50 and sum(p.blur > 0 for p in params) > 30
  assert all(p.background - p.foreground >= ocr.MIN_CONTRAST for p in params)
  mean = images.mean((1, 2))  # [200] brightness
  contrast = np.percentile(images, 99, (1, 2)) - np.percentile(images, 1, (1, 2))  # [200]
  noise = np.abs(np.diff(images[:, :, :3], axis=2)).mean((1, 2))  # [200] left-margin roughness
  assert mean.std() > 15 and contrast.std() > 20 and noise.std() > 1
  dark = images < (mean[:, None, None] - 30)  # text pixels (text is darker than the background)
  left = np.array([np.flatnonzero(d.any(0))[0] for d in dark if d.any()])
  height = np.array([np.ptp(np.flatnonzero(d.any(1))) for d in dark if d.any()])
  assert left.std() > 5 and height.std() > 2


def test_rendered_ocr_rejects_bad_input(lines):
  with pytest.raises(ValueError, match="printable ASCII"):
    ocr.RenderedOCR(["caf\u00e9"])
  with pytest.raises(ValueError, match="printable ASCII"):
    ocr.RenderedOCR(["  "])
  with pytest.raises(ValueError, match="at least 16 x 32"):
    ocr.RenderedOCR(["word"], height=8)
  with pytest.raises(ValueError, match="split"):
    ocr.RenderedOCR(["word"], split="test")
  with pytest.raises(FileNotFoundError, match="font"):
    ocr.RenderedOCR(["word"], fonts=("NoSuchFont.ttf",))
  with pytest.raises(IndexError):
    ocr.RenderedOCR(["word"]).params(1)


def test_save_sample_grid(tmp_path, built):
  path = ocr.save_sample_grid(str(tmp_path / "grid.png"), n=6, cols=3, num_train=300)
  grid = np.asarray(Image.open(path))
  assert grid.shape == (2 * (2 * H + 14 + 4) + 4, 3 * (2 * W + 4) + 4, 3)
  _, eval_set = built  # the same lines and renders: render_seed 0, num_train 300
  for k, (r, c) in [(0, (0, 0)), (5, (1, 2))]:
    y, x = 4 + r * (2 * H + 14 + 4), 4 + c * (2 * W + 4)
    tile = eval_set.data.images.image(k).repeat(2, 0).repeat(2, 1)  # [2H, 2W, 3]
    np.testing.assert_array_equal(grid[y:y + 2 * H, x:x + 2 * W], tile)


# ----------------------------------------------------------------------------- vision pipeline


def test_labels_decode_back_to_the_lines(lines, tok):
  texts = lines[0] + lines[1]
  data = vision_pipeline.ImageTextData(ocr.RenderedOCR(texts), texts, tok, _processor,
                                       max_target_length=32)
  labels, length = data.labels, data.label_len  # [N, 32], [N]
  assert labels.dtype == np.int32 and labels.shape == (len(texts), 32)
  assert (labels[np.arange(len(texts)), length - 1] == tok.eos_id).all()
  assert not (labels == tok.unk_id).any() and not (labels[:, 0] == tok.bos_id).any()
  decoded = tok.decode_batch(labels)
  assert [_squash(d) for d in decoded] == [_squash(t) for t in texts]
  rows = data.rows(np.array([3, 0, 3]))
  expect, mask = tok.encode_targets([texts[3], texts[0], texts[3]], 32, pad_to=32)
  np.testing.assert_array_equal(rows["labels"], np.where(mask == 1, expect, -100))
  np.testing.assert_array_equal(rows["decoder_attention_mask"], mask)


def test_train_stream_is_pure_in_seed_and_step(built, tok):
  stream, _ = built
  assert stream.num_examples == 300 and stream.local_batch_size == 8
  b5 = stream.batch(5)
  assert set(b5) == {"pixel_values", "labels", "decoder_attention_mask"}
  assert b5["pixel_values"].dtype == np.float32 and b5["pixel_values"].shape == (8, 3, PH, PW)
  assert -1.0 <= b5["pixel_values"].min() and b5["pixel_values"].max() <= 1.0
  assert b5["labels"].dtype == np.int32 and b5["labels"].shape == (8, 32)
  assert b5["decoder_attention_mask"].dtype == np.int32
  np.testing.assert_array_equal(b5["decoder_attention_mask"], (b5["labels"] != -100).astype(int))
  stream.batch(40)  # another epoch in between: no state
  again, _ = _build(_cfg(), _processor, tok, global_batch_size=8, seed=0)
  for key in b5:
    np.testing.assert_array_equal(b5[key], stream.batch(5)[key])
    np.testing.assert_array_equal(b5[key], again.batch(5)[key])
  idx = stream.indices(5)
  np.testing.assert_array_equal(b5["pixel_values"], _processor(stream.data.images.images(idx)))
  assert _decode(tok, b5["labels"]) == [
      _squash(stream.data.images.text(i)) for i in idx]
  reseeded, _ = _build(_cfg(), _processor, tok, global_batch_size=8, seed=1)
  assert not np.array_equal(reseeded.indices(5), idx)
  hosts = [_build(_cfg(), _processor, tok, global_batch_size=8, seed=0,
                  process_index=p, process_count=2)[0] for p in (0, 1)]
  halves = [h.batch(5)["pixel_values"] for h in hosts]
  np.testing.assert_array_equal(np.concatenate(halves), b5["pixel_values"])


def test_render_seed_changes_data_not_training_order(built, tok):
  stream, eval_set = built
  other, other_eval = _build(_cfg(render_seed=3), _processor, tok,
                             global_batch_size=8, seed=0)
  np.testing.assert_array_equal(other.indices(2), stream.indices(2))
  assert other_eval.references != eval_set.references
  assert not np.array_equal(other.batch(2)["pixel_values"], stream.batch(2)["pixel_values"])


def test_eval_set(built, tok):
  stream, eval_set = built
  assert len(eval_set) == 40
  texts = eval_set.data.images.lines
  assert eval_set.examples == [(f"rendered_ocr:test:{i}", t) for i, t in enumerate(texts)]
  assert eval_set.references == texts and not set(texts) & set(stream.data.images.lines)
  batches = list(eval_set.batches(16))
  assert len(batches) == 3 and batches[-1]["valid"].tolist() == [1] * 8 + [0] * 8
  assert batches[-1]["index"].tolist() == list(range(32, 40)) + [32] * 8
  assert all(b["pixel_values"].shape == (16, 3, PH, PW) for b in batches)
  labels = np.concatenate([b["labels"][b["valid"] == 1] for b in batches])
  assert _decode(tok, labels) == [_squash(t) for t in texts]
  first = np.concatenate([b["pixel_values"] for b in eval_set.batches(16)])
  np.testing.assert_array_equal(first, np.concatenate([b["pixel_values"] for b in batches]))


@pytest.mark.parametrize("override, match", [
    (dict(num_train=0), "num_train"), (dict(eval_examples=-1), "eval_examples"),
    (dict(image_height=8), "image_height"), (dict(image_width=16), "image_width"),
    (dict(max_words=0), "max_words"), (dict(max_target_length=1), "max_target_length"),
    (dict(render_seed=-1), "render_seed"), (dict(num_train=2.5), "num_train"),
    (dict(name="coco"), "unknown dataset name 'coco'"),
    (dict(max_target_length=4), "raise data.max_target_length"),
    (dict(max_words=1, num_train=10**5), "distinct text lines"),
])
def test_bad_config_errors(tok, override, match):
  cfg = _cfg().to_dict()  # a plain dict works too (and takes the float)
  cfg.update(override)
  with pytest.raises(ValueError, match=match):
    _build(cfg, _processor, tok, global_batch_size=8, seed=0)


def test_bad_arguments_errors(tok, tmp_path):
  with pytest.raises(ValueError, match="divisible by process_count"):
    _build(_cfg(), _processor, tok, global_batch_size=7, seed=0,
           process_count=2)
  with pytest.raises(ValueError, match="seed"):
    _build(_cfg(), _processor, tok, global_batch_size=8, seed=-1)
  with pytest.raises(ValueError, match="callable"):
    _build(_cfg(), None, tok, global_batch_size=8, seed=0)
  with pytest.raises(FileNotFoundError, match="data_dir"):
    _build(_cfg(data_dir=str(tmp_path)), _processor, tok,
           global_batch_size=8, seed=0)
  for bad in (lambda x: x, lambda x: _processor(x).transpose(0, 2, 3, 1)):  # uint8, NHWC
    data = vision_pipeline.ImageTextData(ocr.RenderedOCR(["a word"]), ["a word"], tok, bad,
                                         max_target_length=8)
    with pytest.raises(ValueError, match="NCHW"):
      data.rows(np.array([0]))
  with pytest.raises(ValueError, match="one target per image"):
    vision_pipeline.ImageTextData(ocr.RenderedOCR(["a word"]), [], tok, _processor,
                                  max_target_length=8)


def test_character_targets_spell_words_in_the_same_vocabulary(tok, lines):
  """target_units='characters': one vocabulary piece per character, decoding to the text the
  usual subword labels decode to (so metrics and predict.py need nothing else)."""
  sample = lines[1][:40] + ["O'Neil's café", "(born 11", "1797 -- February"]
  for text in sample:
    pieces = tok.char_pieces(text)
    usual = tok.tok.encode(text, add_special_tokens=False).ids
    assert tok.decode_batch([pieces]) == tok.decode_batch([usual])
    words = [t.lstrip("#") for t in (tok.tok.id_to_token(i) for i in pieces)]
    assert all(len(w) == 1 for w in words) or "é" in text, words
  stream, eval_set = _build(
      _cfg(target_units="characters"), ImageProcessor.for_image_size(32, 128), tok,
      global_batch_size=8, seed=0)
  batch = next(eval_set.batches(8))
  decoded = _decode(tok, batch["labels"])
  assert [_squash(d) for d in decoded] == [_squash(t) for _, t in eval_set.examples[:8]]
  subword = _build(_cfg(), ImageProcessor.for_image_size(32, 128), tok,
                   global_batch_size=8, seed=0)[1]
  assert (next(eval_set.batches(8))["decoder_attention_mask"].sum()
          > next(subword.batches(8))["decoder_attention_mask"].sum())
  with pytest.raises(ValueError, match="target_units"):
    _build(_cfg(target_units="bytes"), ImageProcessor.for_image_size(32, 128),
           tok, global_batch_size=8, seed=0)


def test_character_targets_need_a_wordpiece_vocabulary():
  import tokenizers
  bpe = Tokenizer(tokenizers.Tokenizer(tokenizers.models.BPE()), {})
  with pytest.raises(ValueError, match="WordPiece"):
    bpe.char_pieces("abc")


def test_registry_builds_rendered_ocr(tok, built):
  stream, eval_set = edjax.data.build_dataset(_cfg(), decoder_tokenizer=tok,
                                              image_processor=_processor, global_batch_size=8,
                                              seed=0)
  assert stream.random_access is True
  for k, v in built[0].batch(3).items():
    np.testing.assert_array_equal(stream.batch(3)[k], v)
  alone = edjax.data.build_eval_set(_cfg(), decoder_tokenizer=tok, image_processor=_processor)
  assert alone.examples == eval_set.examples == built[1].examples
  np.testing.assert_array_equal(next(alone.batches(4))["pixel_values"],
                                next(eval_set.batches(4))["pixel_values"])
