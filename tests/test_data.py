"""Data layer: the WikiSplit tfds builder, the train / eval pipeline contract, tfds text datasets."""

from __future__ import annotations

import os
import zipfile

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

import edjax.data
from edjax import resources
from edjax.data import pipeline, streams, wiki_split
from edjax.processing.tokenizers import Tokenizer, roundtrip_texts

S, T = 48, 40  # static source / target lengths of these tests


def _raw_rows(split: str) -> list[tuple[str, str]]:
  path = os.path.join(resources.wiki_split_dir(), f"{split}.tsv")
  assert os.path.exists(path), (f"{path} missing: set EDJAX_DATA_DIR to the folder that holds "
                                "wiki_split/")
  with open(path, encoding="utf-8", newline="") as f:
    return [tuple(line.rstrip("\n").split("\t")) for line in f]


@pytest.fixture(scope="module")
def tok(minilm_dir) -> Tokenizer:
  return Tokenizer.from_dir(minilm_dir)


def _cfg(**kw) -> ml_collections.ConfigDict:
  cfg = edjax.data.get_config(kw.pop("name", "wiki_split"))
  cfg.max_source_length, cfg.max_target_length = S, T
  cfg.update(kw)
  return cfg


def _build(cfg, encoder_tokenizer, decoder_tokenizer, **kw):
  return edjax.data.build_dataset(cfg, encoder_tokenizer=encoder_tokenizer,
                                  decoder_tokenizer=decoder_tokenizer, **kw)


@pytest.fixture(scope="module")
def wiki(tok):
  """(train stream, eval set) of WikiSplit tune+validation / test, global batch 8, seed 0."""
  return _build(_cfg(eval_examples=50), tok, tok, global_batch_size=8, seed=0)


# ----------------------------------------------------------------------------- WikiSplit builder


def test_builder_prepares_offline_from_the_shared_dir(tmp_path):
  builder = wiki_split.WikiSplit(data_dir=str(tmp_path))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=resources.wiki_split_dir()))
  assert builder.name == "edjax_wiki_split" and str(builder.version) == "1.0.0"
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      "tune": 5000, "validation": 5000, "test": 5000}
  downloads = tmp_path / "downloads"
  assert not downloads.exists() or not [p for p in downloads.rglob("*") if p.is_file()]
  ds = tfds.load("edjax_wiki_split", split="test", data_dir=str(tmp_path), download=False)
  rows = [(ex["complex_sentence"].decode(), ex["simple_sentences"].decode())
          for ex in tfds.as_numpy(ds)]
  assert rows == _raw_rows("test")  # all 5000, byte for byte, in file order
  assert list(wiki_split.iterate_builder("tune", str(tmp_path))) == _raw_rows("tune")


class _FakeDownloadManager:
  """No manual dir; `download` maps URLs to local files (the online code path, offline)."""

  def __init__(self, files: dict[str, str]):
    self.files, self.requested = files, None

  @property
  def manual_dir(self):
    raise AssertionError("Manual directory not enabled.")

  def download(self, urls: dict[str, str]) -> dict[str, str]:
    self.requested = urls
    return {k: self.files[os.path.basename(u)] for k, u in urls.items()}


def test_builder_downloads_all_four_files_when_none_is_local(tmp_path, monkeypatch):
  rows = {s: _raw_rows(s)[:3] for s in ("tune", "validation", "test")}
  rows["train"] = _raw_rows("tune")[3:7]
  monkeypatch.setenv("EDJAX_DATA_DIR", str(tmp_path / "empty"))
  files = {}
  for split, rs in rows.items():
    text = "".join(f"{a}\t{b}\n" for a, b in rs)
    path = tmp_path / f"blob_{split}"  # tfds names downloads by hash: no suffix to rely on
    if split == "train":
      with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("train.tsv", text)
    else:
      path.write_text(text, encoding="utf-8")
    files[wiki_split.FILES[split]] = str(path)
  dl = _FakeDownloadManager(files)
  gens = wiki_split.WikiSplit(data_dir=str(tmp_path / "tfds"))._split_generators(dl)
  assert dl.requested == {s: wiki_split.URL + wiki_split.FILES[s] for s in wiki_split.SPLITS}
  assert dl.requested["train"].endswith("wiki-split/raw/master/train.tsv.zip")
  for split, gen in gens.items():
    got = [(k, ex["complex_sentence"], ex["simple_sentences"]) for k, ex in gen]
    assert got == [(i, a, b) for i, (a, b) in enumerate(rows[split])], split


