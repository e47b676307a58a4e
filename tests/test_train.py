"""The training runner: smoke configs end to end, exact resume, sharded = single device,
gradient accumulation, NaN guard, config-key typos, checkpoint fallback."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import edjax.data
from edjax.train import trainer as train_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def smoke_config(name: str = "bert2bert", **overrides):
  config = importlib.import_module(f"configs.{name}").get_config("smoke")
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def read_metrics(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def train_losses(workdir: str) -> dict[int, float]:
  return {r["step"]: r["train/loss"] for r in read_metrics(workdir) if "train/loss" in r}


@pytest.mark.parametrize("name", ["bert2bert", "bert2gpt2", "roberta_share"])
def test_smoke_configs_run_end_to_end(name, tmp_path):
  workdir = str(tmp_path / name)
  final = train_lib.train_and_evaluate(smoke_config(name), workdir)
  config = smoke_config(name)
  rows = read_metrics(workdir)
  steps = sorted(train_losses(workdir))
  assert steps == list(range(config.log_every_steps, config.total_steps + 1, config.log_every_steps))
  assert all(np.isfinite(v) for v in train_losses(workdir).values())
  assert any("eval/loss" in r for r in rows) and any("eval/sari" in r for r in rows)
  assert final["step"] == config.total_steps and np.isfinite(final["eval/loss"])
  assert len(final["examples"]) == 3 and all(isinstance(p, str) for _, p, _ in final["examples"])
  assert os.path.exists(os.path.join(workdir, "config.json"))
  assert os.path.exists(os.path.join(workdir, f"predictions_{config.total_steps}.jsonl"))
  ckpts = os.listdir(os.path.join(workdir, "checkpoints"))
  assert str(config.total_steps) in ckpts, ckpts
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  # Rerunning a finished run resumes at the end: no training step is repeated.
  train_lib.train_and_evaluate(smoke_config(name), workdir)
  assert sorted(train_losses(workdir)) == steps


def test_bfloat16_compute_keeps_fp32_params(tmp_path):
  import edjax
  config = smoke_config(compute_dtype="bfloat16", total_steps=2, log_every_steps=1,
                        eval_every_steps=2, checkpoint_every_steps=2)
  final = train_lib.train_and_evaluate(config, str(tmp_path / "bf16"))
  losses = train_losses(str(tmp_path / "bf16"))
  assert sorted(losses) == [1, 2] and all(np.isfinite(v) for v in losses.values())
  assert np.isfinite(final["eval/loss"])
  _, params = edjax.from_pretrained(str(tmp_path / "bf16" / "export"))
  assert {x.dtype for x in jax.tree_util.tree_leaves(params)} == {np.dtype(np.float32)}


def test_cnn_dailymail_smoke_under_tfds_mock_data(tmp_path):
  """The cnn_dailymail variant's data path (tfds, article -> highlights) with the smoke model."""
  import tensorflow_datasets as tfds
  config = smoke_config(**{"data.name": "cnn_dailymail", "data.train_splits": ("train",),
                           "data.eval_split": "validation", "eval.metrics": ("rouge",),
                           "total_steps": 2, "log_every_steps": 1, "eval_every_steps": 2})
  with tfds.testing.mock_data(num_examples=12):
    final = train_lib.train_and_evaluate(config, str(tmp_path / "cnndm"))
  assert sorted(train_losses(str(tmp_path / "cnndm"))) == [1, 2]
  assert {"eval/loss", "eval/rouge1", "eval/rouge2", "eval/rougeL", "eval/rougeLsum"} <= set(final)


def test_init_from_a_workdir_and_hf_export(tmp_path):
  """A finished run exports HF format; a new run starts from its checkpoint (init_from)."""
  import edjax
  first = str(tmp_path / "first")
  train_lib.train_and_evaluate(smoke_config(eval_every_steps=100), first)
  model, params = edjax.from_pretrained(os.path.join(first, "export"))  # HF-format export
  second = str(tmp_path / "second")
  final = train_lib.train_and_evaluate(  # learning rate 0: the params stay what init_from gave
      smoke_config(eval_every_steps=100, total_steps=2, init_from=first,
                   **{"optimizer.learning_rate": 0.0}), second)
  assert final["step"] == 2 and sorted(train_losses(second)) == [2]
  _, params2 = edjax.from_pretrained(os.path.join(second, "export"))
  same = jax.tree_util.tree_map(np.array_equal, params, params2)
  assert all(jax.tree_util.tree_leaves(same))
  fresh = edjax.from_config(model.config, rng=0)[1]
  assert not all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(np.array_equal, params, fresh)))
  # The export carries the tokenizer, so predict needs no --tokenizer flag.
  assert os.path.exists(os.path.join(first, "export", "vocab.txt"))


