"""Metric sinks of a run, on clu: metrics.jsonl (the CLI contract), TensorBoard, the log.

`create_writers(workdir)` gives a clu `MetricWriter` that fans every `write_scalars(step, ...)`
out to

- `JsonlWriter`: one `{"step": int, "<name>": float, ...}` line per call in
  `workdir/metrics.jsonl`. clu has no JSON-lines writer, and this file is what scripts, tests and
  `experiments.warm_start_study` read, so it lives here, as a clu `MetricWriter` like the others;
- clu's `SummaryWriter`: TensorBoard event files in `workdir/tensorboard/` (tf.summary);
- clu's `LoggingWriter`: an INFO log line.

Only process 0 writes files; the others get a logging-only writer. Progress (steps/s, ETA) is
clu's `periodic_actions.ReportProgress`, made by `create_progress`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from clu import metric_writers, periodic_actions

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class JsonlWriter(metric_writers.MetricWriter):
  """Appends `{"step": int, **scalars}` to a JSON-lines file, one line per `write_scalars`.

  Every line is flushed when written: a run that dies keeps every row it logged. Non-scalar
  writes (images, texts, ...) are not part of the file's contract and are ignored.
  """

  def __init__(self, path: str):
    self.path = path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(json.dumps(row) + "\n")

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


def create_writers(workdir: str, enabled: bool = True
                   ) -> tuple[metric_writers.MetricWriter, metric_writers.MetricWriter | None]:
  """(metrics, progress) writers of a run.

  metrics: metrics.jsonl + TensorBoard + logging under `workdir` (enabled), else logging only.
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
  metrics = metric_writers.MultiWriter([JsonlWriter(os.path.join(workdir, METRICS_FILE)),
                                        metric_writers.LoggingWriter(), tensorboard])
  return metrics, tensorboard


def create_progress(total_steps: int, every_steps: int,
                    writer: metric_writers.MetricWriter | None = None
                    ) -> periodic_actions.ReportProgress:
  """clu's progress report (steps/s, percent done, ETA, time spent in `timed` parts), logged every
  `every_steps` steps and at the end; with a writer it also records `steps_per_sec` and `uptime`.
  Call it after every step with the number of steps done."""
  return periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer,
                                         every_steps=every_steps, every_secs=None)
