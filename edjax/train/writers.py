"""Metric sinks: metrics.jsonl (the CLI contract), TensorBoard event files, a progress line."""

from __future__ import annotations

import json
import os
import sys
import time


class MetricWriter:
  """Appends {"step": int, **scalars} lines to workdir/metrics.jsonl and TensorBoard summaries.

  Only process 0 writes (`enabled=False` elsewhere).
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: dict) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(json.dumps(row) + "\n")
    for k, v in row.items():
      if k != "step":
        self._tb.add_scalar(k, v, int(step))
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


class Progress:
  """One line per report: step, loss, steps/s, tokens/s, ETA."""

  def __init__(self, total_steps: int, start_step: int, stream=sys.stdout):
    self.total, self.stream = total_steps, stream
    self.t0, self.step0, self.tokens = time.time(), start_step, 0

  def add_tokens(self, n: int) -> None:
    self.tokens += n

  def report(self, step: int, loss: float, extra: str = "") -> str:
    elapsed = max(time.time() - self.t0, 1e-9)
    rate = (step - self.step0) / elapsed
    eta = (self.total - step) / rate if rate > 0 else float("inf")
    line = (f"step {step}/{self.total} | loss {loss:.4f} | {rate:.2f} steps/s | "
            f"{self.tokens / elapsed:,.0f} target tokens/s | ETA {eta:,.0f}s{extra}")
    print(line, file=self.stream, flush=True)
    return line
