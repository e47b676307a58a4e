"""edjax.data.coco_captions under tfds.testing.mock_data, and multi-reference metrics.

The stock random mock (`mock_data(num_examples=...)`) cannot serve this pipeline: with any
`decoders` (we read images undecoded) tfds mocks encode the random examples, and its random
Sequence features break on encoding (captions/objects sub-features of different lengths, and
text sequences that `from_generator` rejects, tfds 4.9.10). So `mock_data(as_dataset_fn=...)`
serves `_fake_split`: small JPEG / PNG images of random sizes (some gray) with 5 to 7 captions each,
in the structure the real builder returns for our PartialDecoding (image bytes, image/id,
captions/text), different per split, file order shuffled by ReadConfig.shuffle_seed like tfds.
"""

from __future__ import annotations

import io

import numpy as np
import PIL.Image
import pytest
import sacrebleu
import tensorflow as tf
import tensorflow_datasets as tfds

from edjax import metrics
import edjax.data
from edjax.data import coco_captions
from edjax.processing import images as images_lib
from edjax.processing.images import ImageProcessor
from edjax.processing.tokenizers import Tokenizer, roundtrip_references

NUM_IMAGES = {"train": 14, "restval": 6, "val": 7, "test": 5}
WORDS = ("a man woman dog cat riding sitting on the with red blue table street bus pizza two "
         "standing next to of in front small large").split()
BATCH = 8
MAX_LEN = 16


def _records(split: str) -> list[dict]:
  """The fake examples of one split (deterministic)."""
  index = list(NUM_IMAGES).index(split)
  rng = np.random.default_rng(index)
  out = []
  for i in range(NUM_IMAGES[split]):
    h, w = rng.integers(6, 48, size=2)
    yy, xx = np.mgrid[0:h, 0:w]
    pixels = (np.stack([xx * 5, yy * 5, xx * yy], -1) + rng.integers(0, 60, (h, w, 3))) % 256
    image = PIL.Image.fromarray(pixels.astype(np.uint8))
    if i % 5 == 3:
      image = image.convert("L")  # a gray JPEG, as some COCO images are
    buf = io.BytesIO()
    image.save(buf, "PNG" if i % 7 == 6 else "JPEG", quality=90)
    captions = [" ".join(rng.choice(WORDS, size=rng.integers(3, 12))) + (" ." if j % 2 else "  \n")
                for j in range(rng.integers(5, 8))]
    out.append({"image": buf.getvalue(), "image/id": 1000 * index + i,
                "captions": {"text": captions}})
  return out


def _fake_split(self, split, decoders=None, read_config=None, shuffle_files=False, **kwargs):
  """DatasetBuilder._as_dataset for mock_data: the records of `split` ('a+b' concatenates)."""
  del self, decoders, kwargs
  records = [r for name in str(split).split("+") for r in _records(name)]
  if shuffle_files and read_config is not None and read_config.shuffle_seed is not None:
    records = [records[i] for i in
               np.random.default_rng(read_config.shuffle_seed).permutation(len(records))]
  signature = {"image": tf.TensorSpec((), tf.string), "image/id": tf.TensorSpec((), tf.int64),
               "captions": {"text": tf.TensorSpec((None,), tf.string)}}
  return tf.data.Dataset.from_generator(lambda: iter(records), output_signature=signature)


@pytest.fixture()
def mock_coco():
  with tfds.testing.mock_data(as_dataset_fn=_fake_split):
    yield


@pytest.fixture(scope="module")
def tokenizer(minilm_dir) -> Tokenizer:
  return Tokenizer.from_dir(minilm_dir)


PROCESSOR = ImageProcessor.for_image_size(32, 32)


def _config(**overrides):
  config = edjax.data.get_config("coco_captions")  # an ml_collections.ConfigDict, as the trainer passes
  config.update(dict(eval_examples=5, max_target_length=MAX_LEN, image_shuffle_buffer=8,
                     shuffle_buffer=16, **overrides))
  return config


