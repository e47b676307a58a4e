"""Orbax checkpoints of the train state: async, keep N, atomic, corrupt-latest fallback.

Each checkpoint holds `state` (step, params, opt_state, rng as a StandardSave pytree) and `meta`
(JSON: step, data position, seed). Orbax writes to a temporary directory and renames it
when complete, so a crash never leaves a checkpoint that looks finished; a checkpoint that fails
to restore anyway (truncated files) is skipped with a warning, moved to checkpoints.corrupt/,
and the previous one is used. A checkpoint that reads fine but holds arrays of other shapes than
the running job's state (the config changed) is not corrupt: restoring raises StateMismatchError
and touches nothing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from typing import Any

import jax
import orbax.checkpoint as ocp

from edjax.convert import CheckpointError

log = logging.getLogger("edjax")


class StateMismatchError(CheckpointError):
  """A readable checkpoint whose arrays (paths, shapes, dtypes) differ from the running state."""

  def __init__(self, step: int, differences: list[str]):
    self.step, self.differences = step, differences
    super().__init__(f"checkpoint step {step} does not fit the train state: "
                     + "; ".join(differences[:5]))


def _key(k) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _shapes(tree) -> dict:
  """{path: (shape, dtype)} of a pytree of arrays / metadata, paths as '/'-joined key names (a
  NamedTuple's field and the dict orbax stores it as give the same path)."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(_key(k) for k in path): (tuple(leaf.shape), str(leaf.dtype))
          for path, leaf in leaves if hasattr(leaf, "shape")}


def state_differences(saved, abstract) -> list[str]:
  """What differs between a checkpoint's array metadata and the abstract state: missing, extra
  and reshaped arrays, one line each ([] when they fit)."""
  a, b = _shapes(saved), _shapes(abstract)
  out = [f"{k}: {a[k][0]} {a[k][1]} saved, {b[k][0]} {b[k][1]} now"
         for k in sorted(set(a) & set(b)) if a[k] != b[k]]
  out += [f"{k}: saved, not in this state" for k in sorted(set(a) - set(b))]
  out += [f"{k}: in this state, not saved" for k in sorted(set(b) - set(a))]
  return out


class Checkpointer:
  """Thin wrapper over ocp.CheckpointManager for {'state': pytree, 'meta': json}."""

  def __init__(self, directory: str, max_to_keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "meta"))

  def all_steps(self) -> list[int]:
    self.manager.reload()
    return sorted(self.manager.all_steps())

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Starts an (async) save of `state` at `step`; call wait() before reading it back."""
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    meta=ocp.args.JsonSave(meta)), force=True)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def saved_shapes(self, step: int):
    """The array metadata tree of `step`'s state, or None when it cannot be read."""
    try:
      md = ocp.StandardCheckpointer().metadata(os.path.join(self.directory, str(step), "state"))
      tree = getattr(getattr(md, "item_metadata", md), "tree", md)
    except Exception:  # unreadable metadata: the restore below decides
      return None
    return tree if _shapes(tree) else None  # garbage metadata reads as an empty tree

  def read_meta(self, step: int) -> dict | None:
    """The JSON meta of `step` (step, data position, seed, health), None when unreadable."""
    try:
      with open(os.path.join(self.directory, str(step), "meta", "metadata"), encoding="utf-8") as f:
        return dict(json.load(f))
    except (OSError, ValueError, TypeError):
      return None

  def restore_latest(self, abstract_state: Any, step: int | None = None
                     ) -> tuple[Any, dict] | None:
    """(state, meta) of the newest checkpoint that restores (or of `step` alone), or None when
    there is none.

    `abstract_state` is a pytree of jax.ShapeDtypeStruct with shardings: arrays come back
    placed and sharded as the running job wants them. A step whose metadata reads but whose
    arrays differ from `abstract_state` raises StateMismatchError (nothing is moved); only a
    step whose files fail to read is moved to checkpoints.corrupt/.
    """
    steps = self.all_steps()
    if step is not None:
      if step not in steps:
        raise CheckpointError(f"no checkpoint at step {step} in {self.directory} (steps: {steps})")
      steps = [step]
    for step in reversed(steps):
      saved = self.saved_shapes(step)
      if saved is not None:
        differences = state_differences(saved, abstract_state)
        if differences:
          raise StateMismatchError(step, differences)
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        return restored.state, dict(restored.meta)
      except Exception as e:  # truncated / corrupt files: fall back to the previous step
        aside = self._move_aside(step)
        log.warning("checkpoint at step %d in %s could not be restored (%s: %s); moved it to %s "
                    "and trying the previous one", step, self.directory, type(e).__name__,
                    str(e)[:200], aside)
    return None

  def move_newer_aside(self, step: int) -> list[int]:
    """Moves the steps after `step` to checkpoints.diverged/ (kept, not deleted), so that a run
    resumed at `step` saves the later steps again; returns them."""
    newer = [s for s in self.all_steps() if s > step]
    for s in newer:
      log.warning("moved checkpoint step %d to %s", s, self._move_aside(s, ".diverged"))
    return newer

  def _move_aside(self, step: int, suffix: str = ".corrupt") -> str:
    """Moves a step out of the manager's directory (kept for inspection), so that training can
    save that step again."""
    target_root = self.directory + suffix
    os.makedirs(target_root, exist_ok=True)
    target = os.path.join(target_root, f"{step}-{int(time.time())}")
    shutil.move(os.path.join(self.directory, str(step)), target)
    self.manager.reload()
    return target

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