def test_eval_loss_takes_special_ids_from_the_model_config(tmp_path, minilm_dir):
  """init_from a checkpoint whose decoder_start_token_id / pad_token_id differ from the
  tokenizer's: the eval loss is the teacher-forced loss with the checkpoint's ids (as the train
  loss is), not with the tokenizer's."""
  import edjax
  from configs.bert2bert import TINY_BERT
  from edjax.model_configs import EncoderDecoderConfig, config_from_dict
  from edjax.processing.tokenizers import Tokenizer
  tok = Tokenizer.from_dir(minilm_dir)
  start, pad = 5, 3
  assert (tok.bos_id, tok.pad_id) != (start, pad)
  tiny = config_from_dict(dict(TINY_BERT, initializer_range=0.5))  # peaked logits: ids matter
  cfg = EncoderDecoderConfig.from_encoder_decoder_configs(
      tiny, tiny, decoder_start_token_id=start, eos_token_id=tok.eos_id, pad_token_id=pad)
  model, params = edjax.from_config(cfg, rng=0)
  ckpt = str(tmp_path / "ckpt")
  edjax.save_pretrained(model, params, ckpt)
  config = smoke_config(init_from=ckpt, total_steps=1, log_every_steps=1, eval_every_steps=1,
                        checkpoint_every_steps=1, **{"optimizer.learning_rate": 0.0})
  final = train_lib.train_and_evaluate(config, str(tmp_path / "run"))  # lr 0: params unchanged

  def hand_loss(start_id, pad_id):  # mean token NLL over the valid eval rows' labels
    total, count = 0.0, 0
    eval_set = edjax.data.build_eval_set(config.data, encoder_tokenizer=tok, decoder_tokenizer=tok)
    for batch in eval_set.batches(config.eval.batch_size):
      keep = (batch["labels"] != -100) & (batch["valid"][:, None] > 0)  # [b, tgt_len]
      labels = np.where(keep, batch["labels"], -100)
      dec_in = np.full_like(labels, start_id)  # [b, tgt_len]: start, then labels shifted right
      dec_in[:, 1:] = np.where(labels[:, :-1] == -100, pad_id, labels[:, :-1])
      logits = model.apply({"params": params}, input_ids=batch["input_ids"],
                           attention_mask=batch["attention_mask"], decoder_input_ids=dec_in,
                           decoder_attention_mask=batch["decoder_attention_mask"]).logits
      logp = np.asarray(jax.nn.log_softmax(logits, axis=-1))  # [b, tgt_len, vocab]
      picked = np.take_along_axis(logp, np.maximum(labels, 0)[..., None], -1)[..., 0]
      total, count = total - float(picked[keep].sum()), count + int(keep.sum())
    return total / count

  want = hand_loss(start, pad)
  np.testing.assert_allclose(final["eval/loss"], want, rtol=1e-5)
  # The tokenizer's ids give another loss: the check above tells them apart.
  assert abs(hand_loss(tok.bos_id, tok.pad_id) - want) > 100 * 1e-5 * want


class _Stop(Exception):
  pass


def test_stop_and_resume_gives_bit_identical_losses(tmp_path, monkeypatch):
  overrides = {"log_every_steps": 1, "checkpoint_every_steps": 3, "eval_every_steps": 100}
  straight = str(tmp_path / "straight")
  train_lib.train_and_evaluate(smoke_config(**overrides), straight)

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
    train_lib.train_and_evaluate(smoke_config(**overrides), resumed)
  monkeypatch.setattr(edjax.data, "build_dataset", real_build)
  assert sorted(train_losses(resumed)) == [1, 2, 3]
  train_lib.train_and_evaluate(smoke_config(**overrides), resumed)
  a, b = train_losses(straight), train_losses(resumed)
  assert sorted(b) == list(range(1, 7))
  assert a == b  # bit-identical floats, step by step


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
  real_step = train_lib.make_train_step

  def make_step(model, optimizer, cfg):  # the loss turns NaN from the 4th step on
    step_fn = real_step(model, optimizer, cfg)

    def step(state, batch):
      new_state, m = step_fn(state, batch)
      return new_state, dict(m, loss=m["loss"] + jnp.where(state["step"] >= 3, jnp.nan, 0.0))
    return step
  monkeypatch.setattr(train_lib, "make_train_step", make_step)
  workdir = str(tmp_path / "nan")
  config = smoke_config(checkpoint_every_steps=3, eval_every_steps=100, total_steps=6)
  with pytest.raises(train_lib.NonFiniteLossError, match=r"at step 4.*last good checkpoint \(step 3\)"):
    train_lib.train_and_evaluate(config, workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3"]


def test_gradient_accumulation_equals_a_doubled_batch():
  import optax
  import edjax
  from configs.bert2bert import TINY_BERT
  from edjax.model_configs import EncoderDecoderConfig, config_from_dict
  tiny = dict(TINY_BERT, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, vocab_size=97)
  cfg = EncoderDecoderConfig.from_encoder_decoder_configs(
      config_from_dict(tiny), config_from_dict(tiny), decoder_start_token_id=2, pad_token_id=0)
  model, params = edjax.from_config(cfg, rng=0)
  rng = np.random.RandomState(0)
  labels = rng.randint(3, 97, (8, 10)).astype(np.int32)
  labels[::2, 6:] = -100  # uneven token counts: token-weighted averaging matters
  batch = dict(input_ids=rng.randint(3, 97, (8, 12)).astype(np.int32),
               attention_mask=np.ones((8, 12), np.int32), labels=labels,
               decoder_attention_mask=(labels != -100).astype(np.int32))
  opt = optax.sgd(0.1)
  results = []
  for accum in (1, 2):
    config = smoke_config(grad_accum_steps=accum, label_smoothing=0.0)
    step = jax.jit(train_lib.make_train_step(model, opt, config))
    state = dict(step=jnp.array(0, jnp.int32), params=params, opt_state=opt.init(params),
                 rng=jax.random.PRNGKey(0))
    results.append(step(state, batch))
  (s1, m1), (s2, m2) = results
  np.testing.assert_allclose(float(m1["loss"]), float(m2["loss"]), rtol=1e-6)
  assert int(m1["tokens"]) == int(m2["tokens"]) == int((labels != -100).sum())
  diffs = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))), s1["params"], s2["params"])
  assert max(jax.tree_util.tree_leaves(diffs)) < 1e-6


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path, caplog):
  workdir = str(tmp_path / "ckpt")
  config = smoke_config(checkpoint_every_steps=3, eval_every_steps=100, log_every_steps=1)
  train_lib.train_and_evaluate(config, workdir)
  first_end = [r for r in read_metrics(workdir) if r.get("step") == 6][-1]["wall_time"]
  latest = os.path.join(workdir, "checkpoints", "6")
  for root, _, files in os.walk(os.path.join(latest, "state")):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"\0garbage")
  longer = smoke_config(checkpoint_every_steps=3, eval_every_steps=100, log_every_steps=1,
                        total_steps=6)
  with caplog.at_level("WARNING"):
    train_lib.train_and_evaluate(longer, workdir)
  assert "could not be restored" in caplog.text
  # Resumed from step 3: steps 4-6 were trained again; their first rows were dropped, so each
  # step is logged once and rows 4-6 are the second run's.
  rows = [r for r in read_metrics(workdir) if "train/loss" in r]
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
  assert all(r["wall_time"] > first_end for r in rows[3:]), rows


