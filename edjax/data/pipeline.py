"""Text-to-text datasets: read (source, target) pairs once, tokenize them into fixed-width arrays,
serve them through a random-access `streams.IndexedStream` and an `streams.EvalSet`.

    train_stream, eval_set = edjax.data.build_dataset(
        config.data, encoder_tokenizer=enc_tok, decoder_tokenizer=dec_tok,
        global_batch_size=256, seed=0)
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
<|endoftext|> for GPT-2) and pad_id = decoder_tokenizer.pad_id. Eval batches also carry `valid`
and `index` (`streams.EvalSet.batches`).

Every text dataset is read and tokenized once, up front, into fixed-shape integer arrays in host
memory (uint16 ids when the vocabularies fit): N * (max_source_length + max_target_length) * 2
bytes, paid by every host at every (re)start. In exchange `batch(step)` is O(1) at any step, a
pure function of (seed, step) (see `streams.IndexedStream`): no skipping on resume.

A text dataset is a `TextSource` (how to read its training chunks and its eval split) registered
with `register_text_dataset`; this module registers ``tsv`` (your own files, one
``source<TAB>target`` pair a line, UTF-8, no header: `tsv_train` a path, comma-separated paths or a
list; `tsv_eval` a path; targets go through `wiki_split.target_text`, so WikiSplit-format files
work unchanged), `wiki_split` and `summarization` register the others.

Eval subset. `EvalSet.examples` holds `eval_examples` pairs of the eval split in a fixed order:
with ``eval_order='shuffled'`` (default) a permutation by `EVAL_SUBSET_SEED` (independent of the
training seed, so runs with different seeds are scored on the same examples) truncated to
eval_examples, so any prefix (e.g. the first eval.num_generate) is a uniform sample too; with
``'file'``, the first eval_examples rows. `eval_offset` starts the subset later in that order, so
disjoint subsets of one split can serve as dev (model selection) and test.
"""

from __future__ import annotations

import dataclasses
import os
import time
import unicodedata
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
from absl import logging

from edjax.data import packing, registry
from edjax.data.registry import DataError, DataNotFoundError
from edjax.data.streams import (EvalSet, IndexedStream, base_name, check_seed, check_sharding,
                                config_value)
from edjax.losses import IGNORE_INDEX
from edjax.processing.tokenizers import Tokenizer

EVAL_SUBSET_SEED = 0
EVAL_ORDERS = ("shuffled", "file")
CHUNK = 4096  # examples read / tokenized at a time

# The data-config keys every text dataset reads, with their defaults (a dataset adds its own).
TEXT_DEFAULTS = dict(
    eval_examples=200,        # size of the fixed eval subset (<= 0: the whole split)
    eval_order="shuffled",    # 'shuffled' (a fixed EVAL_SUBSET_SEED permutation) or 'file'
    eval_offset=0,            # the subset starts at this position of that order
    max_source_length=128,    # encoder length, specials included
    max_target_length=128,    # label length, eos included
    pack=False,               # training rows pack several examples (edjax.data.packing)
    pack_examples_per_row=0,  # the packer's window per row (0: from the mean lengths)
)

Pairs = list[tuple[str, str]]


@dataclasses.dataclass(frozen=True)
class TextSource:
  """How a text dataset reads its (source, target) pairs.

  train_chunks(data_config, name) -> iterator of lists of training pairs, splits in order
  eval_pairs(data_config, name, limit) -> the pairs of the eval split in file order (when limit is
      not None, the first `limit` pairs suffice)
  """
  train_chunks: Callable[..., Iterator[Pairs]]
  eval_pairs: Callable[..., Pairs]


TEXT_SOURCES: dict[str, TextSource] = {}


def register_text_dataset(name: str, source: TextSource, defaults: Mapping) -> None:
  """Registers text dataset `name` (read by `source`; its own data-config keys in `defaults`)."""
  TEXT_SOURCES[name] = source
  registry.register_dataset(name, modality="text", defaults={**TEXT_DEFAULTS, **defaults},
                            build_eval=build_text_eval)(build_text)


def setting(data_config, key: str):
  """data_config[key] of this text dataset, missing / None / "" meaning its registered default."""
  name = config_value(data_config, "name", "wiki_split")
  return config_value(data_config, key, registry.dataset(name).defaults[key])


# ----------------------------------------------------------------------------- tokenized arrays