def test_builder_uses_local_files_only_when_present(tmp_path, monkeypatch):
  monkeypatch.setenv("EDJAX_DATA_DIR", str(tmp_path))  # $EDJAX_DATA_DIR/wiki_split is the fallback
  (tmp_path / "wiki_split").mkdir()
  (tmp_path / "wiki_split" / "test.tsv").write_text("a b .\tc . <::::> d .\n", encoding="utf-8")

  class NoNetwork(_FakeDownloadManager):
    def download(self, urls):
      raise AssertionError("offline: must not download")

  gens = wiki_split.WikiSplit(data_dir=str(tmp_path / "tfds"))._split_generators(NoNetwork({}))
  assert list(gens) == ["test"]
  assert [ex for _, ex in gens["test"]] == [
      {"complex_sentence": "a b .", "simple_sentences": "c . <::::> d ."}]


def test_load_wiki_split_and_target_text(tmp_path):
  pairs = wiki_split.load_wiki_split("test")
  raw = _raw_rows("test")
  assert len(pairs) == 5000 and [s for s, _ in pairs] == [s for s, _ in raw]
  assert all("<::::>" not in t for _, t in pairs)
  assert pairs[0][1] == raw[0][1].replace(" <::::> ", " ")
  assert wiki_split.target_text(raw[0][1]) == pairs[0][1] == wiki_split.target_text(pairs[0][1])
  with zipfile.ZipFile(tmp_path / "train.tsv.zip", "w") as zf:  # train as released: zipped
    zf.writestr("train.tsv", "x y .\tx . <::::> y .\n")
  assert wiki_split.load_wiki_split("train", str(tmp_path)) == [("x y .", "x . y .")]
  with pytest.raises(ValueError, match="unknown WikiSplit split"):
    wiki_split.load_wiki_split("dev")


# ----------------------------------------------------------------------------- pipeline contract


def test_static_shapes_and_label_convention(wiki, tok):
  stream, _ = wiki
  assert (stream.num_examples, stream.global_batch_size, stream.local_batch_size) == (10000, 8, 8)
  for step in (0, 1, 1249, 1250, 10_000):
    b = stream.batch(step)
    assert {k: (v.shape, v.dtype) for k, v in b.items()} == {
        "input_ids": ((8, S), np.int32), "attention_mask": ((8, S), np.int32),
        "labels": ((8, T), np.int32), "decoder_attention_mask": ((8, T), np.int32)}
  b = stream.batch(3)
  mask, dmask, labels = b["attention_mask"], b["decoder_attention_mask"], b["labels"]
  assert (b["input_ids"][:, 0] == tok.bos_id).all()  # encoder input: [CLS] ... [SEP]
  assert (b["input_ids"][mask == 0] == tok.pad_id).all()
  assert ((labels == -100) == (dmask == 0)).all() and (dmask[:, 0] == 1).all()
  assert (labels[:, 0] != tok.bos_id).all()  # no start token in the labels
  last = dmask.sum(1) - 1
  assert (labels[np.arange(8), last] == tok.eos_id).all()  # ... and [SEP] last
  assert (np.diff(dmask, axis=1) <= 0).all() and (np.diff(mask, axis=1) <= 0).all()
  # the labels are the tokenized target text, truncated to T with [SEP] kept
  pairs = [p for s in ("tune", "validation") for p in wiki_split.load_wiki_split(s)]
  idx = stream.indices(3)
  want, want_mask = tok.encode_targets([pairs[i][1] for i in idx], T, pad_to=T)
  np.testing.assert_array_equal(labels, np.where(want_mask > 0, want, -100))
  src, _ = tok.encode_batch([pairs[i][0] for i in idx], S, pad_to=S)
  np.testing.assert_array_equal(b["input_ids"], src)
  # the model's decoder input: start token first, shifted labels, pad after
  import edjax
  dec_in = np.asarray(edjax.shift_tokens_right(labels, tok.pad_id, tok.bos_id))
  assert (dec_in[:, 0] == tok.bos_id).all()
  np.testing.assert_array_equal(dec_in[:, 1:][dmask[:, 1:] > 0], labels[:, :-1][dmask[:, 1:] > 0])


