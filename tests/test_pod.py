"""Preemption-safe training and a real multi-process job (issue #13 items 4 and 5).

The end-to-end tests run `experiments.train` on configs/bert2bert.py:smoke (batch 8, 8 steps, a
loss row every step, checkpoints every 4) in subprocesses with timeouts:

- one process x 8 fake devices, uninterrupted: the reference;
- SIGTERM after step 5 (the `config.test_signal` hook): checkpoint at exactly step 5, exit 143,
  the rerun's rows equal the reference's;
- `scripts/local_pod.py` 2 processes x 4 devices: losses equal to the reference (<= 1e-5 rel.);
  SIGTERM to process 1 alone: both processes save step 5; SIGKILL of process 1 after step 6: the
  pod stops, the rerun resumes from step 4 and logs bit-identically the uninterrupted pod's rows;
- a process that cannot reach its coordinator: one error line naming the address, in bounded time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import chex
import numpy as np
import pytest

from edjax.train import distributed, preemption
from scripts import local_pod

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 600

FLAGS = ["--config=configs/bert2bert.py:smoke", "--config.batch_size=8", "--config.total_steps=8",
         "--config.log_every_steps=1", "--config.checkpoint_every_steps=4",
         "--config.eval_every_steps=8", "--config.export_hf=False", "--config.eval.num_generate=0",
         "--config.eval.num_beams=1", "--config.eval.max_length=4"]


def _env(devices: int = 8) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", USE_TF="0", PYTHONPATH=REPO,
             XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} "
             f"--xla_force_host_platform_device_count={devices}".strip())
  for key in (distributed.ADDRESS_ENV, distributed.NUM_PROCESSES_ENV, distributed.PROCESS_ID_ENV):
    env.pop(key, None)
  return env


def train(workdir, *flags) -> subprocess.CompletedProcess:
  """One process x 8 fake devices."""
  cmd = [sys.executable, "-m", "experiments.train", f"--workdir={workdir}", *FLAGS, *flags]
  return subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True,
                        timeout=TIMEOUT_S)


def pod(workdir, *flags) -> subprocess.CompletedProcess:
  """scripts/local_pod.py: 2 processes x 4 fake devices."""
  cmd = [sys.executable, "scripts/local_pod.py", "--processes=2", "--devices_per_process=4",
         "--grace_s=5", "--", sys.executable, "-m", "experiments.train", f"--workdir={workdir}",
         *FLAGS, *flags]
  return subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True,
                        timeout=TIMEOUT_S)


def rows(workdir) -> dict[int, dict]:
  """metrics.jsonl merged by step (a row logged twice keeps the later one); timing keys out."""
  out: dict[int, dict] = {}
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    for line in f:
      row = json.loads(line)
      out.setdefault(row["step"], {}).update(
          {k: v for k, v in row.items() if k not in ("step", "train/tokens_per_sec")})
  return out


def losses(workdir) -> list[tuple[int, str, float]]:
  """Every logged loss: (step, name, value), train and eval."""
  return [(s, k, v) for s, r in sorted(rows(workdir).items()) for k, v in sorted(r.items())
          if k.endswith("/loss")]


def checkpoint_steps(workdir) -> list[int]:
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


def _ok(result: subprocess.CompletedProcess, code: int = 0) -> None:
  assert result.returncode == code, (result.returncode, result.stdout[-3000:],
                                     result.stderr[-3000:])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted 1 process x 8 devices run."""
  workdir = tmp_path_factory.mktemp("reference")
  _ok(train(workdir))
  assert len(losses(workdir)) == 9  # 8 train rows + the final eval
  return workdir


@pytest.fixture(scope="module")
def pod_reference(tmp_path_factory):
  """An uninterrupted 2 processes x 4 devices run."""
  workdir = tmp_path_factory.mktemp("pod")
  result = pod(workdir)
  _ok(result)
  assert "[p0] " in result.stdout and "[p1] " in result.stdout
  assert "process 1 of 2, 4 local / 8 global devices" in result.stdout
  return workdir


# ----------------------------------------------------------------------------- unit


def test_guard_saves_on_time_and_stops_on_signal():
  now = [0.0]
  guard = preemption.PreemptionGuard(check_every_steps=1, save_every_minutes=1.0,
                                     clock=lambda: now[0])
  assert guard.decide(1) == preemption.Decision()
  now[0] = 61.0
  assert guard.decide(2) == preemption.Decision(save=True)
  guard.saved()
  assert guard.decide(3) == preemption.Decision()
  with guard:
    os.kill(os.getpid(), signal.SIGTERM)
    assert guard.received == "SIGTERM"
    assert guard.decide(4) == preemption.Decision(save=True, stop=True, reason="SIGTERM")
  assert signal.getsignal(signal.SIGTERM) is not guard._handle  # restored on exit


