r"""Train (fine-tune) a warm-started encoder-decoder: the command line of `edjax.train.trainer`.

  python -m experiments.train --config=configs/bert2bert.py[:variant] --workdir=DIR \
      [--config.total_steps=1000 --config.mesh.fsdp=2 ...]

Rerunning the same command resumes. What the run writes into DIR: see `edjax.train.trainer`.
An edjax error (a bad config key, a busy workdir, a config that does not fit DIR's checkpoints,
a diverged loss, ...) prints one line `error: ...` and exits 1; EDJAX_DEBUG=1 shows the traceback.
SIGTERM (or a first Ctrl-C) saves a checkpoint at the current step, prints one line `preempted:
... step N ...` and exits 143 (130 for Ctrl-C): rerunning resumes with no lost steps.
"""

from __future__ import annotations

import errno
import logging
import os
import sys

import jax
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from edjax.convert import CheckpointError
from edjax.model_configs import ConfigError
from edjax.train.preemption import TrainingPreempted
from edjax.train.trainer import train_and_evaluate
from edjax.train.workdir import TrainingError

USER_ERRORS = (ConfigError, CheckpointError, TrainingError)  # the message says what to do
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # a full disk (or quota) is the user's to fix

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "configs/<name>.py[:variant]", lock_config=True)
flags.DEFINE_string("workdir", None, "Output directory (rerun to resume).")
flags.mark_flags_as_required(["config", "workdir"])


class _WithoutOrbaxInfo(logging.Filter):
  """Keeps INFO logs (clu's metrics and progress lines, the trainer's) but drops orbax's, which
  log every file of every checkpoint save; orbax's warnings and errors stay."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


def _override_error(e: BaseException) -> str:
  """ml_collections' error for a --config.KEY override of a key the config lacks (three chained
  tracebacks, an escaped message) as one sentence, its "Did you mean" kept."""
  chain, seen = [], e
  while seen is not None:  # the plain-text messages of the chained errors, outermost first
    if seen.args and isinstance(seen.args[0], str):
      chain.append(seen.args[0])
    seen = seen.__context__
  text = next((t for t in chain if "Did you mean" in t), chain[-1] if chain else str(e))
  key, _, hint = text.partition("\n")
  return (f"a --config override names no config key ({key}); {hint or 'check the spelling'} "
          "(configs/<name>.py lists the keys)")


def parse_flags(argv):
  """absl's flag parsing, where a bad --config.KEY override or flag value is one `error:` line
  (exit 2), not a traceback; EDJAX_DEBUG=1 shows the traceback."""
  try:
    return FLAGS(argv)
  except flags.Error as e:  # absl's own: an unknown flag, a value of the wrong type
    if os.environ.get("EDJAX_DEBUG") == "1":
      raise
    print(f"error: {e}", file=sys.stderr)
  except (AttributeError, KeyError) as e:  # ml_collections: --config.KEY with no such KEY
    if os.environ.get("EDJAX_DEBUG") == "1":
      raise
    print(f"error: {_override_error(e)}", file=sys.stderr)
  sys.exit(2)


def main(argv):
  del argv
  absl_logging.set_verbosity(absl_logging.INFO)
  absl_logging.get_absl_handler().addFilter(_WithoutOrbaxInfo())
  try:
    final = train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except USER_ERRORS as e:
    if os.environ.get("EDJAX_DEBUG") == "1":
      raise
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  except OSError as e:
    if e.errno not in DISK_FULL or os.environ.get("EDJAX_DEBUG") == "1":
      raise
    print(f"error: the disk is full ({e.strerror}) while writing "
          f"{e.filename or FLAGS.workdir}: free space, lower checkpoint.max_to_keep, or point "
          "--workdir at a bigger disk, then rerun the same command to resume", file=sys.stderr)
    sys.exit(1)
  except TrainingPreempted as e:  # saved; the scheduler sees a SIGTERM'd process (143)
    print(f"{e}", file=sys.stderr)
    sys.exit(e.exit_code)
  if final and jax.process_index() == 0:
    print("\nfinal eval: " + ", ".join(f"{k} {v:.4g}" for k, v in final.items()
                                       if isinstance(v, float)))
    for i, (src, pred, ref) in enumerate(final.get("examples", []), 1):
      print(f"\nexample {i}\n  input:      {src}\n  prediction: {pred}\n  reference:  {ref}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
