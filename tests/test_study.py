"""The warm-starting study's plumbing: arm configs, disjoint dev / test subsets, curves, baseline."""

from __future__ import annotations

import json

import ml_collections
import pytest

from configs import wikisplit_study as study
from edjax.data import pipeline


def test_arms_differ_only_in_initialisation():
  warm = study.get_config("arm=warm,lr=5e-4")
  rand = study.get_config("arm=random_init,lr=1e-3")
  share = study.get_config("arm=share,lr=5e-4")
  assert (warm.model.random_init, warm.model.tie_encoder_decoder) == (False, False)
  assert (rand.model.random_init, rand.model.tie_encoder_decoder) == (True, False)
  assert (share.model.random_init, share.model.tie_encoder_decoder) == (False, True)
  assert rand.optimizer.learning_rate == 1e-3
  for c in (warm, rand, share):  # the same budget and evaluation for every arm
    assert (c.total_steps, c.batch_size, c.data.max_source_length, c.data.max_target_length,
            c.data.eval_offset, c.data.eval_examples, c.eval.num_beams) == (
                study.STEPS, study.BATCH, 48, 48, study.DEV_OFFSET, study.DEV_EXAMPLES, 1)
    assert c.model.encoder == warm.model.encoder and c.model.decoder == warm.model.decoder


@pytest.mark.parametrize("arg", ["arm=warm", "lr=1e-3", "arm=bart,lr=1e-3", "arm=warm,lr=x",
                                 "arm=warm,lr=1e-3,steps=5", "warm"])
def test_bad_arguments_are_rejected(arg):
  with pytest.raises(ValueError):
    study.get_config(arg)


def _pairs(offset: int, n: int):
  cfg = ml_collections.ConfigDict(dict(name="wiki_split", eval_split="test", eval_examples=n,
                                       eval_offset=offset))
  return pipeline.eval_pairs(cfg)


def test_dev_and_test_subsets_are_disjoint_slices_of_one_permutation():
  test = _pairs(study.TEST_OFFSET, study.TEST_EXAMPLES)
  dev = _pairs(study.DEV_OFFSET, study.DEV_EXAMPLES)
  assert len(test) == study.TEST_EXAMPLES and len(dev) == study.DEV_EXAMPLES
  assert not set(test) & set(dev)
  assert _pairs(0, study.DEV_OFFSET + study.DEV_EXAMPLES) == test + dev
  with pytest.raises(ValueError, match="eval_offset"):
    _pairs(5000, 10)
  with pytest.raises(ValueError, match="eval_offset"):
    _pairs(-1, 10)


def test_read_curve_keeps_eval_rows(tmp_path):
  from experiments import warm_start_study as runner
  rows = [{"step": 20, "train/loss": 3.0}, {"step": 150, "eval/loss": 2.5, "eval/sari": 30.0},
          {"step": 300, "eval/loss": 2.0, "eval/sari": 40.0}]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  curve = runner.read_curve(str(tmp_path))
  assert sorted(curve) == [150, 300] and curve[300]["eval/sari"] == 40.0
  assert runner.read_curve(str(tmp_path / "missing")) == {}
  assert runner.run_name("share", 5e-4) == "share_lr0.0005"


def test_echo_baseline_copies_the_input():
  from experiments import warm_start_study as runner
  out = runner.echo_baseline(0, 200)
  assert 0 < out["eval/sari"] < 100 and 0 < out["eval/bleu"] < 100
  assert out["eval/exact_match"] < 5  # a split sentence almost never equals its source
  assert out["eval/mean_reference_words"] > out["eval/mean_output_words"]  # splits add words
