"""Sequence packing for seq2seq training (`config.data.pack=True`): several (source, target)
examples side by side in one row, seqio's EncDecFeatureConverter layout.

A packed batch holds, next to the usual keys, per-token segment ids (1, 2, ... per example in the
row, 0 = padding) and 0-based positions within each segment::

    input_ids            [b, max_source_length]  the sources' tokens back to back, specials kept
    encoder_segment_ids  [b, max_source_length]  example number within the row, 0 on padding
    encoder_positions    [b, max_source_length]  0, 1, ... restarting with every example
    attention_mask       [b, max_source_length]  1 where encoder_segment_ids > 0
    labels               [b, max_target_length]  the targets back to back, -100 on padding
    decoder_segment_ids  [b, max_target_length]
    decoder_positions    [b, max_target_length]
    decoder_attention_mask, decoder_loss_weights [b, max_target_length]  1 on real target tokens

The decoder inputs are the labels shifted right within each segment, every segment starting with
the model's decoder_start_token_id: `edjax.models.segments.shift_right_per_segment`, computed in
the loss from `model.config`'s ids (the rule of `edjax.train.loss`), so they are not a batch key.
The model turns the segment ids into block-diagonal attention masks (`edjax.models.segments`), so
an example sees exactly what it sees unpacked and its token losses are the same; every real target
token is weighted once.

The packer (a choice, documented here): global batch `step` of G rows reads a fixed window of
G * examples_per_row examples, those an `IndexedStream` with that batch size gives for `step`
(so the window is a pure function of (seed, step), and host p packs its own slice of it into its
G / P rows). The window's examples are placed greedily, in window order, each into the first row
where both its source and its target still fit (first fit); an example that fits in no row is
dropped from this step (it comes back in later epochs, whose permutations differ). No state
carries from one step to the next, so `batch(step)` stays pure and resuming costs nothing.
`examples_per_row` (data.pack_examples_per_row; 0 = `auto_examples_per_row`) trades fill
against drops.
"""

from __future__ import annotations

import math

import numpy as np
from absl import logging

from edjax.data.streams import IndexedStream
from edjax.losses import IGNORE_INDEX

PACKED_KEYS = ("input_ids", "encoder_segment_ids", "encoder_positions", "attention_mask", "labels",
               "decoder_segment_ids", "decoder_positions", "decoder_attention_mask",
               "decoder_loss_weights")


def auto_examples_per_row(source_len: np.ndarray, target_len: np.ndarray, max_source_length: int,
                          max_target_length: int) -> int:
  """Examples per row when data.pack_examples_per_row is 0: the rows' capacity over the mean
  example length, on the side (source or target) that fills first, rounded to the nearest
  integer (so a window holds about one row's worth of tokens per row; a little more is dropped,
  a little less leaves padding)."""
  if not len(source_len):
    return 1
  per_row = min(max_source_length / max(float(np.mean(source_len)), 1.0),
                max_target_length / max(float(np.mean(target_len)), 1.0))
  return max(1, int(round(per_row)))


def pack_rows(source_ids: np.ndarray, source_len: np.ndarray, target_ids: np.ndarray,
              target_len: np.ndarray, num_rows: int, encoder_pad_id: int) -> tuple[dict, int]:
  """First-fit packs examples (in the given order) into `num_rows` rows.

  source_ids [n, max_source_length] / target_ids [n, max_target_length] (labels, eos last) with
  their lengths [n]. Returns (the packed batch, see the module docstring; how many of the n
  examples fit in no row and were dropped).
  """
  n, src_width = source_ids.shape
  tgt_width = target_ids.shape[1]
  src_used = np.zeros(num_rows, np.int64)
  tgt_used = np.zeros(num_rows, np.int64)
  count = np.zeros(num_rows, np.int32)
  out = {
      "input_ids": np.full((num_rows, src_width), encoder_pad_id, np.int32),
      "encoder_segment_ids": np.zeros((num_rows, src_width), np.int32),
      "encoder_positions": np.zeros((num_rows, src_width), np.int32),
      "labels": np.full((num_rows, tgt_width), IGNORE_INDEX, np.int32),
      "decoder_segment_ids": np.zeros((num_rows, tgt_width), np.int32),
      "decoder_positions": np.zeros((num_rows, tgt_width), np.int32),
  }
  dropped = 0
  for i in range(n):
    sl, tl = int(source_len[i]), int(target_len[i])
    fits = (src_used + sl <= src_width) & (tgt_used + tl <= tgt_width)  # [num_rows]
    if not fits.any():
      dropped += 1
      continue
    r = int(np.argmax(fits))  # the first row it fits in
    count[r] += 1
    s0, t0 = src_used[r], tgt_used[r]
    out["input_ids"][r, s0:s0 + sl] = source_ids[i, :sl]
    out["encoder_segment_ids"][r, s0:s0 + sl] = count[r]
    out["encoder_positions"][r, s0:s0 + sl] = np.arange(sl)
    out["labels"][r, t0:t0 + tl] = target_ids[i, :tl]
    out["decoder_segment_ids"][r, t0:t0 + tl] = count[r]
    out["decoder_positions"][r, t0:t0 + tl] = np.arange(tl)
    src_used[r] += sl
    tgt_used[r] += tl
  out["attention_mask"] = (out["encoder_segment_ids"] > 0).astype(np.int32)
  out["decoder_attention_mask"] = (out["decoder_segment_ids"] > 0).astype(np.int32)
  out["decoder_loss_weights"] = out["decoder_attention_mask"].copy()
  return out, dropped


