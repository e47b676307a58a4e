"""Whether a run's loss is still sane: each saved checkpoint's meta says healthy or not, and the
NaN / Inf error names the last healthy checkpoint and how to go on from it."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from edjax.train import checkpoint as ckpt_lib


@dataclasses.dataclass
class Health:
  """Whether the loss is still sane, for marking each saved checkpoint healthy or not: the loss
  and grad norm finite and the loss at most `factor` x the median of the last `window` steps'
  losses (a loss that explodes before it turns NaN leaves checkpoints not worth resuming)."""
  factor: float = 10.0
  window: int = 50
  losses: list = dataclasses.field(default_factory=list)

  def check(self, loss: float, grad_norm: float) -> bool:
    """Records one step's loss; True when the step is healthy."""
    recent = self.losses[-self.window:]
    ok = math.isfinite(loss) and math.isfinite(grad_norm) and not (
        len(recent) >= 3 and loss > self.factor * float(np.median(recent)))
    if math.isfinite(loss):
      self.losses = self.losses[-self.window + 1:] + [loss]
    return ok


def last_healthy(ckpt: ckpt_lib.Checkpointer) -> int | None:
  """The newest checkpoint whose meta says healthy (one saved before health was recorded
  counts as healthy)."""
  for step in reversed(ckpt.all_steps()):
    if (ckpt.read_meta(step) or {}).get("healthy", True):
      return step
  return None


def divergence_message(loss: float, step: int, ckpt: ckpt_lib.Checkpointer, config) -> str:
  """The NaN/Inf error: the step, the last healthy checkpoint and how to go on from it."""
  good = last_healthy(ckpt)
  lr = config.optimizer.learning_rate
  if good is None:
    return (f"loss is {loss} at step {step}: stopping. No healthy checkpoint was saved in "
            f"{ckpt.directory}; lower --config.optimizer.learning_rate (now {lr:g}, e.g. "
            f"{lr / 2:g}) or check the data, and rerun.")
  later = [s for s in ckpt.all_steps() if s > good]
  return (f"loss is {loss} at step {step}: stopping. The last good checkpoint (step {good}) in "
          f"{ckpt.directory} is kept" + (f" (steps {later} were saved while the loss was "
                                         "blowing up)" if later else "")
          + f"; rerun with --config.resume_step={good} and a lower "
          f"--config.optimizer.learning_rate (now {lr:g}, e.g. {lr / 2:g}), or check the data.")