def test_guard_checks_every_n_steps_and_second_sigint_interrupts():
  guard = preemption.PreemptionGuard(check_every_steps=3)
  with guard:
    os.kill(os.getpid(), signal.SIGINT)
    assert guard.decide(4).stop is False  # only every 3rd step is checked (and agreed on)
    assert guard.decide(6).stop is True
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)


def test_preempted_exit_codes():
  assert preemption.TrainingPreempted(5, "SIGTERM", "d").exit_code == 143
  assert preemption.TrainingPreempted(5, "SIGINT", "d").exit_code == 130
  assert "step 5" in str(preemption.TrainingPreempted(5, "SIGTERM", "d"))
  assert local_pod.exit_code(-9) == 137 and local_pod.exit_code(3) == 3


def test_env_settings_and_pod_env():
  assert distributed.env_settings({}) is None
  env = local_pod.process_env(1, 2, 4, "127.0.0.1:1234",
                              base={"XLA_FLAGS": "--xla_force_host_platform_device_count=8 --x=1"})
  assert distributed.env_settings(env) == dict(coordinator_address="127.0.0.1:1234",
                                               num_processes=2, process_id=1)
  assert env["XLA_FLAGS"] == "--x=1 --xla_force_host_platform_device_count=4"
  with pytest.raises(distributed.DistributedError, match="JAX_PROCESS_ID=2 is not in"):
    distributed.env_settings(dict(env, JAX_PROCESS_ID="2"))
  with pytest.raises(distributed.DistributedError, match="must be integers"):
    distributed.env_settings({"JAX_COORDINATOR_ADDRESS": "h:1"})


# ----------------------------------------------------------------------------- end to end


def test_sigterm_saves_that_step_and_rerun_equals_uninterrupted(reference, tmp_path):
  first = train(tmp_path, "--config.test_signal.at_step=5")
  _ok(first, 143)
  assert "saved the checkpoint of step 5" in first.stderr.strip().splitlines()[-1]
  assert checkpoint_steps(tmp_path) == [4, 5]
  assert max(rows(tmp_path)) == 5
  _ok(train(tmp_path, "--config.test_signal.at_step=5"))  # the same command resumes
  assert losses(tmp_path) == losses(reference)  # every logged loss, exactly


def test_pod_losses_equal_one_process(reference, pod_reference):
  got, want = losses(pod_reference), losses(reference)
  assert [r[:2] for r in got] == [r[:2] for r in want]
  chex.assert_trees_all_close(np.array([r[2] for r in got]), np.array([r[2] for r in want]),
                              rtol=1e-5, atol=0)


def test_pod_sigterm_to_one_process_saves_the_same_step_on_all(pod_reference, tmp_path):
  first = pod(tmp_path, "--config.test_signal.at_step=5", "--config.test_signal.process=1")
  _ok(first, 143)
  assert "[p0] " in first.stdout and "saved the checkpoint of step 5" in first.stdout
  assert checkpoint_steps(tmp_path) == [4, 5]
  _ok(pod(tmp_path, "--config.test_signal.at_step=5", "--config.test_signal.process=1"))
  assert losses(tmp_path) == losses(pod_reference)


def test_pod_kill9_one_process_then_rerun_resumes_bit_identically(pod_reference, tmp_path):
  flags = ("--config.test_signal.at_step=6", "--config.test_signal.process=1",
           "--config.test_signal.signal=SIGKILL")
  first = pod(tmp_path, *flags)
  _ok(first, 137)
  assert "[pod] p1 exited with 137: stopping the others" in first.stdout
  assert checkpoint_steps(tmp_path) == [4]
  assert max(rows(tmp_path)) == 6
  _ok(pod(tmp_path))  # without the hook (it would kill step 6 again); the state still fits
  assert losses(tmp_path) == losses(pod_reference)


def test_unreachable_coordinator_is_one_clear_error(tmp_path):
  address = f"127.0.0.1:{local_pod.free_port()}"
  env = dict(_env(4), JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES="2", JAX_PROCESS_ID="1",
             EDJAX_COORDINATOR_TIMEOUT="2")
  result = subprocess.run([sys.executable, "-m", "experiments.train", f"--workdir={tmp_path}",
                           *FLAGS], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
  assert result.returncode == 1, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: cannot reach the coordinator at {address} within 2 s"), last
