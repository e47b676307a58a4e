"""WikiSplit (Botha et al. 2018): a tfds builder and a direct TSV reader.

WikiSplit pairs a long sentence (column 1) with a rewrite of it as two sentences (column 2,
sentences delimited by `` <::::> ``). Files, all UTF-8 TSV without header:

  train.tsv.zip (989,944 pairs; not in the offline copy), tune.tsv, validation.tsv, test.tsv
  (5,000 pairs each) - https://github.com/google-research-datasets/wiki-split

Two ways to read it, giving the same records:

* `read_wiki_split(split)`: reads ``<dir>/<split>.tsv`` directly (no TensorFlow, no cache, no
  writes). `load_wiki_split` uses it whenever the split's file is on disk.
* the tfds builder `WikiSplit` (registered as ``edjax_wiki_split``, version 1.0.0)::

      import edjax.data.wiki_split  # registers the builder
      ds = tfds.load("edjax_wiki_split", split="test", data_dir=tmp,
                     download_and_prepare_kwargs=dict(download_config=tfds.download.DownloadConfig(
                         manual_dir="/path/to/wiki_split")))

  Offline: the split files are taken from ``download_config.manual_dir`` or, when that holds none
  of them, from `edjax.resources.wiki_split_dir()` (``$EDJAX_DATA_DIR/wiki_split``); only the
  splits whose files are
  there are built (the shared offline copy has tune / validation / test) and nothing is fetched.
  Online: when neither folder holds any split file, all four files are fetched with
  ``dl_manager.download`` from the public repository (train.tsv.zip is extracted).
  Features: ``complex_sentence`` (column 1) and ``simple_sentences`` (column 2 verbatim, with the
  `` <::::> `` delimiter). Records keep file order (key = line number).

`EDJAX_DATA_DIR` defaults to ``<repo>/../shared/data``. The shared folder is read-only: prepared
tfds data goes to the ``data_dir`` you give, else ``$TFDS_DATA_DIR``, else
``~/tensorflow_datasets`` (tfds' default).

The dataset ``wiki_split`` (`edjax.data.build_dataset`): training pairs from `train_splits`
(default tune + validation), the eval subset from `eval_split` (default test), read from
`data_dir` (default ``$EDJAX_DATA_DIR/wiki_split``) by `load_wiki_split` (a split missing there
is a DataNotFoundError naming where it looked, unless ``data.download=True``: then tfds fetches
it, after checking within 10 s that github.com answers); target = `target_text`
of column 2, so detokenized predictions compare to references directly. The files are sorted
alphabetically, so their first rows are not representative (they all start with quotes, digits or
"A"): keep the default eval_order='shuffled'.

This module is the one home of WikiSplit's format: `DELIMITER` / `MARK` and `target_text` (the
pipeline's TSV reader and `edjax.metrics.normalize_split_delimiter` use them).
"""

from __future__ import annotations

import os
import socket
import sys
import zipfile

import tensorflow_datasets as tfds

from edjax import resources
from edjax.data import pipeline
from edjax.data.pipeline import parse_tsv_lines
from edjax.data.registry import DataError, DataNotFoundError


def ensure_tfds_compat() -> None:
  """Works around tensorflow/datasets#11212 (open as of tfds 4.9.10).

  tfds' `DatasetBuilder.code_path` (used by every `download_and_prepare`, ours and cnn_dailymail's
  alike) imports the `importlib_resources` backport, which tfds only declares for Python < 3.9. When
  the backport is missing, alias the standard library's `importlib.resources` (same `abc.Traversable`
  API) under its name. A no-op when the backport is installed.
  """
  try:
    import importlib_resources  # noqa: F401
  except ImportError:
    from importlib import resources as stdlib_resources
    from importlib.resources import abc  # noqa: F401  (tfds reads importlib_resources.abc)
    sys.modules["importlib_resources"] = stdlib_resources


ensure_tfds_compat()

SPLITS = ("train", "tune", "validation", "test")
MARK = "<::::>"  # WikiSplit's sentence delimiter in column 2
DELIMITER = f" {MARK} "  # as it stands between two sentences
URL = "https://github.com/google-research-datasets/wiki-split/raw/master/"
# split -> file name in the release (and in a manual dir)
FILES = {"train": "train.tsv.zip", "tune": "tune.tsv", "validation": "validation.tsv",
         "test": "test.tsv"}
DOWNLOAD_HOST = "github.com"
DOWNLOAD_TIMEOUT_S = 10.0  # how long data.download=True waits to reach DOWNLOAD_HOST


def target_text(text: str) -> str:
  """Column 2 -> the training target: the sentences joined by one space (idempotent).

  ``"A was born . <::::> He died ."`` -> ``"A was born . He died ."``: a plain two-sentence text,
  so that detokenized predictions compare to references directly (SARI / BLEU / exact match).
  A text without the delimiter (any other dataset's target) is returned unchanged.
  """
  if MARK not in text:
    return text
  return text.replace(DELIMITER, " ").replace(MARK, " ").strip()