def _build(tokenizer, seed=0, process_index=0, process_count=1, **overrides):
  return coco_captions.build_coco_captions(
      _config(**overrides), PROCESSOR, tokenizer, global_batch_size=BATCH, seed=seed,
      process_index=process_index, process_count=process_count)


def _assert_same(a: dict, b: dict) -> None:
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _oracle(tokenizer, splits=("train", "restval")):
  """Per image: transformers-equal pixel_values [3, 32, 32] (PIL decode, numpy path) and the
  label rows of each of its captions."""
  records = [r for s in splits for r in _records(s)]
  pixels = PROCESSOR([images_lib.decode_image(r["image"]) for r in records])
  labels = [coco_captions.caption_labels(tokenizer, [coco_captions.normalize_caption(c) for c in
                                              r["captions"]["text"]], MAX_LEN)["labels"]
            for r in records]
  return records, pixels, labels


def test_train_batches_are_pairs_of_the_data(mock_coco, tokenizer):
  stream, _ = _build(tokenizer)
  records, pixels, labels = _oracle(tokenizer)
  seen = set()
  for step in range(3):
    batch = stream.batch(step)
    assert set(batch) == {"pixel_values", "labels", "decoder_attention_mask"}
    assert batch["pixel_values"].dtype == np.float32
    assert batch["pixel_values"].shape == (BATCH, 3, 32, 32)
    assert batch["labels"].dtype == batch["decoder_attention_mask"].dtype == np.int32
    assert batch["labels"].shape == batch["decoder_attention_mask"].shape == (BATCH, MAX_LEN)
    mask = batch["decoder_attention_mask"] > 0
    np.testing.assert_array_equal(batch["labels"] == -100, ~mask)
    ends = mask.sum(1) - 1
    assert np.all(batch["labels"][np.arange(BATCH), ends] == tokenizer.eos_id)
    assert np.all(batch["labels"][:, 0] != tokenizer.bos_id)
    for row in range(BATCH):  # each row: one image (exact pixels) with one of its captions
      diffs = np.abs(pixels - batch["pixel_values"][row]).reshape(len(records), -1).max(1)
      image = int(np.argmin(diffs))
      assert diffs[image] <= 1e-5, diffs[image]
      caption = [c for c in range(len(labels[image]))
                 if np.array_equal(labels[image][c], batch["labels"][row])]
      assert caption, (step, row)
      seen.add((image, caption[0]))
  assert len(seen) == 3 * BATCH  # no pair twice within an epoch
  total = sum(len(r["captions"]["text"]) for r in records)
  assert stream.steps_per_epoch == total // BATCH and stream.num_examples == total
  assert stream.epoch(stream.steps_per_epoch) == 1.0


def test_deterministic_and_seeded(mock_coco, tokenizer):
  a, _ = _build(tokenizer, seed=0)
  b, _ = _build(tokenizer, seed=0)
  c, _ = _build(tokenizer, seed=1)
  for step in range(3):
    _assert_same(a.batch(step), b.batch(step))
  assert not np.array_equal(a.batch(2)["labels"], c.batch(2)["labels"])


def test_resume_equals_uninterrupted(mock_coco, tokenizer):
  full, _ = _build(tokenizer)
  steps = full.steps_per_epoch  # counted: 15 global batches per epoch here
  sequential = [full.batch(step) for step in range(steps + 4)]  # crosses an epoch end
  _assert_same(full.batch(steps + 3), sequential[-1])  # the same step again: the same batch
  with pytest.raises(ValueError, match="reads forward only"):
    full.batch(2)
  resumed, _ = _build(tokenizer)
  _assert_same(resumed.batch(5), sequential[5])
  _assert_same(resumed.batch(6), sequential[6])
  across, _ = _build(tokenizer)
  _assert_same(across.batch(steps + 2), sequential[steps + 2])  # jump into epoch 1
  _assert_same(across.batch(steps + 3), sequential[steps + 3])
  assert not np.array_equal(sequential[0]["labels"], sequential[steps]["labels"])  # reshuffled


