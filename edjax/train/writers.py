"""Metric sinks of a run, on clu: metrics.jsonl (the CLI contract), TensorBoard, the log.

`create_writers(workdir)` gives a clu `MetricWriter` that fans every `write_scalars(step, ...)`
out to

- `JsonlWriter`: one `{"step": int, "wall_time": float, "<name>": float, ...}` line per call in
  `workdir/metrics.jsonl` (strict JSON: a NaN / Inf value is written as null and its name listed
  in `"nonfinite": [...]`; `wall_time` is seconds since the epoch; a resumed run first drops the
  rows past its step). clu has no JSON-lines writer, and this file is what scripts, tests and
  `experiments.warm_start_study` read, so it lives here, as a clu `MetricWriter` like the others;
- clu's `SummaryWriter`: TensorBoard event files in `workdir/tensorboard/` (tf.summary);
- clu's `LoggingWriter`: an INFO log line.

Only process 0 writes files; the others get a logging-only writer. Progress (steps/s, ETA with the
evals left and the export) is `ProgressReport`, clu's `periodic_actions.ReportProgress` with that
ETA, made by `create_progress`.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import os
import time
from typing import Any, Mapping

from clu import metric_writers, periodic_actions

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def jsonl_row(step: int, scalars: Mapping[str, Any], wall_time: float | None = None) -> dict:
  """One metrics.jsonl row: strict JSON (NaN / Inf -> null, their names in "nonfinite")."""
  row: dict = {"step": int(step), "wall_time": round(time.time() if wall_time is None
                                                     else wall_time, 3)}
  nonfinite = []
  for k, v in scalars.items():
    v = float(v)
    if math.isfinite(v):
      row[k] = v
    else:
      row[k] = None
      nonfinite.append(k)
  if nonfinite:
    row["nonfinite"] = nonfinite
  return row


def drop_rows_after(path: str, step: int) -> int:
  """Removes the rows of `path` past `step` (a resumed run logs those steps again), atomically;
  returns how many were dropped. A missing file drops nothing."""
  if not os.path.exists(path):
    return 0
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  keep = []
  for line in lines:
    try:
      row_step = json.loads(line).get("step", 0)
    except ValueError:  # a torn last line of a killed run
      continue
    if row_step <= step:
      keep.append(line)
  dropped = len(lines) - len(keep)
  if dropped:
    from edjax import fileio
    fileio.atomic_write(path, "".join(line + "\n" for line in keep))
  return dropped


class JsonlWriter(metric_writers.MetricWriter):
  """Appends `jsonl_row(step, scalars)` to a JSON-lines file, one line per `write_scalars`.

  Every line is flushed when written: a run that dies keeps every row it logged. With
  `resume_step`, the rows past it (logged by the run before it was stopped) are dropped first, so
  each step appears once. Non-scalar writes (images, texts, ...) are not part of the file's
  contract and are ignored.
  """

  def __init__(self, path: str, resume_step: int | None = None):
    self.path = path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if resume_step is not None:
      drop_rows_after(path, resume_step)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(json.dumps(jsonl_row(step, scalars), allow_nan=False) + "\n")

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass


def _hide_gpus_from_tensorflow() -> None:
  """clu's SummaryWriter runs on TensorFlow; keep TF off the accelerators JAX trains on."""
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")


def create_writers(workdir: str, enabled: bool = True, resume_step: int | None = None
                   ) -> tuple[metric_writers.MetricWriter, metric_writers.MetricWriter | None]:
  """(metrics, progress) writers of a run.

  metrics: metrics.jsonl + TensorBoard + logging under `workdir` (enabled), else logging only;
  `resume_step`: the step the run resumes from (metrics.jsonl's later rows are dropped).
  Synchronous on purpose: a row is on disk when `write_scalars` returns, so metrics.jsonl never
  lags the checkpoints (a resumed run's rows continue the file exactly).
  progress: the TensorBoard writer alone (None when not enabled), for `create_progress`'s
  `steps_per_sec` / `uptime` curves, which stay out of metrics.jsonl and the log (the progress
  note already logs them).
  """
  if not enabled:
    return metric_writers.create_default_writer(just_logging=True, asynchronous=False), None
  _hide_gpus_from_tensorflow()
  tensorboard = metric_writers.SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR))
  jsonl = JsonlWriter(os.path.join(workdir, METRICS_FILE), resume_step)
  metrics = metric_writers.MultiWriter([jsonl, metric_writers.LoggingWriter(), tensorboard])
  return metrics, tensorboard