def _iter_rows(path: str):
  """Yields (column 1, column 2) of a WikiSplit TSV, or of the .tsv inside a zip (file order)."""
  if zipfile.is_zipfile(path):  # tfds names downloads by hash: sniff instead of the suffix
    with zipfile.ZipFile(path) as zf:
      name = next(n for n in zf.namelist() if n.endswith(".tsv"))
      with zf.open(name) as f:
        yield from parse_tsv_lines(f, f"{path}:{name}")
  else:
    with open(path, "rb") as f:
      yield from parse_tsv_lines(f, path)


def _split_path(directory: str, split: str) -> str | None:
  """The file of `split` in `directory` (``<split>.tsv``, or train.tsv.zip for train), if any."""
  for name in (f"{split}.tsv", FILES[split]):
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      return path
  return None


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f"unknown WikiSplit split {split!r}: expected one of {SPLITS}")


def read_wiki_split(split: str, directory: str | None = None) -> list[tuple[str, str]]:
  """(complex_sentence, simple_sentences) rows of ``<directory>/<split>.tsv``, in file order.

  `directory` defaults to `resources.wiki_split_dir()`. Column 2 is returned verbatim (apply
  `target_text`).
  """
  _check_split(split)
  directory = directory or resources.wiki_split_dir()
  if not os.path.isdir(directory):
    raise DataNotFoundError(
        f"WikiSplit folder {directory} does not exist: set EDJAX_DATA_DIR to the folder that holds "
        "wiki_split/ (or pass data_dir), or prepare the tfds builder online")
  path = _split_path(directory, split)
  if path is None:
    raise DataNotFoundError(
        f"WikiSplit split {split!r} not found in {directory} (expected {FILES[split]})")
  return list(_iter_rows(path))


def tfds_dir(tfds_data_dir: str | None = None) -> str:
  """Where tfds keeps prepared datasets: `tfds_data_dir`, else $TFDS_DATA_DIR, else
  ~/tensorflow_datasets."""
  return os.path.expanduser(tfds_data_dir or os.environ.get("TFDS_DATA_DIR")
                            or "~/tensorflow_datasets")


def _prepared(tfds_data_dir: str | None) -> str | None:
  """The folder of an already prepared `WikiSplit` builder, if there is one (nothing is written)."""
  path = os.path.join(tfds_dir(tfds_data_dir), WikiSplit.name, str(WikiSplit.VERSION))
  return path if os.path.exists(os.path.join(path, "dataset_info.json")) else None