def test_misspelled_config_key_is_rejected_by_the_cli(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.train", "--config=configs/bert2bert.py:smoke",
       f"--workdir={tmp_path}", "--config.totl_steps=5"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: a --config override names no config key ('totl_steps')"), last
  assert 'Did you mean "total_steps"' in last, last
  with pytest.raises(ValueError, match="unknown variant"):
    importlib.import_module("configs.bert2bert").get_config("smok")


MESH_SCRIPT = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    from configs import bert2bert  # the repo root is the subprocess's working directory
    from edjax.train import trainer as train
    assert jax.device_count() == 8
    c = bert2bert.get_config("smoke")
    c.log_every_steps, c.eval_every_steps = 1, 100
    c.mesh.update(dict(data=2, fsdp=2, tensor=2))
    train.train_and_evaluate(c, {workdir!r})
    print("MESH-OK")
""")


def test_mesh_2x2x2_on_8_fake_devices_matches_one_device(tmp_path):
  assert jax.device_count() == 1
  one = str(tmp_path / "one")
  train_lib.train_and_evaluate(smoke_config(log_every_steps=1, eval_every_steps=100), one)
  mesh = str(tmp_path / "mesh")
  proc = subprocess.run([sys.executable, "-c", MESH_SCRIPT.format(workdir=mesh)],
                        cwd=REPO, capture_output=True, text=True, timeout=900)
  assert "MESH-OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]
  a, b = train_losses(one), train_losses(mesh)
  assert sorted(a) == sorted(b) == list(range(1, 7))
  for step in a:
    assert abs(a[step] - b[step]) <= 1e-4 * abs(a[step]), (step, a[step], b[step])


def test_unknown_eval_key_is_rejected_before_training():
  config = smoke_config()
  config.eval.num_beam = 3  # a typo of num_beams: neither an eval key nor a generation setting
  with pytest.raises(ValueError, match=r"config.eval has unknown keys \['num_beam'\]"):
    train_lib.check_config(config)


def test_num_generate_must_be_a_non_negative_integer():
  config = smoke_config()
  config.eval.num_generate = -1
  with pytest.raises(ValueError, match=r"config.eval.num_generate=.*must be an integer >= 0"):
    train_lib.check_config(config)


def test_num_generate_zero_evaluates_the_loss_without_decoding(monkeypatch):
  from edjax.train import evaluate as eval_lib
  config = smoke_config()
  config.eval.num_generate = 0
  train_lib.check_config(config)

  def no_decoding(*args, **kwargs):
    raise AssertionError("num_generate=0 must not decode")
  monkeypatch.setattr(eval_lib, "generate_texts", no_decoding)

  class EvalSet:
    examples, references = [("a", "b")] * 3, ["b"] * 3

    def batches(self, batch_size):
      yield {"valid": np.ones(3, np.int32), "labels": np.full((3, 2), 5, np.int32)}
  results, rows = eval_lib.evaluate(None, None, EvalSet(), config.eval, None,
                                    loss_fn=lambda params, batch: (6.0, 4))
  assert rows == [] and results == {"eval/loss": 1.5}