def test_hosts_slice_the_global_batch(mock_coco, tokenizer):
  whole, _ = _build(tokenizer)
  host0, _ = _build(tokenizer, process_index=0, process_count=2)
  host1, _ = _build(tokenizer, process_index=1, process_count=2)
  assert host0.local_batch_size == host1.local_batch_size == BATCH // 2
  for step in range(3):
    a, b, g = host0.batch(step), host1.batch(step), whole.batch(step)
    assert not np.array_equal(a["pixel_values"], b["pixel_values"])
    _assert_same({k: np.concatenate([a[k], b[k]]) for k in g}, g)


def test_eval_set(mock_coco, tokenizer):
  _, eval_set = _build(tokenizer, eval_offset=1)
  records = _records("val")[1:6]
  assert len(eval_set) == 5
  assert eval_set.examples == [(str(r["image/id"]), coco_captions.normalize_caption(
      r["captions"]["text"][0])) for r in records]
  refs = eval_set.references
  assert all(isinstance(r, list) for r in refs)
  assert refs == [[coco_captions.normalize_caption(c) for c in r["captions"]["text"]]
                  for r in records]
  assert all(not r.endswith(" ") and "\n" not in r for rs in refs for r in rs)
  batches = list(eval_set.batches(4))
  assert [b["valid"].tolist() for b in batches] == [[1, 1, 1, 1], [1, 0, 0, 0]]
  assert [b["index"].tolist() for b in batches] == [[0, 1, 2, 3], [4, 4, 4, 4]]
  expected = PROCESSOR([images_lib.decode_image(r["image"]) for r in records])
  got = np.concatenate([batches[0]["pixel_values"], batches[1]["pixel_values"][:1]])
  assert got.dtype == np.float32 and got.shape == (5, 3, 32, 32)
  assert np.abs(got - expected).max() <= 1e-5
  first = coco_captions.caption_labels(tokenizer, [e[1] for e in eval_set.examples], MAX_LEN)
  np.testing.assert_array_equal(np.concatenate([batches[0]["labels"], batches[1]["labels"][:1]]),
                                first["labels"])


def test_count_and_config_errors(mock_coco, tokenizer):
  with pytest.raises(ValueError, match="hold 7 .* fewer than global_batch_size=8"):
    _build(tokenizer, num_train_examples=7)
  stream, _ = _build(tokenizer, num_train_examples=9999)
  with pytest.raises(ValueError, match="num_train_examples=9999 but"):
    stream.count_examples()
  with pytest.raises(ValueError, match="data.name='coco'"):
    _build(tokenizer, name="coco")
  with pytest.raises(ValueError, match="unknown coco_captions split"):
    _build(tokenizer, train_splits=("train", "training"))
  with pytest.raises(ValueError, match="eval_split 'validation'"):
    _build(tokenizer, eval_split="validation")
  with pytest.raises(ValueError, match="cannot be batched"):
    coco_captions.build_coco_captions(_config(), ImageProcessor(do_resize=False), tokenizer,
                                      global_batch_size=BATCH, seed=0)


def test_missing_data_names_the_dir(tmp_path, tokenizer):
  with pytest.raises(FileNotFoundError, match=f"{tmp_path}.*tfds build coco_captions"):
    _build(tokenizer, data_dir=str(tmp_path))


# ----------------------------------------------------------------------------- metrics


PREDS = ["a man riding a red bus .", "two dogs on the street", "a small cat sitting"]
REFS = [["a man rides a red bus .", "a person on a bus", "the red bus and a man ."],
        ["two dogs standing in the street", "dogs on a street"],
        ["a cat sitting on a table", "small cat", "a tiny cat is sitting", "cat"]]


def test_multi_reference_bleu_equals_sacrebleu_streams():
  streams = [[refs[j] if j < len(refs) else None for refs in REFS] for j in range(4)]
  expected = sacrebleu.corpus_bleu(PREDS, streams, tokenize="13a").score
  assert metrics.bleu(PREDS, REFS) == pytest.approx(expected, abs=1e-12)
  single = metrics.bleu(PREDS, [refs[0] for refs in REFS])
  assert metrics.bleu(PREDS, [[refs[0]] for refs in REFS]) == single  # one-element lists
  assert metrics.bleu(PREDS, REFS) > single  # more references, more matched n-grams