@dataclasses.dataclass
class Tokenized:
  """Fixed-width token arrays of N examples (uint16 when the vocabularies fit, else int32)."""
  source_ids: np.ndarray  # [N, max_source_length], padded with the encoder's pad_id
  source_len: np.ndarray  # [N] int32
  target_ids: np.ndarray  # [N, max_target_length], labels (see Tokenizer.encode_targets)
  target_len: np.ndarray  # [N] int32
  source_truncated: int = 0  # how many sources were longer than max_source_length (cut)
  target_truncated: int = 0  # how many targets were longer than max_target_length (cut)

  def __len__(self) -> int:
    return len(self.source_len)

  def rows(self, idx: np.ndarray) -> dict[str, np.ndarray]:
    """The model batch of examples `idx` (int32, static shapes)."""
    src_len = self.source_len[idx]
    tgt_len = self.target_len[idx]
    attention_mask = (np.arange(self.source_ids.shape[1])[None, :] < src_len[:, None])
    decoder_mask = (np.arange(self.target_ids.shape[1])[None, :] < tgt_len[:, None])
    labels = np.where(decoder_mask, self.target_ids[idx].astype(np.int32), IGNORE_INDEX)
    return {"input_ids": self.source_ids[idx].astype(np.int32),  # [n, max_source_length]
            "attention_mask": attention_mask.astype(np.int32),  # [n, max_source_length]
            "labels": labels.astype(np.int32),  # [n, max_target_length]
            "decoder_attention_mask": decoder_mask.astype(np.int32)}  # [n, max_target_length]


def tokenize(pairs: Iterable[Sequence[tuple[str, str]]], encoder_tokenizer: Tokenizer,
             decoder_tokenizer: Tokenizer, max_source_length: int,
             max_target_length: int) -> Tokenized:
  """Chunks of (source, target) texts -> `Tokenized` (sources with the encoder's specials and
  truncation, targets as labels: no start token, eos last)."""
  vocab = max(encoder_tokenizer.vocab_size, decoder_tokenizer.vocab_size)
  dtype = np.uint16 if vocab <= np.iinfo(np.uint16).max + 1 else np.int32
  parts, cut = [], [0, 0]
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
    src_len, tgt_len = src_mask.sum(1).astype(np.int32), tgt_mask.sum(1).astype(np.int32)
    cut[0] += count_truncated(encoder_tokenizer, sources, src_len, max_source_length, False)
    cut[1] += count_truncated(decoder_tokenizer, targets, tgt_len, max_target_length, True)
    parts.append((src.astype(dtype), src_len, tgt.astype(dtype), tgt_len))
  if not parts:
    empty = np.zeros((0,), np.int32)
    return Tokenized(np.zeros((0, max_source_length), dtype), empty,
                     np.zeros((0, max_target_length), dtype), empty)
  return Tokenized(*(np.concatenate(arrays) for arrays in zip(*parts)), *cut)


def count_truncated(tokenizer: Tokenizer, texts: Sequence[str], lengths: np.ndarray,
                    max_length: int, targets: bool) -> int:
  """How many of `texts` (encoded to `lengths` tokens, at most `max_length`) were cut: only the
  rows at the limit are encoded again, without truncation."""
  at_max = [texts[i] for i in np.flatnonzero(lengths >= max_length)]
  if not at_max:
    return 0
  encs = tokenizer.tok.encode_batch(list(at_max), add_special_tokens=not targets)
  extra = 1 if targets and tokenizer.eos_id is not None else 0  # the eos a label row ends with
  return sum(len(e.ids) + extra > max_length for e in encs)


def log_truncation(what: str, data: Tokenized, max_source_length: int,
                   max_target_length: int) -> None:
  """One log line saying how many examples were cut to the configured lengths (none: silent)."""
  if data.source_truncated or data.target_truncated:
    logging.info("%s: %d of %d sources longer than data.max_source_length=%d and %d targets "
                 "longer than data.max_target_length=%d were truncated", what,
                 data.source_truncated, len(data), max_source_length, data.target_truncated,
                 max_target_length)


def chunks(pairs: Sequence[tuple[str, str]], size: int = CHUNK) -> Iterator[Pairs]:
  """`pairs` in consecutive lists of `size` (the unit `tokenize` reads)."""
  for start in range(0, len(pairs), size):
    yield list(pairs[start:start + size])


# ----------------------------------------------------------------------------- reading


