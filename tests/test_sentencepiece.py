"""SentencePiece checkpoints (BertGeneration's spiece.model, XLM-R's / CamemBERT's
sentencepiece.bpe.model) read by `Tokenizer.from_dir` equal transformers' tokenizers.

A tiny SentencePiece model (unigram or BPE, ~300 pieces) is trained here on WikiSplit's tune
sentences, wrapped in transformers' slow tokenizer of the checkpoint type and saved with
`save_pretrained` the way HF checkpoints ship it: without tokenizer.json (edjax converts the
.model file) and, for XLM-R, with the fast tokenizer's tokenizer.json too. On 60 WikiSplit test
sentences (complex sentences and their splits, which hold BertGeneration's `<::::>` separator)
pieces, ids with special tokens, padded and truncated batches, labels and decode must equal
`AutoTokenizer(use_fast=False)` and `AutoTokenizer(use_fast=True)`.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest

from conftest import wiki_split_dir
from edjax.processing.tokenizers import Tokenizer, roundtrip_texts

spm = pytest.importorskip("sentencepiece")
transformers = pytest.importorskip("transformers")

# spm trainer ids per checkpoint type: XLM-R's / CamemBERT's fairseq alignment assumes
# SentencePiece's defaults (<unk>=0 <s>=1 </s>=2, no pad); BertGeneration's checkpoints have
# pad 0, eos 1, bos 2 (its config's defaults).
TRAINER_IDS = {
    "bert-generation": dict(pad_id=0, eos_id=1, bos_id=2, unk_id=3),
    # SentencePiece's defaults, no <pad> piece: transformers adds <pad> and <::::> after the
    # pieces (tokenizer_config.json's added_tokens_decoder), edjax at the same ids
    "bert-generation-no-pad": dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1),
    "xlm-roberta": dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1),
    "camembert": dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1),
}
SLOW = {"bert-generation": "BertGenerationTokenizer",
        "bert-generation-no-pad": "BertGenerationTokenizer", "xlm-roberta": "XLMRobertaTokenizer",
        "camembert": "CamembertTokenizer"}
CASES = [(kind, algo, False) for kind in SLOW for algo in ("unigram", "bpe")]
CASES += [("xlm-roberta", "unigram", True), ("xlm-roberta", "bpe", True), ("camembert", "bpe", True)]


def _read(name: str, n: int) -> list[str]:
  with open(os.path.join(wiki_split_dir(), name), encoding="utf-8") as f:
    rows = [line.rstrip("\n").split("\t") for line in itertools.islice(f, n)]
  return [text for row in rows for text in row]


@pytest.fixture(scope="module")
def test_texts() -> list[str]:
  texts = _read("test.tsv", 30)  # 30 pairs: 60 texts
  assert len(texts) == 60 and any("<::::>" in t for t in texts)
  return texts + ["  leading and  double spaces ", "Ünïcödé ½ café – naïve 東京"]


@pytest.fixture(scope="module")
def spm_models(tmp_path_factory):
  """{(kind, algo): path of a trained .model}; trained once per module (a second each)."""
  sentences = _read("tune.tsv", 1500)
  root = tmp_path_factory.mktemp("spm")
  out = {}
  for kind, algo in {(k, a) for k, a, _ in CASES}:
    prefix = str(root / f"{kind}-{algo}")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_prefix=prefix, vocab_size=300, model_type=algo,
        character_coverage=0.995, minloglevel=2, **TRAINER_IDS[kind])
    out[kind, algo] = prefix + ".model"
  return out


def _checkpoint(spm_models, tmp_path, kind, algo, with_json):
  """An HF-style tokenizer dir saved by transformers' slow (or fast) tokenizer class."""
  # CamemBERT's cases also ask decode to join " ," -> "," (clean_up_tokenization_spaces)
  kwargs = dict(vocab_file=spm_models[kind, algo], clean_up_tokenization_spaces=kind == "camembert")
  slow = getattr(transformers, SLOW[kind])(**kwargs)
  path = str(tmp_path / "ckpt")
  if with_json:
    fast = getattr(transformers, SLOW[kind] + "Fast")(**kwargs)
    fast.save_pretrained(path)
    assert os.path.exists(os.path.join(path, "tokenizer.json"))
  else:
    slow.save_pretrained(path)
    assert not os.path.exists(os.path.join(path, "tokenizer.json"))
  assert any(n.endswith(".model") for n in os.listdir(path)), os.listdir(path)
  return path


@pytest.mark.parametrize("kind,algo,with_json", CASES,
                         ids=[f"{k}-{a}{'-json' if j else ''}" for k, a, j in CASES])
