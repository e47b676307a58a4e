"""The end-of-run plot: `workdir/metrics.png` from `workdir/metrics.jsonl` (matplotlib, Agg).

    path = plot_metrics(workdir)   # None when metrics.jsonl has no rows

One panel for the losses (train/loss and eval/loss against steps) and one per eval metric
(eval/bleu, eval/sari, ...). Non-finite values (null in metrics.jsonl) are left out.
"""

from __future__ import annotations

import json
import math
import os

PLOT_FILE = "metrics.png"
LOSS_KEYS = ("train/loss", "eval/loss")


def read_series(metrics_path: str) -> dict[str, tuple[list[int], list[float]]]:
  """{name: (steps, values)} of every numeric column of a metrics.jsonl (nulls skipped)."""
  series: dict[str, tuple[list[int], list[float]]] = {}
  with open(metrics_path, encoding="utf-8") as f:
    for line in f:
      try:
        row = json.loads(line)
      except ValueError:  # a torn last line
        continue
      for key, value in row.items():
        if key in ("step", "wall_time") or not isinstance(value, (int, float)):
          continue
        if isinstance(value, bool) or not math.isfinite(value):
          continue
        steps, values = series.setdefault(key, ([], []))
        steps.append(int(row["step"]))
        values.append(float(value))
  return series


def plot_metrics(workdir: str, metrics_file: str = "metrics.jsonl") -> str | None:
  """Writes workdir/metrics.png (losses, then each eval metric, against steps); its path, or None
  when there is nothing to plot."""
  path = os.path.join(workdir, metrics_file)
  if not os.path.exists(path):
    return None
  series = read_series(path)
  metrics = sorted(k for k in series if k.startswith("eval/") and k not in LOSS_KEYS)
  losses = [k for k in LOSS_KEYS if k in series]
  if not losses and not metrics:
    return None
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib.figure import Figure
  from edjax import fileio
  panels = ([losses] if losses else []) + [[k] for k in metrics]
  fig = Figure(figsize=(4 * len(panels), 3.2))
  for i, keys in enumerate(panels):
    ax = fig.add_subplot(1, len(panels), i + 1)
    for key in keys:
      steps, values = series[key]
      ax.plot(steps, values, marker="o" if len(steps) < 20 else None, label=key)
    ax.set_xlabel("step")
    ax.set_title(keys[0] if len(keys) == 1 else "loss")
    if len(keys) > 1:
      ax.legend()
    ax.grid(alpha=0.3)
  fig.tight_layout()
  out = os.path.join(workdir, PLOT_FILE)
  fileio.atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
  return out