def clean_control_characters(text: str) -> str:
  """`text` with every control character (Unicode category Cc: NUL, ESC, BEL, ...; a tab cannot
  occur inside a field) replaced by a space, as BERT's tokenizer cleans its input."""
  if text.isprintable():
    return text
  return "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)


def parse_tsv_lines(lines: Iterable[bytes | str], path: str) -> Iterator[tuple[str, str]]:
  """(column 1, column 2) of each non-blank `a<TAB>b` line (bytes are decoded as UTF-8).

  A DataError names the file and line for: invalid UTF-8, another column count, an empty (or
  all-blank) source or target field. Control characters inside a field are replaced by spaces
  (`clean_control_characters`, what BERT's tokenizer does anyway), with one log line per file
  saying how many lines had them.
  """
  cleaned = 0
  for i, line in enumerate(lines, 1):
    if isinstance(line, bytes):
      try:
        line = line.decode("utf-8")
      except UnicodeDecodeError as e:
        raise DataError(f"{path} line {i}: invalid UTF-8 (byte {e.start}: "
                        f"{line[e.start:e.start + 1]!r}); save the file as UTF-8") from None
    line = line.rstrip("\r\n")
    if not line:
      continue
    parts = line.split("\t")
    if len(parts) != 2:
      raise DataError(f"{path} line {i}: expected 2 tab-separated columns (source<TAB>target), "
                      f"got {len(parts)}")
    for name, field in zip(("source", "target"), parts):
      if not field.strip():
        raise DataError(f"{path} line {i}: the {name} field is empty; remove the line or fill it")
    clean = [clean_control_characters(p) for p in parts]
    if clean != parts:
      cleaned += 1
    yield clean[0], clean[1]
  if cleaned:
    logging.info("%s: %d lines had control characters, replaced by spaces", path, cleaned)


def read_tsv(path: str) -> Pairs:
  """(source, target) pairs of a `source<TAB>target` file (UTF-8, no header; blank lines skipped)."""
  if not os.path.isfile(path):
    raise DataNotFoundError(f"TSV file {path} does not exist (data.tsv_train / data.tsv_eval)")
  with open(path, "rb") as f:
    return list(parse_tsv_lines(f, path))


def _tsv_pairs(path: str) -> Pairs:
  from edjax.data import wiki_split  # the target format's home; it imports this module
  return [(s, wiki_split.target_text(t)) for s, t in read_tsv(path)]


def _tsv_train_chunks(cfg, name: str) -> Iterator[Pairs]:
  paths = setting(cfg, "tsv_train")
  paths = [p.strip() for p in paths.split(",")] if isinstance(paths, str) else list(paths)
  for path in paths:
    yield from chunks(_tsv_pairs(path))


def _tsv_eval_pairs(cfg, name: str, limit: int | None) -> Pairs:
  return _tsv_pairs(setting(cfg, "tsv_eval"))


def eval_pairs(data_config) -> Pairs:
  """The fixed eval subset of a text dataset's eval split (see the module docstring)."""
  name = config_value(data_config, "name", "wiki_split")
  source = _source(name)
  n = int(setting(data_config, "eval_examples"))
  offset = int(setting(data_config, "eval_offset"))
  if offset < 0:
    raise ValueError(f"data.eval_offset must be >= 0, got {offset}")
  order = setting(data_config, "eval_order")
  if order not in EVAL_ORDERS:
    raise ValueError(f"data.eval_order must be 'shuffled' or 'file', got {order!r}")
  limit = offset + n if (order == "file" and n > 0) else None
  pairs = source.eval_pairs(data_config, name, limit)
  if order == "shuffled":
    pairs = [pairs[i] for i in np.random.default_rng(EVAL_SUBSET_SEED).permutation(len(pairs))]
  if offset >= len(pairs):
    raise ValueError(f"data.eval_offset={offset} is past the end of the eval split "
                     f"({len(pairs)} examples)")
  return pairs[offset:offset + n] if n > 0 else pairs[offset:]


# ----------------------------------------------------------------------------- build


def _source(name: str) -> TextSource:
  spec = registry.dataset(name)  # ValueError for an unknown name
  if spec.modality != "text":
    raise ValueError(f"unknown dataset name {name!r} for a text pipeline: {spec.name} is an "
                     f"{spec.modality} dataset (expected one of {sorted(TEXT_SOURCES)})")
  return TEXT_SOURCES[spec.name]