def check_reachable(host: str = DOWNLOAD_HOST, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
  """DataError when `host`:443 cannot be reached within `timeout` seconds (before tfds would
  retry a download for minutes)."""
  try:
    socket.create_connection((host, 443), timeout=timeout).close()
  except OSError as e:
    raise DataError(f"data.download=True but {host} cannot be reached ({e}) within {timeout:g}s: "
                    "run offline with the WikiSplit files in EDJAX_DATA_DIR/wiki_split or "
                    "config.data.data_dir") from None


def load_wiki_split(split: str, data_dir: str | None = None, *, tfds_data_dir: str | None = None,
                    download: bool = False) -> list[tuple[str, str]]:
  """(source, target) pairs of a WikiSplit split, target = `target_text` of column 2.

  Reads ``<data_dir>/<split>.tsv`` directly when it exists (data_dir defaults to
  `resources.wiki_split_dir()`), else an already prepared tfds builder in `tfds_data_dir`
  (default: $TFDS_DATA_DIR or ~/tensorflow_datasets). Otherwise, only with `download=True` (the
  config's ``data.download``; e.g. the 1M-pair train split on a machine with internet), it
  prepares the tfds builder there, downloading the public files once `DOWNLOAD_HOST` answers
  within `DOWNLOAD_TIMEOUT_S`; without it a DataNotFoundError names every place it looked and
  the settings that move them. Both paths give the same rows in the same (file) order.
  """
  _check_split(split)
  directory = data_dir or resources.wiki_split_dir()
  if os.path.isdir(directory) and _split_path(directory, split) is not None:
    rows = read_wiki_split(split, directory)
  else:
    if not download and _prepared(tfds_data_dir) is None:
      where = "config.data.data_dir" if data_dir else "$EDJAX_DATA_DIR/wiki_split"
      raise DataNotFoundError(
          f"WikiSplit split {split!r} not found: looked for {directory}/{split}.tsv ({where}"
          + ("" if os.path.isdir(directory) else ", a folder that does not exist")
          + f") and for a prepared tfds copy in {os.path.join(tfds_dir(tfds_data_dir), WikiSplit.name)}. "
          "Set EDJAX_DATA_DIR to the folder that holds wiki_split/ (or config.data.data_dir to "
          f"the folder of the TSVs), or pass --config.data.download=True to download it")
    if download and _prepared(tfds_data_dir) is None:
      check_reachable()
    manual = directory if os.path.isdir(directory) else None
    rows = [(c, s) for c, s in iterate_builder(split, tfds_data_dir, manual_dir=manual)]
  return [(c, target_text(s)) for c, s in rows]


def iterate_builder(split: str, data_dir: str | None = None, manual_dir: str | None = None):
  """Prepares (if needed) the `WikiSplit` builder in `data_dir`; yields its rows (file order)."""
  builder = WikiSplit(data_dir=data_dir)
  config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
  builder.download_and_prepare(download_config=config)
  if split not in builder.info.splits:
    raise ValueError(
        f"the prepared {builder.name} in {builder.data_dir} has splits "
        f"{sorted(builder.info.splits)}, not {split!r}: it was built from a local copy without "
        f"{FILES[split]}. Put that file beside the others (or prepare online from a folder without "
        f"any WikiSplit file) and delete {builder.data_dir} to prepare it again")
  ds = builder.as_dataset(split=split, shuffle_files=False)
  for ex in tfds.as_numpy(ds):
    yield ex["complex_sentence"].decode("utf-8"), ex["simple_sentences"].decode("utf-8")


class WikiSplit(tfds.core.GeneratorBasedBuilder):
  """WikiSplit split-and-rephrase pairs, from a local copy (offline) or the public repository."""

  name = "edjax_wiki_split"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "WikiSplit as released (Botha et al. 2018); column 2 verbatim."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Optional. Put any of train.tsv.zip (or train.tsv), tune.tsv, validation.tsv, test.tsv from "
      f"{URL} in the manual dir (or in $EDJAX_DATA_DIR/wiki_split); only the splits found there are "
      "built and nothing is downloaded. With none found, all four files are downloaded.")

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description="WikiSplit: a long sentence and its rewrite as two sentences.",
        features=tfds.features.FeaturesDict({
            "complex_sentence": tfds.features.Text(),
            "simple_sentences": tfds.features.Text(),
        }),
        supervised_keys=("complex_sentence", "simple_sentences"),
        disable_shuffling=True,  # keep file order (the files are sorted; keys = line numbers)
        homepage="https://github.com/google-research-datasets/wiki-split",
        citation="""@inproceedings{botha-etal-2018-learning,
  title = {Learning To Split and Rephrase From Wikipedia Edit History},
  author = {Botha, Jan A. and Faruqui, Manaal and Alex, John and Baldridge, Jason and Das, Dipanjan},
  booktitle = {Proceedings of EMNLP},
  year = {2018}}""",
    )

  def _local_files(self, dl_manager) -> dict[str, str]:
    dirs = []
    try:
      dirs.append(os.fspath(dl_manager.manual_dir))
    except (AssertionError, ValueError):  # manual dir not given / missing / empty
      pass
    dirs.append(resources.wiki_split_dir())
    for d in dirs:
      found = {s: p for s in SPLITS if os.path.isdir(d) and (p := _split_path(d, s)) is not None}
      if found:
        return found
    return {}

  def _split_generators(self, dl_manager):
    files = self._local_files(dl_manager)
    if not files:  # online: the public release
      files = {s: os.fspath(p) for s, p in dl_manager.download(
          {s: URL + FILES[s] for s in SPLITS}).items()}
    return {split: self._generate_examples(path) for split, path in files.items()}

  def _generate_examples(self, path):
    for i, (complex_sentence, simple_sentences) in enumerate(_iter_rows(os.fspath(path))):
      yield i, {"complex_sentence": complex_sentence, "simple_sentences": simple_sentences}


# ----------------------------------------------------------------------------- the dataset


def _pairs(split: str, data_config) -> list[tuple[str, str]]:
  data_dir = pipeline.setting(data_config, "data_dir") or None
  download = bool(pipeline.setting(data_config, "download"))
  if data_dir is not None and not os.path.isdir(data_dir) and not download:
    raise DataNotFoundError(
        f"WikiSplit data_dir {data_dir} does not exist: point data.data_dir at the folder holding "
        "tune.tsv / validation.tsv / test.tsv, or leave it empty for $EDJAX_DATA_DIR/wiki_split")
  return load_wiki_split(split, data_dir, download=download)


def _train_chunks(data_config, name: str):
  splits = tuple(pipeline.setting(data_config, "train_splits"))
  if not splits:
    raise ValueError(f"data.train_splits is empty for dataset {name!r}")
  for split in splits:
    yield from pipeline.chunks(_pairs(split, data_config))


def _eval_pairs(data_config, name: str, limit: int | None) -> list[tuple[str, str]]:
  return _pairs(pipeline.setting(data_config, "eval_split"), data_config)


pipeline.register_text_dataset(
    "wiki_split", pipeline.TextSource(_train_chunks, _eval_pairs),
    defaults=dict(train_splits=("tune", "validation"), eval_split="test",
                  data_dir="",  # the folder of the TSVs ("": $EDJAX_DATA_DIR/wiki_split)
                  download=False))  # fetch missing splits with tfds (else: a DataNotFoundError)