def test_deterministic_per_seed_and_resumable(wiki, tok):
  stream, _ = wiki
  again, _ = _build(_cfg(eval_examples=5), tok, tok, global_batch_size=8, seed=0)
  # `again` is asked for step 700 first: no state carries over from earlier steps
  for step in (700, 0, 5, 1250, 700):
    for k, v in stream.batch(step).items():
      np.testing.assert_array_equal(again.batch(step)[k], v)
  other = streams.IndexedStream(stream.data, global_batch_size=8, seed=1)
  assert not np.array_equal(other.batch(0)["input_ids"], stream.batch(0)["input_ids"])
  fresh = streams.IndexedStream(stream.data, global_batch_size=8, seed=0)
  assert np.array_equal(fresh.batch(123)["labels"], stream.batch(123)["labels"])


def test_host_slices_partition_the_global_batch(wiki):
  stream, _ = wiki
  one = streams.IndexedStream(stream.data, global_batch_size=24, seed=3)
  hosts = [streams.IndexedStream(stream.data, global_batch_size=24, seed=3, process_index=p,
                                process_count=2) for p in range(2)]
  assert hosts[0].local_batch_size == 12
  for step in (0, 7, 416, 417):  # 417 crosses the end of epoch 0 (10000 / 24 = 416.7)
    parts = [h.batch(step) for h in hosts]
    for k, v in one.batch(step).items():
      np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), v)


def test_every_example_once_per_epoch(wiki):
  stream, _ = wiki
  seen = np.concatenate([stream.indices(s) for s in range(1250)])  # 10000 / 8 steps
  assert sorted(seen.tolist()) == list(range(10000))
  np.testing.assert_array_equal(seen, stream.permutation(0))
  # a batch size that does not divide N: batches wrap into the next epoch's permutation
  data = pipeline.Tokenized(np.zeros((10, 4), np.int32), np.full(10, 2, np.int32),
                            np.zeros((10, 3), np.int32), np.full(10, 2, np.int32))
  small = streams.IndexedStream(data, global_batch_size=4, seed=9)
  flat = np.concatenate([small.indices(s) for s in range(5)])
  np.testing.assert_array_equal(flat, np.concatenate([small.permutation(0), small.permutation(1)]))
  np.testing.assert_array_equal(small.permutation(1),
                                np.random.default_rng((9, 1)).permutation(10))


def test_eval_set(wiki, tok):
  _, ev = wiki
  assert len(ev.examples) == 50
  test_pairs = wiki_split.load_wiki_split("test")
  order = np.random.default_rng(pipeline.EVAL_SUBSET_SEED).permutation(5000)[:50]
  assert ev.examples == [test_pairs[i] for i in order]  # fixed subset, any training seed
  batches = list(ev.batches(16))
  assert len(batches) == 4 == ev.num_batches(16)
  for b in batches:
    assert b["input_ids"].shape == (16, S) and b["labels"].shape == (16, T)
    assert b["valid"].shape == (16,) and b["valid"].dtype == np.int32
  assert batches[-1]["valid"].tolist() == [1, 1] + [0] * 14
  np.testing.assert_array_equal(np.concatenate([b["index"][b["valid"] > 0] for b in batches]),
                                np.arange(50))
  first = tok.encode_batch([s for s, _ in ev.examples[:16]], S, pad_to=S)[0]
  np.testing.assert_array_equal(batches[0]["input_ids"], first)
  # 'file' order: the first N rows
  _, ev_file = _build(_cfg(eval_examples=3, eval_order="file"), tok, tok,
                              global_batch_size=8, seed=0)
  assert ev_file.examples == test_pairs[:3]


def test_roundtrip_texts_match_detokenized_predictions(tok):
  ref = "' Bandolier ' , a free iTunes app , was released . It tells the story ."
  out = roundtrip_texts([ref, "x"], tok)
  assert out[0] == tok.decode_batch(tok.encode_targets([ref], 64)[0])[0]
  assert out[0].startswith("' bandolier ', a free itunes app, was released.")  # uncased, respaced
  assert out[1] == "x"