def _lengths(data_config) -> tuple[int, int]:
  src_len = int(setting(data_config, "max_source_length"))
  tgt_len = int(setting(data_config, "max_target_length"))
  if src_len < 2 or tgt_len < 2:
    raise ValueError(f"max_source_length ({src_len}) and max_target_length ({tgt_len}) must be >= 2")
  return src_len, tgt_len


def _check_tsv(data_config, name: str) -> None:
  if base_name(name) == "tsv":
    missing = [k for k in ("tsv_train", "tsv_eval") if config_value(data_config, k, None) is None]
    if missing:
      raise ValueError(f"data.name='tsv' needs {' and '.join('data.' + k for k in missing)} "
                       "(tsv_train: a path, comma-separated paths or a list; tsv_eval: a path)")


def build_text_eval(data_config, *, encoder_tokenizer: Tokenizer, decoder_tokenizer: Tokenizer,
                    image_processor=None, process_index: int = 0,
                    process_count: int = 1) -> EvalSet:
  """The `EvalSet` of a text dataset alone (no training data read): for scoring a finished model."""
  name = config_value(data_config, "name", "wiki_split")
  _source(name)
  _check_tsv(data_config, name)
  src_len, tgt_len = _lengths(data_config)
  pairs = eval_pairs(data_config)
  data = tokenize(chunks(pairs), encoder_tokenizer, decoder_tokenizer, src_len, tgt_len)
  log_truncation(f"data {name} eval", data, src_len, tgt_len)
  return EvalSet(pairs, data, process_index=process_index, process_count=process_count)


def build_text(data_config, *, encoder_tokenizer: Tokenizer, decoder_tokenizer: Tokenizer,
               image_processor=None, global_batch_size: int, seed: int, process_index: int = 0,
               process_count: int = 1) -> tuple[IndexedStream, EvalSet]:
  """Reads, tokenizes and indexes a text dataset (its keys: `edjax.data.get_config(name)`).

  Returns this host's `IndexedStream` (its slice of every global batch) and the `EvalSet` (the
  same on every host). Raises ValueError for an unknown name / bad sizes and FileNotFoundError for
  missing data, before any tokenization. image_processor is ignored (text datasets read none).
  """
  name = config_value(data_config, "name", "wiki_split")
  source = _source(name)
  check_sharding(global_batch_size, process_index, process_count)
  check_seed(seed)
  _check_tsv(data_config, name)
  if setting(data_config, "eval_order") not in EVAL_ORDERS:
    raise ValueError("data.eval_order must be 'shuffled' or 'file', got "
                     f"{config_value(data_config, 'eval_order', None)!r}")
  src_len, tgt_len = _lengths(data_config)

  t0 = time.time()
  evals = eval_pairs(data_config)  # the smaller read first: fail fast on missing data
  train = tokenize(source.train_chunks(data_config, name), encoder_tokenizer, decoder_tokenizer,
                   src_len, tgt_len)
  eval_data = tokenize(chunks(evals), encoder_tokenizer, decoder_tokenizer, src_len, tgt_len)
  log_truncation(f"data {name} train", train, src_len, tgt_len)
  log_truncation(f"data {name} eval", eval_data, src_len, tgt_len)
  if setting(data_config, "pack"):
    stream = packing.packed_stream(
        train, global_batch_size=global_batch_size, seed=seed,
        examples_per_row=int(setting(data_config, "pack_examples_per_row")),
        max_source_length=src_len, max_target_length=tgt_len,
        encoder_pad_id=encoder_tokenizer.pad_id, process_index=process_index,
        process_count=process_count)
  else:
    stream = IndexedStream(train, global_batch_size=global_batch_size, seed=seed,
                           process_index=process_index, process_count=process_count)
  logging.info("data %s: %d train / %d eval examples tokenized to %d / %d tokens in %.1f s; "
               "at max length: source %.1f%%, target %.1f%%", name, len(train), len(eval_data),
               src_len, tgt_len, time.time() - t0,
               100 * np.mean(train.source_len >= src_len), 100 * np.mean(train.target_len >= tgt_len))
  return stream, EvalSet(evals, eval_data, process_index=process_index,
                         process_count=process_count)


register_text_dataset("tsv", TextSource(_tsv_train_chunks, _tsv_eval_pairs),
                      defaults=dict(tsv_train="", tsv_eval=""))  # a path (or paths) / a path