def test_multi_reference_rouge_and_exact_match():
  out = metrics.rouge(["the red bus and a man ."], [REFS[0]])  # equal to the third reference
  assert out == {key: pytest.approx(100.0) for key in metrics.ROUGE_KEYS}
  out = metrics.rouge(["a person on a bus"], [REFS[0]])  # equal to the second
  assert out == {key: pytest.approx(100.0) for key in metrics.ROUGE_KEYS}
  best = max((metrics.rouge(["a man riding a red bus ."], [r]) for r in REFS[0]),
             key=lambda s: s["rouge1"])["rouge1"]
  assert metrics.rouge(PREDS[:1], REFS[:1])["rouge1"] == pytest.approx(best)
  assert metrics.exact_match(["small cat", "a cat", "x"], [REFS[2], REFS[2], ["y", "x"]]) == (
      pytest.approx(200 / 3))
  mixed = metrics.compute_metrics(["bleu", "rouge", "exact_match"], None, PREDS,
                                  [REFS[0], REFS[1][0], REFS[2]])  # a str is a 1-element list
  assert mixed["bleu"] == metrics.bleu(PREDS, [REFS[0], [REFS[1][0]], REFS[2]])


def test_multi_reference_errors():
  with pytest.raises(ValueError, match=r"\['cer'\] take exactly one reference"):
    metrics.compute_metrics(["bleu", "cer"], None, PREDS, REFS)
  with pytest.raises(ValueError, match="non-empty list"):
    metrics.bleu(PREDS, [REFS[0], [], REFS[2]])
  with pytest.raises(ValueError, match="one reference string per example"):
    metrics.wer(PREDS, REFS)


def test_roundtrip_references_keeps_the_lists(tokenizer):
  refs = [["A Man, riding."], ["Two DOGS", "dogs ( two )", "x"]]
  assert roundtrip_references(refs, tokenizer) == [
      ["a man, riding."], ["two dogs", "dogs ( two )", "x"]]
  assert coco_captions.normalize_caption(b" A  dog\n on a\tbed . ") == "A dog on a bed ."


def test_vit_gpt2_smoke_config_trains_on_coco(mock_coco, tmp_path):
  """configs/vit_gpt2.py:smoke end to end: ViT -> GPT-2 on (mocked) coco_captions, BLEU / ROUGE
  against every reference caption, an HF export with the image processor."""
  import os
  from configs import vit_gpt2
  from experiments import train
  config = vit_gpt2.get_config("smoke")
  final = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert final["step"] == config.total_steps and np.isfinite(final["eval/loss"])
  assert {"eval/bleu", "eval/rougeL", "eval/cider"} <= set(final)
  export = tmp_path / "run" / "export"
  assert os.path.exists(export / "preprocessor_config.json")
  assert ImageProcessor.from_dir(str(export)) == ImageProcessor.for_image_size(32, 32)


def test_cider_against_pycocoevalcap_and_its_properties():
  from pycocoevalcap.cider.cider import Cider
  refs = [["A man riding a horse.", "a person on a horse"], ["a cat on a table", "A cat, sitting."],
          ["two dogs in the snow", "dogs playing in snow"]]
  preds = ["a man riding a horse", "a dog on a table", "two dogs playing in the snow"]
  ours = metrics.cider(preds, refs)
  want, _ = Cider().compute_score(
      {0: ["a man riding a horse", "a person on a horse"], 1: ["a cat on a table", "a cat sitting"],
       2: ["two dogs in the snow", "dogs playing in snow"]}, {i: [p] for i, p in enumerate(preds)})
  assert abs(ours - 100 * want) < 1e-9
  assert metrics.cider(["x y z"] * 3, refs) == 0.0  # nothing shared with any reference
  assert metrics.compute_metrics(["cider"], None, preds, refs)["cider"] == ours
