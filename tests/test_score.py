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