def test_tsv_dataset(tmp_path, tok):
  (tmp_path / "train.tsv").write_text(
      "".join(f"source {i} .\ttarget {i} . <::::> more .\n" for i in range(6)), encoding="utf-8")
  (tmp_path / "eval.tsv").write_text("a .\tb .\n", encoding="utf-8")
  stream, ev = _build(
      _cfg(name="tsv", tsv_train=str(tmp_path / "train.tsv"), tsv_eval=str(tmp_path / "eval.tsv")),
      tok, tok, global_batch_size=4, seed=0)
  assert stream.num_examples == 6 and ev.examples == [("a .", "b .")]
  i = int(stream.indices(0)[0])
  want, want_mask = tok.encode_targets([f"target {i} . more ."], T, pad_to=T)
  np.testing.assert_array_equal(stream.batch(0)["labels"][:1], np.where(want_mask > 0, want, -100))


def test_encode_targets_appends_eos_without_a_post_processor():
  """GPT-2 style byte-level BPE: no special tokens added by the tokenizer, bos == eos."""
  import tokenizers
  from tokenizers import decoders, models, pre_tokenizers
  alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
  vocab = {c: i for i, c in enumerate(alphabet)}
  vocab["<|endoftext|>"] = len(vocab)
  raw = tokenizers.Tokenizer(models.BPE(vocab, []))
  raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  raw.decoder = decoders.ByteLevel()
  gpt = Tokenizer(raw, {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"})
  eos = vocab["<|endoftext|>"]
  ids, mask = gpt.encode_targets(["ab", "abcdefgh"], 5, pad_to=6)
  assert ids.tolist()[0][:3] == [vocab["a"], vocab["b"], eos] and mask.tolist()[0] == [1] * 3 + [0] * 3
  assert ids.tolist()[1][:5] == [vocab[c] for c in "abcd"] + [eos] and mask[1].sum() == 5


# ----------------------------------------------------------------------------- tfds text datasets


@pytest.mark.parametrize("name", ["cnn_dailymail", "xsum"])
def test_tfds_summarization_pipelines(name, tok):
  with tfds.testing.mock_data(num_examples=10):
    cfg = _cfg(name=name, eval_examples=5)
    streams = [_build(cfg, tok, tok, global_batch_size=4, seed=0, process_index=p,
                              process_count=2) for p in range(2)]
    single, ev = _build(cfg, tok, tok, global_batch_size=4, seed=0)
  assert single.num_examples == 10 and len(ev.examples) == 5
  for step in (0, 2, 3):  # step 2 crosses into epoch 1
    b = single.batch(step)
    assert {k: v.shape for k, v in b.items()} == {
        "input_ids": (4, S), "attention_mask": (4, S), "labels": (4, T),
        "decoder_attention_mask": (4, T)}
    assert ((b["labels"] == -100) == (b["decoder_attention_mask"] == 0)).all()
    assert (b["input_ids"][:, 0] == tok.bos_id).all() and (b["labels"][:, 0] != tok.bos_id).all()
    for k, v in b.items():
      np.testing.assert_array_equal(np.concatenate([s.batch(step)[k] for s, _ in streams]), v)
  eb = next(ev.batches(4))
  assert eb["input_ids"].shape == (4, S) and eb["valid"].tolist() == [1] * 4
  assert all(isinstance(s, str) and isinstance(t, str) and s for s, t in ev.examples)


# ----------------------------------------------------------------------------- errors


def test_clear_errors(tmp_path, tok):
  with pytest.raises(ValueError, match="unknown dataset name 'squad'"):
    _build(ml_collections.ConfigDict(dict(name="squad")), tok, tok, global_batch_size=8,
                   seed=0)
  with pytest.raises(ValueError, match="unknown dataset name"):
    edjax.data.get_config("squad")
  with pytest.raises(ValueError, match="not divisible by process_count 3"):
    _build(_cfg(), tok, tok, global_batch_size=8, seed=0, process_index=0, process_count=3)
  with pytest.raises(ValueError, match="process_index 2 is not in"):
    _build(_cfg(), tok, tok, global_batch_size=8, seed=0, process_index=2, process_count=2)
  with pytest.raises(ValueError, match="non-negative"):
    _build(_cfg(), tok, tok, global_batch_size=8, seed=-1)
  missing = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="nowhere.*does not exist"):
    _build(_cfg(data_dir=missing), tok, tok, global_batch_size=8, seed=0)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    wiki_split.read_wiki_split("test", missing)
  with pytest.raises(FileNotFoundError, match="cnn_dailymail"):  # not prepared, no download
    _build(_cfg(name="cnn_dailymail", data_dir=missing, download=False), tok, tok,
                   global_batch_size=8, seed=0)
  with pytest.raises(FileNotFoundError, match="TSV file"):
    _build(_cfg(name="tsv", tsv_train=missing, tsv_eval=missing), tok, tok,
                   global_batch_size=8, seed=0)
  with pytest.raises(ValueError, match="needs data.tsv_train and data.tsv_eval"):
    _build(_cfg(name="tsv"), tok, tok, global_batch_size=8, seed=0)
  with pytest.raises(ValueError, match="eval_order"):
    _build(_cfg(eval_order="random"), tok, tok, global_batch_size=8, seed=0)
  with pytest.raises(ValueError, match="step must be >= 0"):
    streams.IndexedStream(pipeline.Tokenized(np.zeros((2, 2)), np.ones(2, np.int32),
                                            np.zeros((2, 2)), np.ones(2, np.int32)),
                         global_batch_size=2, seed=0).batch(-1)


# ----------------------------------------------------------------------------- registry


def test_registry_names_modalities_and_defaults():
  assert sorted(edjax.data.DATASETS) == ["cnn_dailymail", "coco_captions", "rendered_ocr", "tsv",
                                         "wiki_split", "xsum"]
  assert {n: edjax.data.modality(n) for n in edjax.data.DATASETS} == {
      "wiki_split": "text", "tsv": "text", "cnn_dailymail": "text", "xsum": "text",
      "rendered_ocr": "image", "coco_captions": "image"}
  assert edjax.data.modality("cnn_dailymail:3.4.0") == "text"
  assert edjax.data.modality("coco_captions/2014") == "image"
  for name, spec in edjax.data.DATASETS.items():
    cfg = edjax.data.get_config(name)
    assert cfg.name == name and {k: cfg[k] for k in spec.defaults} == dict(spec.defaults)
  wiki = edjax.data.get_config("wiki_split")
  assert (wiki.max_source_length, wiki.train_splits, wiki.eval_split) == (128, ("tune", "validation"),
                                                                         "test")
  assert edjax.data.get_config("xsum").eval_split == "validation"
  with pytest.raises(ValueError, match="unknown dataset name 'squad'"):
    edjax.data.modality("squad")


def test_build_dataset_checks_its_inputs(tok):
  with pytest.raises(ValueError, match="needs encoder_tokenizer"):
    edjax.data.build_dataset(_cfg(), decoder_tokenizer=tok, global_batch_size=8, seed=0)
  with pytest.raises(ValueError, match="needs image_processor"):
    edjax.data.build_dataset(edjax.data.get_config("rendered_ocr"), decoder_tokenizer=tok,
                             global_batch_size=8, seed=0)
  with pytest.raises(ValueError, match="data.name is not set"):
    edjax.data.build_dataset(ml_collections.ConfigDict(dict(eval_examples=3)),
                             encoder_tokenizer=tok, decoder_tokenizer=tok, global_batch_size=8,
                             seed=0)


def test_streams_declare_their_contract(wiki, tok):
  stream, ev = wiki
  assert stream.random_access is True and isinstance(stream, streams.TrainStream)
  assert isinstance(stream.data, streams.Rows) and isinstance(ev, streams.EvalSet)
  from edjax.data import coco_captions
  assert coco_captions.CocoTrainStream.random_access is False
  alone = edjax.data.build_eval_set(_cfg(eval_examples=50), encoder_tokenizer=tok,
                                    decoder_tokenizer=tok)
  assert alone.examples == ev.examples and alone.references == ev.references
  np.testing.assert_array_equal(next(alone.batches(8))["labels"], next(ev.batches(8))["labels"])