class ProgressReport(periodic_actions.ReportProgress):
  """clu's progress note whose ETA counts what is still to come: the remaining train steps at
  the rate measured outside the timed parts, plus the evals left at the mean time of those done
  (`timed("eval")`), plus the export, estimated as the mean checkpoint save (`timed("checkpoint")`:
  both write the params once)."""

  def __init__(self, *, eval_every_steps: int | None = None, **kwargs):
    super().__init__(**kwargs)
    self._eval_every_steps = eval_every_steps
    self._parts_at_previous = 0.0
    self._counts: dict[str, int] = collections.Counter()

  @contextlib.contextmanager
  def timed(self, name: str, wait_jax_async_dispatch: bool = True):
    with super().timed(name, wait_jax_async_dispatch):
      yield
    self._counts[name] += 1

  def eta_seconds(self, step: int, t: float) -> float:
    """Seconds left: train steps + the evals left + the export."""
    parts = sum(self._time_per_part.values())
    train_time = max(t - self._previous_time - (parts - self._parts_at_previous), 1e-9)
    per_step = train_time / max(step - self._previous_step, 1)
    left = self._num_train_steps - step
    eta = left * per_step
    if self._eval_every_steps and self._counts["eval"]:
      # evals at multiples of eval_every_steps after `step`, and one at the last step
      evals_left = (self._num_train_steps // self._eval_every_steps
                    - step // self._eval_every_steps
                    + (self._num_train_steps % self._eval_every_steps != 0))
      eta += evals_left * self._time_per_part["eval"] / self._counts["eval"]
    if self._counts["checkpoint"]:
      eta += self._time_per_part["checkpoint"] / self._counts["checkpoint"]  # the export
    return eta

  def _apply(self, step: int, t: float):
    steps_per_sec = (step - self._previous_step) / max(t - self._previous_time, 1e-9)
    message = f"{steps_per_sec:.1f} steps/s"
    if self._num_train_steps:
      message += (f", {100 * step / self._num_train_steps:.1f}% ({step}/{self._num_train_steps}),"
                  f" ETA (with eval and export): {_format_secs(self.eta_seconds(step, t))}")
    if self._time_per_part:
      total = time.monotonic() - self._t0
      message += " ({} : {})".format(_format_secs(total), ", ".join(
          f"{100 * dt / total:.1f}% {name}" for name, dt in sorted(self._time_per_part.items())))
    self._parts_at_previous = sum(self._time_per_part.values())
    logging.info("%s", message)
    if self._writer is not None:
      self._writer.write_scalars(step, {"steps_per_sec": steps_per_sec})
      self._writer.write_scalars(step, {"uptime": time.monotonic() - self._t0})


def _format_secs(secs: float) -> str:
  return periodic_actions._format_secs(secs)  # clu's "1h2m3s" form


def create_progress(total_steps: int, every_steps: int,
                    writer: metric_writers.MetricWriter | None = None,
                    eval_every_steps: int | None = None) -> ProgressReport:
  """The run's progress report (steps/s, percent done, ETA including the evals left and the
  export, time spent in `timed` parts), logged every `every_steps` steps and at the end; with a
  writer it also records `steps_per_sec` and `uptime`. Call it after every step with the number
  of steps done."""
  return ProgressReport(num_train_steps=total_steps, writer=writer, every_steps=every_steps,
                        every_secs=None, eval_every_steps=eval_every_steps)
