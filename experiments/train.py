r"""Train (fine-tune) a warm-started encoder-decoder: the command line of `edjax.train.trainer`.

  python -m experiments.train --config=configs/bert2bert.py[:variant] --workdir=DIR \
      [--config.total_steps=1000 --config.mesh.fsdp=2 ...]

Rerunning the same command resumes. What the run writes into DIR: see `edjax.train.trainer`.
"""

from __future__ import annotations

import logging

import jax
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from edjax.train.trainer import train_and_evaluate

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "configs/<name>.py[:variant]", lock_config=True)
flags.DEFINE_string("workdir", None, "Output directory (rerun to resume).")
flags.mark_flags_as_required(["config", "workdir"])


class _WithoutOrbaxInfo(logging.Filter):
  """Keeps INFO logs (clu's metrics and progress lines, the trainer's) but drops orbax's, which
  log every file of every checkpoint save; orbax's warnings and errors stay."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


def main(argv):
  del argv
  absl_logging.set_verbosity(absl_logging.INFO)
  absl_logging.get_absl_handler().addFilter(_WithoutOrbaxInfo())
  final = train_and_evaluate(FLAGS.config, FLAGS.workdir)
  if final and jax.process_index() == 0:
    print("\nfinal eval: " + ", ".join(f"{k} {v:.4g}" for k, v in final.items()
                                       if isinstance(v, float)))
    for i, (src, pred, ref) in enumerate(final.get("examples", []), 1):
      print(f"\nexample {i}\n  input:      {src}\n  prediction: {pred}\n  reference:  {ref}")


if __name__ == "__main__":
  app.run(main)
