"""edjax.score: per-sequence log-likelihood equal to what transformers' loss implies."""

from __future__ import annotations

import functools
import tempfile

import numpy as np
import pytest
import torch

import edjax
from edjax.testing.hf_utils import hf_encoder_decoder


@functools.lru_cache(maxsize=None)
def built(dec: str):
  hf = hf_encoder_decoder("bert", dec, 32, 48, seed=5)
  directory = tempfile.mkdtemp(prefix=f"edjax-score-{dec}-")
  hf.save_pretrained(directory)
  model, params = edjax.from_pretrained(directory)
  return hf, model, params


@pytest.mark.parametrize("dec", ["bert", "gpt2"])
def test_score_equals_transformers_loss(dec):
  hf, model, params = built(dec)
  rng = np.random.default_rng(0)
  ids = rng.integers(4, 99, (3, 8))
  mask = np.ones_like(ids)
  ids[2, 5:], mask[2, 5:] = 0, 0
  labels = rng.integers(4, model.config.decoder.vocab_size, (3, 6))
  labels[1, 4:] = -100
  labels[2, 2:] = -100
  out = edjax.score(model, params, ids, mask, labels=labels)
  np.testing.assert_array_equal(np.asarray(out.num_tokens), [6, 4, 2])
  for i in range(3):
    with torch.no_grad():
      ref = hf(input_ids=torch.tensor(ids[i:i + 1]), attention_mask=torch.tensor(mask[i:i + 1]),
               labels=torch.tensor(labels[i:i + 1])).loss
    n = int((labels[i] != -100).sum())
    np.testing.assert_allclose(float(out.log_likelihood[i]), -float(ref) * n, atol=1e-5 * n, rtol=0)
    np.testing.assert_allclose(float(out.mean_log_likelihood[i]), -float(ref), atol=1e-5, rtol=0)


def test_score_errors_and_no_recompile():
  _, model, params = built("bert")
  ids = np.full((2, 5), 7)
  with pytest.raises(ValueError, match="needs labels"):
    edjax.score(model, params, ids, labels=None)
  with pytest.raises(ValueError, match="labels hold ids outside"):
    edjax.score(model, params, ids, labels=np.full((2, 3), 1000))
  edjax.score(model, params, ids, labels=np.full((2, 3), 5))
  size = edjax.scoring.jit_score._cache_size()
  edjax.score(model, params, ids + 1, labels=np.full((2, 3), 6))
  assert edjax.scoring.jit_score._cache_size() == size


def test_predict_score_cli(tmp_path, minilm_dir, wiki_sentences):
  """`experiments.predict --score` over source<TAB>target lines == edjax.score on the same ids."""
  import json
  import os
  import shutil
  import subprocess
  import sys

  from edjax.processing.tokenizers import TOKENIZER_FILES, Tokenizer
  tiny = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
              intermediate_size=37)
  cfg = edjax.EncoderDecoderConfig.from_encoder_decoder_configs(
      edjax.BertConfig(**tiny), edjax.BertConfig(**tiny), decoder_start_token_id=101,
      pad_token_id=0, eos_token_id=102)
  model, params = edjax.from_config(cfg, rng=3)
  ckpt = tmp_path / "ckpt"
  edjax.save_pretrained(model, params, str(ckpt))
  for name in TOKENIZER_FILES:
    if os.path.exists(os.path.join(minilm_dir, name)):
      shutil.copy(os.path.join(minilm_dir, name), ckpt / name)
  pairs = wiki_sentences[:3]
  (tmp_path / "pairs.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  run = subprocess.run([sys.executable, "-m", "experiments.predict", f"--checkpoint={ckpt}",
                        f"--input={tmp_path / 'pairs.tsv'}", f"--output={tmp_path / 'out.jsonl'}",
                        "--score", "--batch_size=2"], cwd=repo, capture_output=True, text=True,
                       timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
  assert [r["input"] for r in rows] == [s for s, _ in pairs]
  tok = Tokenizer.from_dir(str(ckpt))
  ids, mask = tok.encode_batch([s for s, _ in pairs], 512)
  labels, label_mask = tok.encode_targets([t for _, t in pairs], 512)
  want = edjax.score(model, params, ids, mask, labels=np.where(label_mask > 0, labels, -100))
  np.testing.assert_allclose([r["log_likelihood"] for r in rows], np.asarray(want.log_likelihood),
                             atol=1e-4, rtol=1e-5)
  assert [r["num_tokens"] for r in rows] == np.asarray(want.num_tokens).tolist()
  bad = tmp_path / "bad.tsv"
  bad.write_text("no tab here\n", encoding="utf-8")
  run = subprocess.run([sys.executable, "-m", "experiments.predict", f"--checkpoint={ckpt}",
                        f"--input={bad}", f"--output={tmp_path / 'x.jsonl'}", "--score"], cwd=repo,
                       capture_output=True, text=True, timeout=300)
  assert run.returncode != 0 and "line 1 is not 'source<TAB>target'" in run.stderr
  assert "Traceback" not in run.stderr
