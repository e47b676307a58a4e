"""Orbax checkpoints of the train state: async, keep N, atomic, corrupt-latest fallback.

Each checkpoint holds `state` (step, params, opt_state, rng as a StandardSave pytree) and `meta`
(JSON: step, data position, seed). Orbax writes to a temporary directory and renames it
when complete, so a crash never leaves a checkpoint that looks finished; a checkpoint that fails
to restore anyway (truncated files) is skipped with a warning and the previous one is used.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Any

import orbax.checkpoint as ocp

log = logging.getLogger("edjax")


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

  def restore_latest(self, abstract_state: Any) -> tuple[Any, dict] | None:
    """(state, meta) of the newest checkpoint that restores, or None when there is none.

    `abstract_state` is a pytree of jax.ShapeDtypeStruct with shardings: arrays come back
    placed and sharded as the running job wants them.
    """
    for step in reversed(self.all_steps()):
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

  def _move_aside(self, step: int) -> str:
    """Moves an unreadable step out of the manager's directory (kept for inspection), so that
    training can save that step again."""
    target_root = self.directory + ".corrupt"
    os.makedirs(target_root, exist_ok=True)
    target = os.path.join(target_root, f"{step}-{int(time.time())}")
    shutil.move(os.path.join(self.directory, str(step)), target)
    self.manager.reload()
    return target

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
