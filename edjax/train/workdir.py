"""A run's workdir: its error types, the lock that keeps one run per workdir, and what the trainer
checks against it before touching any file.

- `TrainingError` (a ValueError) is the base of the errors a training run raises for a problem
  the user can fix (a busy workdir, a config that does not fit the checkpoints, a diverged loss);
  `experiments.train` prints them as one line, without a traceback.
- `WorkdirLock`: an `fcntl.flock` on DIR/.lock holding "pid host start-time", taken before the
  run writes anything and released at exit. The kernel drops a dead process's flock, so a lock
  left behind by a crash is simply taken over (with a warning naming the dead holder).
- `config_diff` / `mismatch_message`: when a rerun's model or optimizer state no longer has the
  checkpoints' shapes, the run stops naming the config keys that changed (old -> new), instead of
  treating valid checkpoints as corrupt and starting over in the same directory.
- `move_run_aside`: what `--config.overwrite_workdir=True` does with such a workdir's old run
  (moved into DIR/replaced-<time>/, never deleted).
"""

from __future__ import annotations

import datetime
import fcntl
import json
import logging
import os
import socket
import time

log = logging.getLogger("edjax")

LOCK_FILE = ".lock"
RUN_FILES = ("checkpoints", "checkpoints.corrupt", "checkpoints.diverged", "metrics.jsonl",
             "tensorboard", "export", "config.json")
STATE_PREFIXES = ("model.", "optimizer.")  # the config keys the train state's shapes come from


class TrainingError(ValueError):
  """A training run stopped for a reason the user can act on (the message says how)."""


class WorkdirBusyError(TrainingError):
  """Another live run holds this workdir's lock."""


class ConfigMismatchError(TrainingError):
  """The workdir's checkpoints were written by a config whose model / optimizer state has other
  shapes than the running config's."""


# ----------------------------------------------------------------------------- lock


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's live process
    return True
  return True


class WorkdirLock:
  """Exclusive lock on a workdir for the life of one run: `with WorkdirLock(dir): ...`.

  A second run (in any process) fails at once with WorkdirBusyError naming the holder's pid,
  host and start time. On release the file is emptied, so a non-empty unlocked file means its
  holder died without releasing: that stale lock is taken over with a warning.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(os.path.abspath(workdir), LOCK_FILE)
    self.fd: int | None = None

  def acquire(self) -> "WorkdirLock":
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
      os.close(fd)
      raise WorkdirBusyError(
          f"workdir {os.path.dirname(self.path)} is in use by another run ({holder or 'unknown'}):"
          " wait for it to finish, stop it, or pass another --workdir") from None
    old = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    if old:
      info = dict(part.split("=", 1) for part in old.split() if "=" in part)
      same_host = info.get("host") == socket.gethostname()
      dead = same_host and info.get("pid", "").isdigit() and not _pid_alive(int(info["pid"]))
      log.warning("taking over the stale lock %s (%s%s)", self.path, old,
                  ", that process is gone" if dead else "")
    since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid={os.getpid()} host={socket.gethostname()} since={since}\n".encode(), 0)
    self.fd = fd
    return self

  def release(self) -> None:
    if self.fd is not None:
      os.ftruncate(self.fd, 0)
      fcntl.flock(self.fd, fcntl.LOCK_UN)
      os.close(self.fd)
      self.fd = None

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


# ----------------------------------------------------------------------------- config vs checkpoints


def _flatten(d, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict) and v:
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def saved_config(workdir: str) -> dict | None:
  """The config.json a previous run left in `workdir` (None if absent or unreadable)."""
  try:
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def config_diff(old: dict, config) -> list[tuple[str, object, object]]:
  """[(key, old, new)] of the model.* / optimizer.* keys whose values differ (the ones the train
  state's shapes come from), comparing JSON forms (tuples read back as lists)."""
  new = _flatten(json.loads(config.to_json_best_effort()))
  old = _flatten(old)
  keys = sorted(k for k in set(old) | set(new) if k.startswith(STATE_PREFIXES))
  missing = "<unset>"
  return [(k, old.get(k, missing), new.get(k, missing)) for k in keys
          if old.get(k, missing) != new.get(k, missing)]


def mismatch_message(config, workdir: str, step: int, differences: list[str]) -> str:
  """The error of a rerun whose state does not fit the workdir's checkpoint at `step`: the
  config keys that changed (old -> new), the first differing arrays, and how to proceed."""
  old = saved_config(workdir)
  changed = config_diff(old, config) if old is not None else []
  keys = ("; ".join(f"{k}: {o!r} -> {n!r}" for k, o, n in changed[:8])
          + (f"; ... {len(changed) - 8} more" if len(changed) > 8 else "")) or (
      "no model/optimizer key differs from config.json" if old is not None
      else "the workdir has no config.json")
  return (f"workdir {workdir} holds checkpoints (step {step}) of another model/optimizer state "
          f"than this config builds ({keys}; e.g. {'; '.join(differences[:3])}). Its checkpoints "
          "are left untouched. To train this config use another --workdir, or pass "
          "--config.overwrite_workdir=True to move the old run into "
          f"{os.path.join(workdir, 'replaced-<time>')} and start afresh; to resume the old run, "
          "rerun with its config (config.json).")


def move_run_aside(workdir: str) -> str:
  """Moves a previous run's files (checkpoints, metrics, tensorboard, export, config,
  predictions) into DIR/replaced-<time>/; returns that folder."""
  target = os.path.join(workdir, f"replaced-{time.strftime('%Y%m%d-%H%M%S')}")
  os.makedirs(target, exist_ok=True)
  for name in os.listdir(workdir):
    if name in RUN_FILES or (name.startswith("predictions_") and name.endswith(".jsonl")):
      os.replace(os.path.join(workdir, name), os.path.join(target, name))
  log.warning("overwrite_workdir: moved the previous run in %s to %s", workdir, target)
  return target
