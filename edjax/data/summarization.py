"""tfds summarization datasets: ``cnn_dailymail`` (source ``article``, target ``highlights``) and
``xsum`` (``document`` / ``summary``), text datasets of `edjax.data.pipeline`.

`tfds.load(name, split=..., data_dir=data_dir or tfds' default, shuffle_files=False)`, read
through tf.data in file order in chunks of `pipeline.CHUNK` and tokenized in Python with the same
`Tokenizer` (the `tokenizers` library's multi-threaded batch encoding). Every host reads and
tokenizes the whole training split at every (re)start (README: measured costs). A name with a
tfds config or version (``cnn_dailymail:3.4.0``) is passed to tfds as is. Targets are kept
verbatim (cnn_dailymail highlights keep their newlines; the tokenizers treat them as spaces).
"""

from __future__ import annotations

from typing import Iterator

from edjax.data import pipeline
from edjax.data.streams import base_name

TFDS_KEYS = {"cnn_dailymail": ("article", "highlights"), "xsum": ("document", "summary")}
DEFAULTS = dict(
    train_splits=("train",),  # splits concatenated (in order) into the training set
    eval_split="validation",
    data_dir="",              # the tfds data_dir ("": $TFDS_DATA_DIR or ~/tensorflow_datasets)
    download=True,            # let tfds download and prepare a missing dataset
)


def tfds_chunks(name: str, split: str, data_dir: str | None, download: bool,
                limit: int | None = None) -> Iterator[pipeline.Pairs]:
  """(source, target) chunks of a tfds text dataset, in file order (shuffle_files=False)."""
  import tensorflow_datasets as tfds
  from edjax.data import wiki_split  # noqa: F401  (tfds compatibility shim)
  import tensorflow as tf
  try:  # tf.data only: keep TensorFlow off the accelerators JAX uses
    tf.config.set_visible_devices([], "GPU")
  except (RuntimeError, ValueError):
    pass
  source_key, target_key = TFDS_KEYS[base_name(name)]
  try:
    ds = tfds.load(name, split=split, data_dir=data_dir, shuffle_files=False, download=download)
  except Exception as e:  # tfds raises several types for a missing / unprepared dataset
    raise FileNotFoundError(
        f"cannot load tfds dataset {name!r} split {split!r} from "
        f"{data_dir or 'the default tfds data_dir'}: {e}") from e
  if limit is not None:
    ds = ds.take(limit)
  ds = ds.map(lambda ex: (ex[source_key], ex[target_key])).batch(pipeline.CHUNK)
  for sources, targets in tfds.as_numpy(ds):
    yield [(s.decode("utf-8"), t.decode("utf-8")) for s, t in zip(sources, targets)]


def _read(data_config, name: str, split: str, limit: int | None = None):
  return tfds_chunks(name, split, pipeline.setting(data_config, "data_dir") or None,
                     bool(pipeline.setting(data_config, "download")), limit)


def _train_chunks(data_config, name: str) -> Iterator[pipeline.Pairs]:
  splits = tuple(pipeline.setting(data_config, "train_splits"))
  if not splits:
    raise ValueError(f"data.train_splits is empty for dataset {name!r}")
  for split in splits:
    yield from _read(data_config, name, split)


def _eval_pairs(data_config, name: str, limit: int | None) -> pipeline.Pairs:
  split = pipeline.setting(data_config, "eval_split")
  return [p for chunk in _read(data_config, name, split, limit) for p in chunk]


for _name in TFDS_KEYS:
  pipeline.register_text_dataset(_name, pipeline.TextSource(_train_chunks, _eval_pairs),
                                 defaults=DEFAULTS)
