"""Seq2seq input pipeline of the trainer: static-shape, deterministic, resumable, host-sharded.

    train_stream, eval_set = pipeline.build(config.data, enc_tok, dec_tok,
                                            global_batch_size=256, seed=0,
                                            process_index=jax.process_index(),
                                            process_count=jax.process_count())
    batch = train_stream.batch(step)          # this host's rows of global batch `step`
    for b in eval_set.batches(32): ...        # the fixed eval subset, last batch padded

Batches are dicts of int32 numpy arrays, padded to exactly the configured lengths (one compiled
train step, no recompiles)::

    input_ids               [b, max_source_length]  encoder tokens incl. the encoder tokenizer's
                                                    specials ([CLS] ... [SEP] for BERT), pad_id after
    attention_mask          [b, max_source_length]  1 on tokens, 0 on padding
    labels                  [b, max_target_length]  target tokens WITHOUT a start token, ending with
                                                    the decoder's eos_id ([SEP] / </s> /
                                                    <|endoftext|>), -100 on padding
    decoder_attention_mask  [b, max_target_length]  1 where labels != -100

The model's decoder input is `edjax.shift_tokens_right(labels, pad_id, decoder_start_token_id)`
with decoder_start_token_id = decoder_tokenizer.bos_id ([CLS] for BERT, <s> for RoBERTa,
<|endoftext|> for GPT-2) and pad_id = decoder_tokenizer.pad_id. Eval batches also carry
`valid` [b] (0 on the rows that pad the last batch) and `index` [b] (the row's position in
`EvalSet.examples`).

Shuffling and resumption. Every dataset is read and tokenized once, up front, into fixed-shape
integer arrays held in host memory. Epoch e is the permutation `np.random.default_rng((seed, e))`
of the N training examples; global batch k is examples [k*G, (k+1)*G) of the concatenated epoch
permutations (a batch that crosses an epoch end continues in the next epoch), and host p of P
takes rows [p*G/P, (p+1)*G/P) of it. `TrainStream.batch(step)` is therefore a pure function of
(seed, step): O(G/P) random access, no iterator state, so resuming at step k costs nothing and
yields exactly the batches an uninterrupted run would see; every example is seen once per epoch.

Datasets (`data_config.name`):

* ``wiki_split``: WikiSplit TSVs (`edjax.data.wiki_split`), read from `data_dir` (default
  ``$EDJAX_DATA_DIR/wiki_split``, EDJAX_DATA_DIR defaulting to ``<repo>/../shared/data``); a split
  whose file is absent there (e.g. the 1M-pair ``train`` online) comes from the tfds builder
  ``edjax_wiki_split`` (downloads the public files, prepares under $TFDS_DATA_DIR or
  ~/tensorflow_datasets). Target = the two sentences joined by one space (`target_text`), so
  detokenized predictions compare to references directly.
* ``cnn_dailymail`` (source ``article``, target ``highlights``) and ``xsum`` (``document`` /
  ``summary``): `tfds.load(name, split=..., data_dir=data_dir or tfds' default,
  shuffle_files=False)`, read through tf.data in file order in chunks of 4096 and tokenized in
  Python with the same `Tokenizer` (the `tokenizers` library's multi-threaded batch encoding).
  Cost, paid by every host at every (re)start: one pass over the train split and its tokenization
  (measured: about 800 article-length texts a second on 2 CPU cores, so about 6 minutes for the 287k
  cnn_dailymail training articles there; it scales with the host's cores) and
  N * (max_source_length + max_target_length) * 2 bytes of memory (uint16 ids; 370 MB for
  cnn_dailymail at 512 / 128). In exchange `batch(step)` is O(1) at any step: no skipping on resume. A name with a tfds config or version
  (``cnn_dailymail:3.4.0``) is passed to tfds as is. Targets are kept verbatim (cnn_dailymail
  highlights keep their newlines; the tokenizers treat them as spaces).
* ``tsv``: your own files, one ``source<TAB>target`` pair a line (UTF-8, no header): `tsv_train`
  (a path, a comma-separated string of paths, or a list) and `tsv_eval` (a path). Targets go through
  `target_text` too, so WikiSplit-format files (e.g. the 1M-pair train.tsv) work unchanged.

Eval subset. `EvalSet.examples` holds `eval_examples` pairs of the eval split in a fixed order:
with ``eval_order='shuffled'`` (default) a permutation by `EVAL_SUBSET_SEED` (independent of the
training seed, so runs with different seeds are scored on the same examples) truncated to
eval_examples, so any prefix (e.g. the first eval.num_generate) is a uniform sample too; with
``'file'``, the first eval_examples rows. The WikiSplit files are sorted alphabetically, so their
first rows are not representative (they all start with quotes, digits or "A").
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Iterable, Iterator, Sequence

import ml_collections
import numpy as np
from absl import logging

from edjax.processing.tokenizers import Tokenizer

NAMES = ("wiki_split", "cnn_dailymail", "xsum", "tsv")
TFDS_KEYS = {"cnn_dailymail": ("article", "highlights"), "xsum": ("document", "summary")}
EVAL_SUBSET_SEED = 0
IGNORE_INDEX = -100
WIKI_DELIMITER = " <::::> "
_CHUNK = 4096  # examples read / tokenized at a time

# Per-dataset defaults of the keys that differ (everything else: see `get_config`).
_DATASET_DEFAULTS = {
    "wiki_split": dict(train_splits=("tune", "validation"), eval_split="test"),
    "cnn_dailymail": dict(train_splits=("train",), eval_split="validation"),
    "xsum": dict(train_splits=("train",), eval_split="validation"),
    "tsv": dict(train_splits=(), eval_split=""),
}


def get_config(name: str = "wiki_split") -> ml_collections.ConfigDict:
  """The data config with its defaults (every key is optional in `build`; "" / None = default).

  name               'wiki_split' | 'cnn_dailymail' | 'xsum' | 'tsv'
  train_splits       splits concatenated (in order) into the training set; default
                     ('tune', 'validation') for wiki_split, ('train',) for cnn_dailymail / xsum
  eval_split         default 'test' for wiki_split, 'validation' for cnn_dailymail / xsum
  eval_examples      size of the fixed eval subset (default 200; <= 0: the whole split)
  eval_order         'shuffled' (default: a fixed seed-0 permutation) or 'file' (first N rows)
  eval_offset        the subset starts at this position of that order (default 0), so disjoint
                     subsets of one split can serve as dev (model selection) and test
  max_source_length  encoder length, specials included (default 128)
  max_target_length  label length, eos included (default 128)
  data_dir           wiki_split: the folder of the TSVs (default $EDJAX_DATA_DIR/wiki_split);
                     cnn_dailymail / xsum: the tfds data_dir (default tfds': $TFDS_DATA_DIR or
                     ~/tensorflow_datasets); unused for tsv
  download           cnn_dailymail / xsum: let tfds download and prepare a missing dataset
                     (default True)
  tsv_train          'tsv': training file(s): a path, comma-separated paths, or a list
  tsv_eval           'tsv': the eval file
  """
  if name not in NAMES:
    raise ValueError(f"unknown dataset name {name!r}: expected one of {NAMES}")
  return ml_collections.ConfigDict(dict(
      name=name, train_splits=tuple(_DATASET_DEFAULTS[name]["train_splits"]),
      eval_split=_DATASET_DEFAULTS[name]["eval_split"], eval_examples=200, eval_order="shuffled",
      eval_offset=0, max_source_length=128, max_target_length=128, data_dir="", download=True, tsv_train="",
      tsv_eval=""))


def target_text(target: str) -> str:
  """A dataset target -> the reference text the model learns to produce (idempotent).

  WikiSplit's `` <::::> `` sentence delimiter becomes one space; other texts are unchanged.
  """
  if "<::::>" not in target:
    return target
  return target.replace(WIKI_DELIMITER, " ").replace("<::::>", " ").strip()


def roundtrip_texts(texts: Sequence[str], tokenizer: Tokenizer) -> list[str]:
  """Texts as `tokenizer.decode_batch` would print them: decode(encode(text)), no truncation.

  Detokenized predictions are lowercased by uncased vocabularies (MiniLM, bert-base-uncased) and
  respaced by the WordPiece / BPE decoders (WikiSplit's "established , originally" comes back as
  "established, originally"); pass references (and, for SARI, sources) through this so that
  metrics compare like with like and measure the model, not the tokenizer. [UNK] pieces are
  dropped as in predictions.
  """
  encs = tokenizer.tok.encode_batch(list(texts), add_special_tokens=False)
  return tokenizer.tok.decode_batch([e.ids for e in encs], skip_special_tokens=True)


def roundtrip_references(references: Sequence, tokenizer: Tokenizer) -> list:
  """`roundtrip_texts` of references: one string per example, or (multi-reference sets such as
  COCO captions) a list of strings per example, each list kept as a list."""
  if not references or isinstance(references[0], str):
    return roundtrip_texts(references, tokenizer) if references else []
  flat = [ref for refs in references for ref in refs]
  decoded = iter(roundtrip_texts(flat, tokenizer) if flat else [])
  return [[next(decoded) for _ in refs] for refs in references]


# ----------------------------------------------------------------------------- tokenized arrays


@dataclasses.dataclass
class Tokenized:
  """Fixed-width token arrays of N examples (uint16 when the vocabularies fit, else int32)."""
  source_ids: np.ndarray  # [N, max_source_length], padded with the encoder's pad_id
  source_len: np.ndarray  # [N] int32
  target_ids: np.ndarray  # [N, max_target_length], labels (see Tokenizer.encode_targets)
  target_len: np.ndarray  # [N] int32

  def __len__(self) -> int:
    return len(self.source_len)

  def rows(self, idx: np.ndarray) -> dict[str, np.ndarray]:
    """The model batch of examples `idx` (int32, static shapes)."""
    src_len = self.source_len[idx]
    tgt_len = self.target_len[idx]
    attention_mask = (np.arange(self.source_ids.shape[1])[None, :] < src_len[:, None])
    decoder_mask = (np.arange(self.target_ids.shape[1])[None, :] < tgt_len[:, None])
    labels = np.where(decoder_mask, self.target_ids[idx].astype(np.int32), IGNORE_INDEX)
    return {"input_ids": self.source_ids[idx].astype(np.int32),
            "attention_mask": attention_mask.astype(np.int32),
            "labels": labels.astype(np.int32),
            "decoder_attention_mask": decoder_mask.astype(np.int32)}


def tokenize(pairs: Iterable[Sequence[tuple[str, str]]], encoder_tokenizer: Tokenizer,
             decoder_tokenizer: Tokenizer, max_source_length: int,
             max_target_length: int) -> Tokenized:
  """Chunks of (source, target) texts -> `Tokenized` (sources with the encoder's specials and
  truncation, targets as labels: no start token, eos last)."""
  vocab = max(encoder_tokenizer.vocab_size, decoder_tokenizer.vocab_size)
  dtype = np.uint16 if vocab <= np.iinfo(np.uint16).max + 1 else np.int32
  parts = []
  for chunk in pairs:
    if not len(chunk):
      continue
    sources = [s for s, _ in chunk]
    targets = [t for _, t in chunk]
    src, src_mask = encoder_tokenizer.encode_batch(sources, max_source_length,
                                                   pad_to=max_source_length)
    tgt, tgt_mask = decoder_tokenizer.encode_targets(targets, max_target_length,
                                                     pad_to=max_target_length)
    if dtype == np.uint16 and max(int(src.max()), int(tgt.max())) > np.iinfo(np.uint16).max:
      raise ValueError("token id beyond the tokenizer's vocab_size")
    parts.append((src.astype(dtype), src_mask.sum(1).astype(np.int32), tgt.astype(dtype),
                  tgt_mask.sum(1).astype(np.int32)))
  if not parts:
    empty = np.zeros((0,), np.int32)
    return Tokenized(np.zeros((0, max_source_length), dtype), empty,
                     np.zeros((0, max_target_length), dtype), empty)
  return Tokenized(*(np.concatenate(arrays) for arrays in zip(*parts)))


def _chunks(pairs: Sequence[tuple[str, str]], size: int = _CHUNK):
  for start in range(0, len(pairs), size):
    yield pairs[start:start + size]


# ----------------------------------------------------------------------------- train / eval


class TrainStream:
  """Deterministic, resumable stream of this host's slice of each global training batch.

  `batch(step)` depends on (seed, step) only (see the module docstring): call it with any step in
  any order. Attributes: num_examples, global_batch_size, local_batch_size, seed, process_index,
  process_count, steps_per_epoch (num_examples / global_batch_size, a float).
  """

  def __init__(self, data: Tokenized, *, global_batch_size: int, seed: int,
               process_index: int = 0, process_count: int = 1):
    _check_sharding(global_batch_size, process_index, process_count)
    if len(data) == 0:
      raise ValueError("the training set is empty")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
      raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    self.data = data
    self.num_examples = len(data)
    self.global_batch_size = int(global_batch_size)
    self.local_batch_size = self.global_batch_size // process_count
    self.seed = int(seed)
    self.process_index = int(process_index)
    self.process_count = int(process_count)
    self.steps_per_epoch = self.num_examples / self.global_batch_size
    self._perms: dict[int, np.ndarray] = {}

  def permutation(self, epoch: int) -> np.ndarray:
    """The example order of `epoch`: `default_rng((seed, epoch)).permutation(num_examples)`."""
    perm = self._perms.get(epoch)
    if perm is None:
      if len(self._perms) >= 4:  # a batch spans at most a few epochs; keep memory flat
        self._perms.pop(next(iter(self._perms)))
      perm = np.random.default_rng((self.seed, epoch)).permutation(self.num_examples)
      self._perms[epoch] = perm
    return perm

  def indices(self, step: int) -> np.ndarray:
    """Example indices of this host's rows of global batch `step` [local_batch_size]."""
    if int(step) < 0:
      raise ValueError(f"step must be >= 0, got {step}")
    first = int(step) * self.global_batch_size + self.process_index * self.local_batch_size
    flat = first + np.arange(self.local_batch_size, dtype=np.int64)
    epochs, positions = np.divmod(flat, self.num_examples)
    out = np.empty(self.local_batch_size, np.int64)
    for epoch in np.unique(epochs):
      sel = epochs == epoch
      out[sel] = self.permutation(int(epoch))[positions[sel]]
    return out

  def epoch(self, step: int) -> float:
    """Epochs completed at the start of global batch `step` (fractional)."""
    return int(step) * self.global_batch_size / self.num_examples

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """This host's rows of global batch `step`: input_ids, attention_mask, labels,
    decoder_attention_mask (int32, [local_batch_size, max_*_length])."""
    return self.data.rows(self.indices(step))

  def __repr__(self) -> str:
    return (f"TrainStream(num_examples={self.num_examples}, global_batch_size="
            f"{self.global_batch_size}, local_batch_size={self.local_batch_size}, seed={self.seed}, "
            f"process {self.process_index}/{self.process_count})")


