"""Reliability of a run's workdir (issue #15): a changed config is not corruption, divergence
names the last healthy checkpoint and resume_step continues from it, one run per workdir, configs
and predict flags checked before work starts, and the mains print one line, no traceback."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import pytest

import edjax
import edjax.data
from edjax import predict as predict_lib
from edjax.model_configs import ConfigError
from edjax.train import checkpoint as ckpt_lib
from edjax.train import trainer as train_lib
from edjax.train import workdir as workdir_lib
from tests.test_train import REPO, read_metrics, smoke_config, train_losses

FAST = {"total_steps": 3, "checkpoint_every_steps": 3, "eval_every_steps": 100,
        "log_every_steps": 1}


def snapshot(workdir: str) -> dict:
  """{relative path: (mtime_ns, sha256)} of every file but the lock."""
  out = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(root, name)
      if name == workdir_lib.LOCK_FILE:
        continue
      with open(path, "rb") as f:
        out[os.path.relpath(path, workdir)] = (os.stat(path).st_mtime_ns,
                                               hashlib.sha256(f.read()).hexdigest())
  return out


def never(*args, **kwargs):
  raise AssertionError("reached model loading / data building")


# ----------------------------------------------------------------------------- 1. changed config


def test_changed_model_shape_stops_and_touches_no_checkpoint(tmp_path):
  workdir = str(tmp_path / "run")
  train_lib.train_and_evaluate(smoke_config(**FAST), workdir)
  before = snapshot(workdir)
  assert any(p.startswith("checkpoints/3/") for p in before)
  changed = smoke_config(**FAST)
  changed.model.encoder_config.hidden_size = 64
  with pytest.raises(train_lib.ConfigMismatchError,
                     match=r"model\.encoder_config\.hidden_size: 32 -> 64.*overwrite_workdir"):
    train_lib.train_and_evaluate(changed, workdir)
  assert snapshot(workdir) == before  # checkpoints, metrics.jsonl, config.json untouched
  assert not os.path.exists(os.path.join(workdir, "checkpoints.corrupt"))
  # The same config still resumes (a finished run re-evaluates only).
  train_lib.train_and_evaluate(smoke_config(**FAST), workdir)
  assert sorted(train_losses(workdir)) == [1, 2, 3]
  # The explicit override moves the old run aside and starts afresh.
  changed.overwrite_workdir = True
  train_lib.train_and_evaluate(changed, workdir)
  replaced = [d for d in os.listdir(workdir) if d.startswith("replaced-")]
  assert len(replaced) == 1
  old = os.path.join(workdir, replaced[0])
  assert os.listdir(os.path.join(old, "checkpoints")) == ["3"]
  assert sorted(train_losses(workdir)) == [1, 2, 3]  # a new metrics.jsonl, not a mixed one
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["model"]["encoder_config"]["hidden_size"] == 64


def test_only_unreadable_checkpoints_are_moved_aside(tmp_path):
  """state_differences: a fitting checkpoint gives [], another shape names the array."""
  struct = lambda *s: jnp.zeros(s)  # noqa: E731
  saved = {"params": {"w": struct(2, 3)}, "step": struct()}
  assert ckpt_lib.state_differences(saved, {"params": {"w": struct(2, 3)}, "step": struct()}) == []
  diff = ckpt_lib.state_differences(saved, {"params": {"w": struct(2, 4)}, "step": struct()})
  assert diff == ["params/w: (2, 3) float32 saved, (2, 4) float32 now"]


# ----------------------------------------------------------------------------- 2. divergence


def test_divergence_names_the_last_healthy_checkpoint_and_resume_step_continues(
    tmp_path, monkeypatch):
  real_step = train_lib.make_train_step

  def make_step(model, optimizer, cfg):  # loss x1000 from step 4, NaN at step 6
    step_fn = real_step(model, optimizer, cfg)

    def step(state, batch):
      new_state, m = step_fn(state, batch)
      loss = m["loss"] * jnp.where(state["step"] >= 3, 1000.0, 1.0)
      return new_state, dict(m, loss=loss + jnp.where(state["step"] >= 5, jnp.nan, 0.0))
    return step
  monkeypatch.setattr(train_lib, "make_train_step", make_step)
  workdir = str(tmp_path / "div")
  overrides = dict(checkpoint_every_steps=2, eval_every_steps=100, log_every_steps=1)
  with pytest.raises(train_lib.NonFiniteLossError,
                     match=r"at step 6.*last good checkpoint \(step 2\).*\[4\].*"
                           r"--config.resume_step=2.*learning_rate \(now 0.001, e.g. 0.0005\)"):
    train_lib.train_and_evaluate(smoke_config(**overrides), workdir)
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  assert ckpt.all_steps() == [2, 4]
  assert ckpt.read_meta(2)["healthy"] is True and ckpt.read_meta(4)["healthy"] is False
  assert train_lib.last_healthy(ckpt) == 2
  ckpt.close()

  monkeypatch.setattr(train_lib, "make_train_step", real_step)
  resumed = smoke_config(resume_step=2, **overrides)
  train_lib.train_and_evaluate(resumed, workdir)
  rows = [r for r in read_metrics(workdir) if "train/loss" in r]
  steps = [r["step"] for r in rows]
  # Resumed after step 2: the diverged run's rows 3-5 are dropped, each step is logged once, and
  # steps 3-6 are the resumed run's (healthy losses, not the x1000 ones).
  assert steps == [1, 2, 3, 4, 5, 6]
  assert all(r["train/loss"] is not None and r["train/loss"] < 100 for r in rows), rows
  assert os.listdir(os.path.join(workdir, "checkpoints.diverged"))[0].startswith("4-")
  # Rerunning the same command (flag kept) continues the resumed run, it does not go back.
  train_lib.train_and_evaluate(smoke_config(resume_step=2, **overrides), workdir)
  assert [r["step"] for r in read_metrics(workdir) if "train/loss" in r] == steps


def test_health_flags_a_blow_up_against_the_recent_median():
  health = train_lib.Health(factor=10.0)
  assert all(health.check(x, 1.0) for x in (3.0, 2.9, 2.8))
  assert not health.check(40.0, 1.0)
  assert not health.check(2.7, float("inf"))
  assert health.check(2.7, 1.0)


# ----------------------------------------------------------------------------- 3. lock


def test_second_run_in_a_workdir_fails_at_once_naming_the_holder(tmp_path, monkeypatch):
  monkeypatch.setattr(edjax.data, "build_dataset", never)
  workdir = str(tmp_path / "busy")
  with workdir_lib.WorkdirLock(workdir):
    with pytest.raises(train_lib.WorkdirBusyError, match=rf"pid={os.getpid()} host=\S+ since=20"):
      train_lib.train_and_evaluate(smoke_config(**FAST), workdir)
  with open(os.path.join(workdir, workdir_lib.LOCK_FILE)) as f:
    assert f.read() == ""  # released


def test_stale_lock_of_a_dead_pid_is_taken_over(tmp_path, caplog):
  import socket
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  lock = tmp_path / workdir_lib.LOCK_FILE
  lock.write_text(f"pid={dead.pid} host={socket.gethostname()} since=2020-01-01T00:00:00Z\n")
  with caplog.at_level("WARNING"), workdir_lib.WorkdirLock(str(tmp_path)):
    assert f"pid={os.getpid()}" in lock.read_text()
  assert "stale lock" in caplog.text and "that process is gone" in caplog.text


# ----------------------------------------------------------------------------- 4. checks


@pytest.mark.parametrize("key,value,message", [
    ("eval.num_beams", 0, r"config\.eval\.num_beams=0"),
    ("log_every_steps", 0, r"config\.log_every_steps=0"),
    ("total_steps", -1, r"config\.total_steps=-1"),
    ("optimizer.learning_rate", -1e-3, r"config\.optimizer\.learning_rate=-0\.001"),
    ("data.max_source_length", 200, r"config\.data\.max_source_length=200 exceeds.*128"),
    ("data.max_target_length", 129, r"config\.data\.max_target_length=129 exceeds.*128"),
])
def test_bad_config_is_rejected_before_any_loading(key, value, message, tmp_path, monkeypatch):
  monkeypatch.setattr(edjax.data, "build_dataset", never)
  monkeypatch.setattr(train_lib, "start_training", never)
  with pytest.raises(ConfigError, match=message):
    train_lib.train_and_evaluate(smoke_config(**{key: value}), str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w")


def test_empty_workdir_and_batch_split_are_rejected():
  with pytest.raises(ConfigError, match="--workdir is empty"):
    train_lib.train_and_evaluate(smoke_config(), "")

  class Mesh:
    shape = {"data": 2, "fsdp": 2, "tensor": 1}
  with pytest.raises(ConfigError, match=r"config\.batch_size=6 .*data x fsdp = 4"):
    train_lib.check_batch_split(smoke_config(batch_size=6), Mesh())
  train_lib.check_batch_split(smoke_config(batch_size=8), Mesh())


@pytest.mark.parametrize("args,message", [
    (dict(batch_size=0), r"--batch_size=0"),
    (dict(gen_kwargs={"max_new_tokens": 0}), r"--max_new_tokens=0"),
    (dict(output="DIR"), r"--output .* is a directory"),
    (dict(output="DIR/file.txt/out.jsonl"), r"file\.txt is a file, not a folder"),
])
def test_predict_arguments_are_checked_before_generating(args, message, tmp_path):
  kwargs = dict(output=str(tmp_path / "out.jsonl"), batch_size=8, max_input_length=None,
                gen_kwargs={})
  kwargs.update(args)
  kwargs["output"] = kwargs["output"].replace("DIR", str(tmp_path))
  (tmp_path / "file.txt").write_text("")
  predict_lib.check_arguments(str(tmp_path / "new" / "out.jsonl"), 8, None, {})  # made when saved
  with pytest.raises(predict_lib.InputError, match=message):
    predict_lib.check_arguments(**kwargs)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_predict_rejects_an_unwritable_output(tmp_path):
  locked = tmp_path / "ro"
  locked.mkdir()
  locked.chmod(0o500)
  try:
    with pytest.raises(predict_lib.InputError, match="not writable"):
      predict_lib.check_arguments(str(locked / "out.jsonl"), 8, None, {})
  finally:
    locked.chmod(0o700)


# ----------------------------------------------------------------------------- 5. mains


def run_main(*args, env=None):
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                        timeout=600, env=dict(os.environ, **(env or {})))


def test_train_main_prints_one_error_line_without_traceback(tmp_path):
  proc = run_main("experiments.train", "--config=configs/bert2bert.py:smoke",
                  f"--workdir={tmp_path}", "--config.log_every_steps=0")
  assert proc.returncode != 0
  assert "error: config.log_every_steps=0: must be a positive integer" in proc.stderr
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  debug = run_main("experiments.train", "--config=configs/bert2bert.py:smoke",
                   f"--workdir={tmp_path}", "--config.log_every_steps=0", env={"EDJAX_DEBUG": "1"})
  assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_predict_main_prints_one_error_line_without_traceback(tmp_path):
  src = tmp_path / "in.txt"
  src.write_text("a sentence\n")
  proc = run_main("experiments.predict", f"--checkpoint={tmp_path}", f"--input={src}",
                  f"--output={tmp_path}", "--num_beams=2")
  assert proc.returncode != 0
  assert "error: --output" in proc.stderr and "is a directory" in proc.stderr
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_init_from_a_workdir_without_checkpoints_is_a_checkpoint_error(tmp_path):
  other = tmp_path / "other"
  (other / "checkpoints").mkdir(parents=True)
  with pytest.raises(edjax.CheckpointError, match=r"config\.init_from=.*no restorable checkpoint"):
    train_lib.train_and_evaluate(smoke_config(init_from=str(other), **FAST), str(tmp_path / "w"))


def test_cli_rerun_with_another_hidden_size_is_one_error_line(tmp_path):
  """The issue's command: the smoke workdir rerun with --config.model.encoder_config.hidden_size=64."""
  workdir = str(tmp_path / "run")
  train_lib.train_and_evaluate(smoke_config(**FAST), workdir)
  before = snapshot(workdir)
  proc = run_main("experiments.train", "--config=configs/bert2bert.py:smoke", f"--workdir={workdir}",
                  *[f"--config.{k}={v}" for k, v in FAST.items()],
                  "--config.model.encoder_config.hidden_size=64")
  assert proc.returncode != 0
  assert "error: workdir" in proc.stderr and "hidden_size: 32 -> 64" in proc.stderr
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert snapshot(workdir) == before
