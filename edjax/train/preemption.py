"""Preemption-safe training: save at the current step on SIGTERM / SIGINT / an orbax preemption
sync point, and time-based saves.

    guard = PreemptionGuard(check_every_steps=1, save_every_minutes=30)
    with guard:                            # SIGTERM and (the first) SIGINT set a flag
      for step in ...:
        ...train step `done`...
        decision = guard.decide(done, ckpt.manager)
        if decision.save: save(done)
        if decision.stop: ckpt.wait(); raise TrainingPreempted(done, signal_name, directory)

What TPU VMs / GKE send before a preemption is SIGTERM. The handler only sets a flag; the loop
checks it after each step, so a checkpoint is always of a whole step, and `train_stream.batch(step)`
being pure in (seed, step) makes the rerun continue the data exactly (no lost or repeated steps).
A second SIGINT (Ctrl-C twice) is the default KeyboardInterrupt.

Multi-process runs must agree on the step they save at (orbax's save is collective). A signal may
reach one process only (kill PID), so every `check_every_steps` steps the processes exchange two
flags (signal seen, time-based save due) with one tiny `multihost_utils.process_allgather` and act
on the maximum: all processes stop or save at the same step. The exchange is a host round trip per
check (microseconds on one host, a little more over DCN); raise `check_every_steps` when that
matters, at the cost of a later save. Orbax's `CheckpointManager.reached_preemption(step)` (the
JAX distributed runtime's preemption sync point, already agreed over processes) also stops. Note
that a Python SIGTERM handler replaces the one the JAX runtime installs for that sync point, so
under this guard SIGTERM goes through the flag exchange; other notices still reach orbax.

`TrainingPreempted` is what the trainer raises; `experiments/train.py` prints one line naming the
step and exits with 128 + the signal's number (143 for SIGTERM or an orbax preemption, 130 for
SIGINT), as a process killed by that signal would, so job schedulers see a preempted run, not a
failed or finished one.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import time

import jax
import numpy as np

log = logging.getLogger("edjax")


class TrainingPreempted(Exception):
  """Training stopped early on a preemption notice after saving a checkpoint at `step`."""

  def __init__(self, step: int, signal_name: str, directory: str):
    self.step, self.signal_name, self.directory = step, signal_name, directory
    super().__init__(f"preempted ({signal_name}): saved the checkpoint of step {step} in "
                     f"{directory}; rerun the same command to resume from it")

  @property
  def exit_code(self) -> int:
    """128 + the signal's number, as for a process that signal killed (143 for SIGTERM)."""
    return 128 + int(getattr(signal, self.signal_name, signal.SIGTERM))


@dataclasses.dataclass(frozen=True)
class Decision:
  """What the loop does after a step: save a checkpoint, and stop (after saving) or not."""
  save: bool = False
  stop: bool = False
  reason: str = ""  # the signal's name ("SIGTERM", "SIGINT") when stopping


def agree(flags: np.ndarray) -> np.ndarray:
  """The element-wise max of `flags` ([k] int32) over all processes (itself in one process)."""
  if jax.process_count() == 1:
    return flags
  from jax.experimental import multihost_utils
  gathered = multihost_utils.process_allgather(flags)  # [processes, k]
  return np.asarray(gathered).reshape(jax.process_count(), -1).max(axis=0)


class PreemptionGuard:
  """Catches SIGTERM / SIGINT while active (a context manager) and decides, after each step,
  whether to save and whether to stop, the same on every process (see the module docstring)."""

  def __init__(self, check_every_steps: int = 1, save_every_minutes: float = 0.0,
               clock=time.monotonic):
    self.check_every_steps = max(int(check_every_steps), 1)
    self.save_every_s = float(save_every_minutes) * 60.0
    self.clock = clock
    self.received: str = ""  # the name of the first signal seen
    self._last_save = clock()
    self._previous: dict = {}

  def __enter__(self) -> "PreemptionGuard":
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: signals cannot be caught here
        log.warning("not in the main thread: %s will not save a checkpoint", sig.name)
    return self

  def __exit__(self, *exc) -> None:
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)
    self._previous = {}

  def _handle(self, signum, frame) -> None:
    del frame
    name = signal.Signals(signum).name
    if signum == signal.SIGINT and self.received:  # the second Ctrl-C: stop now
      signal.signal(signal.SIGINT, signal.default_int_handler)
      raise KeyboardInterrupt
    self.received = self.received or name
    log.warning("%s received: the train loop saves a checkpoint after this step and stops", name)

  def saved(self) -> None:
    """Tells the guard a checkpoint was just saved (restarts the time-based save's clock)."""
    self._last_save = self.clock()

  def decide(self, step: int, manager=None) -> Decision:
    """After step `step` (steps done): whether to save and stop. Collective in multi-process
    runs on every `check_every_steps`-th step: call it on all processes at every step."""
    preempted = bool(manager is not None and manager.reached_preemption(step))
    if step % self.check_every_steps and not preempted:
      return Decision()
    due = self.save_every_s > 0 and self.clock() - self._last_save >= self.save_every_s
    signalled, due = agree(np.array([bool(self.received), due], np.int32))
    if signalled or preempted:
      reason = self.received or "SIGTERM"  # a signal on another process / orbax: as SIGTERM
      return Decision(save=True, stop=True, reason=reason)
    return Decision(save=bool(due))


def send_test_signal(test_signal, step: int) -> None:
  """Test hook (`config.test_signal`: at_step, signal, process): after step `at_step` (0 = off)
  process `process` (-1 = every process) sends itself `signal` ("SIGTERM", "SIGKILL", ...), as a
  scheduler would; tests use it to preempt or crash a run at an exact step."""
  if not test_signal or int(test_signal.get("at_step", 0)) != step or step <= 0:
    return
  if int(test_signal.get("process", -1)) not in (-1, jax.process_index()):
    return
  import os
  name = test_signal.get("signal", "SIGTERM")
  log.warning("test hook: sending %s to process %d after step %d", name, jax.process_index(), step)
  os.kill(os.getpid(), getattr(signal, name))
