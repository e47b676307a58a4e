"""edjax.train.flops: the analytic train-step FLOP count against XLA's cost_analysis on CPU."""

import jax
import numpy as np
import pytest

from edjax.model_configs import EncoderDecoderConfig, config_from_dict
from edjax.models.encoder_decoder import model_for_config
from edjax.train import flops
from edjax.train.loss import token_loss

BERT = dict(model_type="bert", vocab_size=2000, hidden_size=128, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=512, max_position_embeddings=128,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def test_bert2bert_train_flops_match_xla_cost_analysis():
  batch, src, tgt = 2, 64, 32
  config = EncoderDecoderConfig.from_encoder_decoder_configs(
      config_from_dict(BERT), config_from_dict(BERT), decoder_start_token_id=1, eos_token_id=2,
      pad_token_id=0)
  model = model_for_config(config)
  params = model.param_shapes()
  rng = np.random.default_rng(0)
  data = dict(input_ids=rng.integers(3, 2000, size=(batch, src)).astype(np.int32),
              attention_mask=np.ones((batch, src), np.int32),
              labels=rng.integers(3, 2000, size=(batch, tgt)).astype(np.int32),
              decoder_attention_mask=np.ones((batch, tgt), np.int32))
  grad = jax.grad(lambda p, b: token_loss(model, p, b)[0])
  compiled = jax.jit(grad).lower(params, data).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  expected = flops.train_step_flops(config, batch, src, tgt)
  assert cost["flops"] > 0
  assert abs(expected - cost["flops"]) / cost["flops"] < 0.10, (expected, cost["flops"])


def test_peak_flops_table():
  assert flops.peak_flops("NVIDIA H200") == 989e12
  assert flops.peak_flops("TPU v4") == 275e12
  assert flops.peak_flops("cpu") is None
  assert flops.mfu(1e12, 2.0, 4, 1e12) == pytest.approx(0.5)
  assert flops.mfu(1e12, 2.0, 4, None) is None


def test_trainer_logs_throughput_mfu_and_writes_a_profile(tmp_path):
  import json
  import os

  from configs import bert2bert
  from edjax.train import trainer

  config = bert2bert.get_config("smoke")
  config.total_steps, config.log_every_steps = 4, 2
  config.checkpoint_every_steps = config.eval_every_steps = 4
  config.profile_steps = (1, 3)
  config.peak_flops = 1e12  # CPU has no table entry: the override gives an MFU
  workdir = str(tmp_path / "run")
  trainer.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  train_rows = [r for r in rows if "train/loss" in r]
  assert train_rows
  for r in train_rows:
    assert r["train/real_tokens_per_sec"] > 0
    assert 0 < r["train/mfu"] < 1
  traces = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(workdir, "profile"))
            for f in fs if f.endswith(".xplane.pb")]
  assert traces and os.path.getsize(traces[0]) > 0