@pytest.mark.parametrize("use_fast", [False, True])
def test_sentencepiece_checkpoint_equals_transformers(spm_models, test_texts, tmp_path, kind,
                                                      algo, with_json, use_fast):
  path = _checkpoint(spm_models, tmp_path, kind, algo, with_json)
  hf = transformers.AutoTokenizer.from_pretrained(path, use_fast=use_fast)
  ours = Tokenizer.from_dir(path)
  # special ids and the vocabulary size
  assert ours.bos_id == (hf.bos_token_id if hf.bos_token_id is not None else hf.cls_token_id)
  assert ours.eos_id == (hf.eos_token_id if hf.eos_token_id is not None else hf.sep_token_id)
  assert (ours.pad_id, ours.unk_id) == (hf.pad_token_id, hf.unk_token_id)
  assert ours.vocab_size == len(hf), (ours.vocab_size, len(hf))
  if not kind.startswith("bert-generation"):  # the fairseq layouts (camembert-base: <s> 5, </s> 6)
    want_ids = (0, 1, 2, 3) if kind == "xlm-roberta" else (5, 1, 6, 3)
    assert (ours.bos_id, ours.pad_id, ours.eos_id, ours.unk_id) == want_ids
  # pieces and ids with special tokens, text by text
  unk_seen = False
  for text in test_texts:
    enc = ours.tok.encode(text)
    assert enc.ids == hf(text)["input_ids"], text
    # (the slow tokenizers' `tokenize` spells an unknown piece as its text, not as <unk>)
    assert [ours.tok.id_to_token(i) for i in enc.ids] == hf.convert_ids_to_tokens(enc.ids), text
    unk_seen |= ours.unk_id in enc.ids
  assert unk_seen  # the 99.5 % character coverage leaves rare characters out: <unk> is exercised
  # a padded batch, and a truncated one
  ids, mask = ours.encode_batch(test_texts, max_length=512)
  want = hf(test_texts, padding=True)
  np.testing.assert_array_equal(ids, want["input_ids"])
  np.testing.assert_array_equal(mask, want["attention_mask"])
  ids16, mask16 = ours.encode_batch(test_texts, max_length=16)
  want16 = hf(test_texts, padding=True, truncation=True, max_length=16)
  np.testing.assert_array_equal(ids16, want16["input_ids"])
  np.testing.assert_array_equal(mask16, want16["attention_mask"])
  # labels: the text's tokens then eos (HF's text_target convention for these tokenizers)
  labels, _ = ours.encode_targets(test_texts, max_length=512)
  for row, text in zip(labels, test_texts):
    toks = hf(text, add_special_tokens=False)["input_ids"]
    assert list(row[:len(toks) + 1]) == toks + [hf.eos_token_id]
  # decode of the padded batch, with and without special tokens. transformers' slow tokenizers
  # strip the text (convert_tokens_to_string), the fast ones keep the trailing space that a
  # dropped final <unk> leaves ("a b <unk>" -> "a b "); edjax decodes as the fast ones do.
  norm = (lambda texts: texts) if hf.is_fast else (lambda texts: [t.strip() for t in texts])
  assert norm(ours.decode_batch(ids)) == hf.batch_decode(want["input_ids"], skip_special_tokens=True)
  assert norm(roundtrip_texts(test_texts, ours)) == [
      hf.decode(hf(t, add_special_tokens=False)["input_ids"], skip_special_tokens=True)
      for t in test_texts]
  assert hf.clean_up_tokenization_spaces == ours.clean_up_spaces == (kind == "camembert")
  rows = [list(r[m > 0]) for r, m in zip(ids, mask)]
  assert ours.decode_batch(np.asarray(rows[:1]), skip_special_tokens=False) == [
      hf.decode(rows[0], skip_special_tokens=False)]


def test_unknown_sentencepiece_checkpoint_type_is_a_clear_error(spm_models, tmp_path):
  path = tmp_path / "t5ish"
  path.mkdir()
  with open(spm_models["xlm-roberta", "unigram"], "rb") as f:
    (path / "spiece.model").write_bytes(f.read())
  (path / "tokenizer_config.json").write_text('{"tokenizer_class": "T5Tokenizer"}')
  with pytest.raises(ValueError, match="T5Tokenizer.*tokenizer.json"):
    Tokenizer.from_dir(str(path))
  (path / "tokenizer_config.json").write_text("{}")
  (path / "config.json").write_text('{"model_type": "bert-generation"}')
  assert Tokenizer.from_dir(str(path)).vocab_size >= 300  # model_type names the layout


def test_encoder_decoder_dir_with_only_spiece_model(spm_models, tmp_path):
  """google/roberta2roberta_L-24_wikisplit-style: config.json (encoder-decoder of bert-generation
  halves) + spiece.model, no tokenizer_config.json: the layout and special tokens come from the
  encoder's model_type, equal to transformers' AutoTokenizer of that dir."""
  hf_cfg = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(
      transformers.BertGenerationConfig(vocab_size=300), transformers.BertGenerationConfig(
          vocab_size=300, is_decoder=True, add_cross_attention=True))
  path = str(tmp_path / "r2r")
  hf_cfg.save_pretrained(path)
  with open(spm_models["bert-generation", "unigram"], "rb") as f, open(
      os.path.join(path, "spiece.model"), "wb") as g:
    g.write(f.read())
  hf = transformers.AutoTokenizer.from_pretrained(path)
  ours = Tokenizer.from_dir(path)
  assert type(hf).__name__ == "BertGenerationTokenizer"
  assert (ours.bos_id, ours.eos_id, ours.pad_id, ours.unk_id) == (
      hf.bos_token_id, hf.eos_token_id, hf.pad_token_id, hf.unk_token_id) == (2, 1, 0, 3)
  texts = _read("test.tsv", 10)
  ids, _ = ours.encode_batch(texts, max_length=512)
  np.testing.assert_array_equal(ids, hf(texts, padding=True)["input_ids"])