class PackedStream:
  """A random-access training stream of packed rows over `pipeline.Tokenized` examples.

  `batch(step)` packs the window `IndexedStream(global_batch_size * examples_per_row).indices(step)`
  (this host's slice) into local_batch_size rows: a pure function of (seed, step), like
  `streams.IndexedStream`. steps_per_epoch counts windows (examples / window size).
  """

  random_access = True

  def __init__(self, data, *, global_batch_size: int, seed: int, examples_per_row: int,
               encoder_pad_id: int, process_index: int = 0, process_count: int = 1):
    if isinstance(examples_per_row, bool) or not isinstance(examples_per_row, (int, np.integer)) \
        or examples_per_row < 1:
      raise ValueError(f"examples_per_row must be an integer >= 1, got {examples_per_row!r}")
    self.examples_per_row = int(examples_per_row)
    self.window = IndexedStream(data, global_batch_size=global_batch_size * self.examples_per_row,
                                seed=seed, process_index=process_index,
                                process_count=process_count)
    self.data = data
    self.encoder_pad_id = int(encoder_pad_id)
    self.global_batch_size = int(global_batch_size)
    self.local_batch_size = self.global_batch_size // process_count
    self.seed = int(seed)
    self.process_index = int(process_index)
    self.process_count = int(process_count)

  @property
  def steps_per_epoch(self) -> float:
    return self.window.steps_per_epoch

  def epoch(self, step: int) -> float:
    """Epochs completed at the start of global batch `step` (windows read / examples)."""
    return self.window.epoch(step)

  def pack(self, step: int) -> tuple[dict, int]:
    """(this host's packed rows of global batch `step`, examples of its window dropped)."""
    idx = self.window.indices(step)
    d = self.data
    return pack_rows(d.source_ids[idx], d.source_len[idx], d.target_ids[idx], d.target_len[idx],
                     self.local_batch_size, self.encoder_pad_id)

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """This host's packed rows of global batch `step` (see the module docstring for the keys)."""
    return self.pack(step)[0]

  def __repr__(self) -> str:
    return (f"PackedStream(examples_per_row={self.examples_per_row}, global_batch_size="
            f"{self.global_batch_size}, local_batch_size={self.local_batch_size}, seed={self.seed}, "
            f"process {self.process_index}/{self.process_count})")


def packed_stream(data, *, global_batch_size: int, seed: int, examples_per_row: int,
                  max_source_length: int, max_target_length: int, encoder_pad_id: int,
                  process_index: int = 0, process_count: int = 1,
                  probe_steps: int = 8) -> PackedStream:
  """The `PackedStream` of `data` (examples_per_row 0 = `auto_examples_per_row`), logging the
  fill and drop rate of its first `probe_steps` batches."""
  if not examples_per_row:
    examples_per_row = auto_examples_per_row(data.source_len, data.target_len, max_source_length,
                                             max_target_length)
  stream = PackedStream(data, global_batch_size=global_batch_size, seed=seed,
                        examples_per_row=examples_per_row, encoder_pad_id=encoder_pad_id,
                        process_index=process_index, process_count=process_count)
  real, dropped = 0, 0
  probe = max(1, min(probe_steps, math.ceil(stream.steps_per_epoch)))
  for step in range(probe):
    rows, lost = stream.pack(step)
    real += int(rows["decoder_loss_weights"].sum())
    dropped += lost
  slots = probe * stream.local_batch_size * max_target_length
  logging.info("packing %d examples per row: %.1f%% of the target slots hold real tokens, %.1f%% "
               "of the window's examples dropped (first %d steps)", examples_per_row,
               100 * real / slots, 100 * dropped / (probe * len(stream.window.indices(0))), probe)
  return stream