class EvalSet:
  """The fixed eval subset: raw `examples` and their tokenized, padded `batches`.

  examples: list of (source, target) texts; target_text(target) is the reference.
  """

  def __init__(self, examples: list[tuple[str, str]], data: Tokenized, *,
               process_index: int = 0, process_count: int = 1):
    assert len(examples) == len(data)
    self.examples = examples
    self.data = data
    self.process_index = process_index
    self.process_count = process_count

  def __len__(self) -> int:
    return len(self.examples)

  @property
  def references(self) -> list[str]:
    return [target_text(t) for _, t in self.examples]

  def num_batches(self, batch_size: int) -> int:
    return -(-len(self.examples) // batch_size)

  def batches(self, batch_size: int, *, host_slice: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """Batches of `batch_size` rows over `examples` in order, the last one padded.

    Keys: those of `TrainStream.batch` plus `valid` [b] (1 = real row, 0 = padding; padding rows
    repeat the batch's first example so that no row is degenerate) and `index` [b] (position in
    `examples`). By default every host gets the whole batch; with host_slice=True host p gets rows
    [p*b/P, (p+1)*b/P) (for `jax.make_array_from_process_local_data`; batch_size must be divisible
    by process_count). Every host yields the same number of batches.
    """
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if host_slice:
      _check_sharding(batch_size, self.process_index, self.process_count, what="eval batch_size")
    n = len(self.examples)
    for start in range(0, n, batch_size):
      idx = np.arange(start, min(start + batch_size, n))
      valid = np.ones(batch_size, np.int32)
      valid[len(idx):] = 0
      idx = np.concatenate([idx, np.full(batch_size - len(idx), start)])
      if host_slice:
        local = batch_size // self.process_count
        rows = slice(self.process_index * local, (self.process_index + 1) * local)
        idx, valid = idx[rows], valid[rows]
      batch = self.data.rows(idx)
      batch["valid"] = valid
      batch["index"] = idx.astype(np.int32)
      yield batch


# ----------------------------------------------------------------------------- reading


def _check_sharding(batch_size: int, process_index: int, process_count: int,
                    what: str = "global_batch_size") -> None:
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is not in [0, process_count={process_count})")
  if batch_size < 1:
    raise ValueError(f"{what} must be >= 1, got {batch_size}")
  if batch_size % process_count:
    raise ValueError(f"{what} {batch_size} is not divisible by process_count {process_count}: "
                     "every host must get the same number of rows")


def _get(cfg, key: str, default):
  """cfg[key], with missing / None / "" meaning `default`."""
  value = cfg.get(key, None) if hasattr(cfg, "get") else getattr(cfg, key, None)
  if value is None or (isinstance(value, str) and value == ""):
    return default
  return value


def _base_name(name: str) -> str:
  return name.split(":")[0].split("/")[0]


def read_tsv(path: str) -> list[tuple[str, str]]:
  """(source, target) pairs of a `source<TAB>target` file (UTF-8, no header; blank lines skipped)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"TSV file {path} does not exist")
  from edjax.data import wiki_split  # the WikiSplit TSV parser (tensorflow_datasets: 0.3 s)
  with open(path, encoding="utf-8", newline="") as f:
    return list(wiki_split.parse_tsv_lines(f, path))


def _wiki_split_pairs(split: str, data_dir: str | None) -> list[tuple[str, str]]:
  from edjax.data import wiki_split  # imports tensorflow_datasets (not TensorFlow): 0.3 s
  if data_dir is not None and not os.path.isdir(data_dir):
    raise FileNotFoundError(
        f"WikiSplit data_dir {data_dir} does not exist: point data.data_dir at the folder holding "
        "tune.tsv / validation.tsv / test.tsv, or leave it empty for $EDJAX_DATA_DIR/wiki_split")
  return wiki_split.load_wiki_split(split, data_dir)


def _tfds_chunks(name: str, split: str, data_dir: str | None, download: bool,
                 limit: int | None = None) -> Iterator[list[tuple[str, str]]]:
  """(source, target) chunks of a tfds text dataset, in file order (shuffle_files=False)."""
  import tensorflow_datasets as tfds
  from edjax.data import wiki_split  # noqa: F401  (tfds compatibility shim)
  import tensorflow as tf
  try:  # tf.data only: keep TensorFlow off the accelerators JAX uses
    tf.config.set_visible_devices([], "GPU")
  except (RuntimeError, ValueError):
    pass
  source_key, target_key = TFDS_KEYS[_base_name(name)]
  try:
    ds = tfds.load(name, split=split, data_dir=data_dir, shuffle_files=False, download=download)
  except Exception as e:  # tfds raises several types for a missing / unprepared dataset
    raise FileNotFoundError(
        f"cannot load tfds dataset {name!r} split {split!r} from "
        f"{data_dir or 'the default tfds data_dir'}: {e}") from e
  if limit is not None:
    ds = ds.take(limit)
  ds = ds.map(lambda ex: (ex[source_key], ex[target_key])).batch(_CHUNK)
  for sources, targets in tfds.as_numpy(ds):
    yield [(s.decode("utf-8"), t.decode("utf-8")) for s, t in zip(sources, targets)]


def _train_pairs(cfg, name: str) -> Iterator[list[tuple[str, str]]]:
  """Chunks of the training pairs, splits concatenated in order."""
  base = _base_name(name)
  splits = tuple(_get(cfg, "train_splits", _DATASET_DEFAULTS[base]["train_splits"]))
  data_dir = _get(cfg, "data_dir", None)
  if base == "tsv":
    paths = _get(cfg, "tsv_train", None)
    if paths is None:
      raise ValueError("data.name='tsv' needs data.tsv_train (a path, comma-separated paths or a list)")
    paths = [p.strip() for p in paths.split(",")] if isinstance(paths, str) else list(paths)
    for path in paths:
      yield from _chunks([(s, target_text(t)) for s, t in read_tsv(path)])
    return
  if not splits:
    raise ValueError(f"data.train_splits is empty for dataset {name!r}")
  for split in splits:
    if base == "wiki_split":
      yield from _chunks(_wiki_split_pairs(split, data_dir))
    else:
      yield from _tfds_chunks(name, split, data_dir, bool(_get(cfg, "download", True)))


def _eval_pairs(cfg, name: str) -> list[tuple[str, str]]:
  """The fixed eval subset (see the module docstring)."""
  base = _base_name(name)
  n = int(_get(cfg, "eval_examples", 200))
  offset = int(_get(cfg, "eval_offset", 0))
  if offset < 0:
    raise ValueError(f"data.eval_offset must be >= 0, got {offset}")
  order = _get(cfg, "eval_order", "shuffled")
  if order not in ("shuffled", "file"):
    raise ValueError(f"data.eval_order must be 'shuffled' or 'file', got {order!r}")
  limit = offset + n if (order == "file" and n > 0) else None
  data_dir = _get(cfg, "data_dir", None)
  if base == "tsv":
    path = _get(cfg, "tsv_eval", None)
    if path is None:
      raise ValueError("data.name='tsv' needs data.tsv_eval (the eval file)")
    pairs = [(s, target_text(t)) for s, t in read_tsv(path)]
  else:
    split = _get(cfg, "eval_split", _DATASET_DEFAULTS[base]["eval_split"])
    if base == "wiki_split":
      pairs = _wiki_split_pairs(split, data_dir)
    else:
      pairs = [p for chunk in _tfds_chunks(name, split, data_dir, bool(_get(cfg, "download", True)),
                                           limit) for p in chunk]
  if order == "shuffled":
    pairs = [pairs[i] for i in np.random.default_rng(EVAL_SUBSET_SEED).permutation(len(pairs))]
  if offset >= len(pairs):
    raise ValueError(f"data.eval_offset={offset} is past the end of the eval split "
                     f"({len(pairs)} examples)")
  return pairs[offset:offset + n] if n > 0 else pairs[offset:]


def build_eval(data_config, encoder_tokenizer: Tokenizer, decoder_tokenizer: Tokenizer, *,
               process_index: int = 0, process_count: int = 1) -> EvalSet:
  """The `EvalSet` of `data_config` alone (no training data read): for evaluating a finished model."""
  name = _get(data_config, "name", "wiki_split")
  if _base_name(name) not in NAMES:
    raise ValueError(f"unknown dataset name {name!r}: expected one of {NAMES}")
  src_len = int(_get(data_config, "max_source_length", 128))
  tgt_len = int(_get(data_config, "max_target_length", 128))
  pairs = _eval_pairs(data_config, name)
  data = tokenize(_chunks(pairs), encoder_tokenizer, decoder_tokenizer, src_len, tgt_len)
  return EvalSet(pairs, data, process_index=process_index, process_count=process_count)


def build(data_config, encoder_tokenizer: Tokenizer, decoder_tokenizer: Tokenizer, *,
          global_batch_size: int, seed: int, process_index: int = 0,
          process_count: int = 1) -> tuple[TrainStream, EvalSet]:
  """Reads, tokenizes and indexes the data of `data_config` (keys: see `get_config`).

  Returns this host's `TrainStream` (its slice of every global batch) and the `EvalSet` (the
  same on every host). Raises ValueError for an unknown name / bad sizes and FileNotFoundError for
  missing data, before any tokenization.
  """
  name = _get(data_config, "name", "wiki_split")
  if _base_name(name) not in NAMES:
    raise ValueError(f"unknown dataset name {name!r}: expected one of {NAMES} "
                     "(cnn_dailymail / xsum may carry a tfds config or version, e.g. "
                     "'cnn_dailymail:3.4.0')")
  _check_sharding(global_batch_size, process_index, process_count)
  if not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
  if _base_name(name) == "tsv":
    missing = [k for k in ("tsv_train", "tsv_eval") if _get(data_config, k, None) is None]
    if missing:
      raise ValueError(f"data.name='tsv' needs {' and '.join('data.' + k for k in missing)} "
                       "(tsv_train: a path, comma-separated paths or a list; tsv_eval: a path)")
  if _get(data_config, "eval_order", "shuffled") not in ("shuffled", "file"):
    raise ValueError("data.eval_order must be 'shuffled' or 'file', got "
                     f"{_get(data_config, 'eval_order', None)!r}")
  src_len = int(_get(data_config, "max_source_length", 128))
  tgt_len = int(_get(data_config, "max_target_length", 128))
  if src_len < 2 or tgt_len < 2:
    raise ValueError(f"max_source_length ({src_len}) and max_target_length ({tgt_len}) must be >= 2")

  t0 = time.time()
  eval_pairs = _eval_pairs(data_config, name)  # the smaller read first: fail fast on missing data
  train = tokenize(_train_pairs(data_config, name), encoder_tokenizer, decoder_tokenizer,
                   src_len, tgt_len)
  eval_data = tokenize(_chunks(eval_pairs), encoder_tokenizer, decoder_tokenizer, src_len, tgt_len)
  stream = TrainStream(train, global_batch_size=global_batch_size, seed=seed,
                       process_index=process_index, process_count=process_count)
  logging.info("data %s: %d train / %d eval examples tokenized to %d / %d tokens in %.1f s; "
               "at max length: source %.1f%%, target %.1f%%", name, len(train), len(eval_data), src_len,
               tgt_len, time.time() - t0,
               100 * np.mean(train.source_len >= src_len), 100 * np.mean(train.target_len >= tgt_len))
  return stream, EvalSet(eval_pairs, eval_data, process_index=process_index,
                         process_count=process_count)
