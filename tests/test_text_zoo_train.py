"""The text-zoo recipes through the trainer: configs/bertgen2bertgen.py's smoke end to end (train,
eval, checkpoints, resume, HF export that transformers loads), its variants' shapes, and a
SentencePiece (XLM-R-style) tokenizer driving a tiny XLM-R pair through the same loop."""

from __future__ import annotations

import importlib
import itertools
import json
import os

import jax
import numpy as np
import pytest

import edjax
import edjax.data
from conftest import wiki_split_dir
from edjax.train import trainer as train_lib


def bertgen_config(variant: str = "smoke", **overrides):
  config = importlib.import_module("configs.bertgen2bertgen").get_config(variant)
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def train_losses(workdir: str) -> dict[int, float]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


class _Stop(Exception):
  pass


def test_bertgen_smoke_trains_resumes_and_exports(tmp_path, monkeypatch):
  import torch
  import transformers
  overrides = {"log_every_steps": 1, "checkpoint_every_steps": 3}
  straight = str(tmp_path / "straight")
  final = train_lib.train_and_evaluate(bertgen_config(**overrides), straight)
  config = bertgen_config(**overrides)
  losses = train_losses(straight)
  assert sorted(losses) == list(range(1, config.total_steps + 1))
  assert all(np.isfinite(v) for v in losses.values())
  assert final["step"] == config.total_steps and np.isfinite(final["eval/loss"])
  assert {"eval/sari", "eval/bleu"} <= set(final)
  assert sorted(os.listdir(os.path.join(straight, "checkpoints"))) == ["3", "6"]

  # Stopped after step 3 and rerun: the resumed run logs the same losses, bit for bit.
  resumed = str(tmp_path / "resumed")
  real_build = edjax.data.build_dataset

  def build_then_stop(*args, **kwargs):  # the stream dies when step 4 (index 3) is requested
    stream, eval_set = real_build(*args, **kwargs)
    real_batch = stream.batch

    def batch(step):
      if step == 3:
        raise _Stop()
      return real_batch(step)
    stream.batch = batch
    return stream, eval_set
  monkeypatch.setattr(edjax.data, "build_dataset", build_then_stop)
  with pytest.raises(_Stop):
    train_lib.train_and_evaluate(bertgen_config(**overrides), resumed)
  monkeypatch.setattr(edjax.data, "build_dataset", real_build)
  assert sorted(train_losses(resumed)) == [1, 2, 3]
  train_lib.train_and_evaluate(bertgen_config(**overrides), resumed)
  assert train_losses(resumed) == losses
  # A finished run rerun resumes at its end: nothing is trained twice.
  train_lib.train_and_evaluate(bertgen_config(**overrides), straight)
  assert train_losses(straight) == losses

  # The export is an HF EncoderDecoderModel of two bert-generation halves: edjax and transformers
  # load it (no missing / unexpected keys) and give the same logits.
  export = os.path.join(straight, "export")
  model, params = edjax.from_pretrained(export)
  assert model.config.encoder.model_type == model.config.decoder.model_type == "bert-generation"
  assert model.config.decoder.is_decoder and model.config.decoder.add_cross_attention
  hf, info = transformers.EncoderDecoderModel.from_pretrained(export, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  hf.eval()
  rng = np.random.RandomState(0)
  ids = rng.randint(999, 30000, (2, 9)).astype(np.int32)
  dec = rng.randint(999, 30000, (2, 5)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, 6:] = 0
  ours = model.apply({"params": params}, input_ids=ids, attention_mask=mask,
                     decoder_input_ids=dec).logits
  with torch.no_grad():
    theirs = hf(input_ids=torch.tensor(ids, dtype=torch.long),
                attention_mask=torch.tensor(mask, dtype=torch.long),
                decoder_input_ids=torch.tensor(dec, dtype=torch.long)).logits.numpy()
  np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4)
  assert os.path.exists(os.path.join(export, "vocab.txt"))  # the tokenizer travels with it


def test_bertgen_variants():
  default = bertgen_config("default")
  train_lib.check_config(default)
  assert default.model.encoder_config["model_type"] == "bert-generation"
  assert default.model.encoder_config["vocab_size"] == 30522 and 100 <= default.total_steps <= 1000
  assert not default.model.encoder and not default.init_from  # offline: nothing to download
  pod = bertgen_config("pod")
  assert pod.init_from == pod.data.tokenizer == "google/roberta2roberta_L-24_wikisplit"
  assert not pod.model.encoder_config and pod.eval.num_beams == 4 and pod.batch_size == 128
  xlmr = bertgen_config("xlmr2xlmr")
  assert xlmr.model.encoder == xlmr.model.decoder == xlmr.data.tokenizer == "xlm-roberta-base"
  with pytest.raises(ValueError, match="unknown variant"):
    bertgen_config("smok")


def test_xlmr_pair_trains_on_a_sentencepiece_tokenizer(tmp_path):
  """The xlmr2xlmr shape at toy size: a SentencePiece model trained here, saved as XLM-R's slow
  tokenizer (sentencepiece.bpe.model, no tokenizer.json), is the trainer's tokenizer; the model's
  special ids are XLM-R's (<s>=0, <pad>=1, </s>=2)."""
  spm = pytest.importorskip("sentencepiece")
  transformers = pytest.importorskip("transformers")
  with open(os.path.join(wiki_split_dir(), "tune.tsv"), encoding="utf-8") as f:
    texts = [t for line in itertools.islice(f, 1000) for t in line.rstrip("\n").split("\t")]
  prefix = str(tmp_path / "spm")
  spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_prefix=prefix,
                                 vocab_size=300, model_type="unigram", minloglevel=2)
  tok_dir = str(tmp_path / "xlmr_tok")
  hf_tok = transformers.XLMRobertaTokenizer(vocab_file=prefix + ".model")
  hf_tok.save_pretrained(tok_dir)
  tiny = dict(model_type="xlm-roberta", vocab_size=len(hf_tok), hidden_size=32,
              num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
              max_position_embeddings=130, pad_token_id=1, bos_token_id=0, eos_token_id=2,
              type_vocab_size=1, layer_norm_eps=1e-5)
  config = bertgen_config("smoke", total_steps=2, log_every_steps=1, eval_every_steps=2,
                          checkpoint_every_steps=2,
                          **{"model.encoder_config": tiny, "model.decoder_config": tiny,
                             "data.tokenizer": tok_dir})
  workdir = str(tmp_path / "run")
  final = train_lib.train_and_evaluate(config, workdir)
  assert sorted(train_losses(workdir)) == [1, 2] and np.isfinite(final["eval/loss"])
  model, params = edjax.from_pretrained(os.path.join(workdir, "export"))
  assert (model.config.decoder_start_token_id, model.config.pad_token_id,
          model.config.eos_token_id) == (0, 1, 2)
  assert all(x.dtype == np.float32 for x in jax.tree_util.tree_leaves(params))
  with open(os.path.join(workdir, f"predictions_{config.total_steps}.jsonl")) as f:
    assert all(isinstance(json.loads(line)["prediction"], str) for line in f)
