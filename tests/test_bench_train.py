"""scripts/bench_train.py --data wiki_split: the real-data batches its table times (no timing)."""

from __future__ import annotations

import numpy as np

from scripts.bench_train import wiki_split_batches


def test_wiki_split_batches_pad_trim_and_pack_the_same_kind_of_examples(minilm_dir):
  b = wiki_split_batches(minilm_dir, batch=8, src_len=128, tgt_len=96, examples=400)
  padded, longest, packed = b["padded"], b["longest"], b["packed"]
  assert padded["input_ids"].shape == (8, 128) and padded["labels"].shape == (8, 96)
  # the batch padded to its own longest source / target: the same real tokens, fewer slots
  src_max = int(padded["attention_mask"].sum(1).max())
  tgt_max = int(padded["decoder_attention_mask"].sum(1).max())
  assert longest["input_ids"].shape == (8, src_max) and longest["labels"].shape == (8, tgt_max)
  assert src_max < 128 and tgt_max < 96
  for key in ("attention_mask", "decoder_attention_mask"):
    assert longest[key].sum() == padded[key].sum()
  np.testing.assert_array_equal(longest["labels"], padded["labels"][:, :tgt_max])
  # packed: as many rows, the auto rule's 2 examples per row at these lengths, fuller rows
  assert b["per_row"] == 2 and packed["input_ids"].shape == (8, 128)
  assert b["packed_examples"] > b["padded_examples"] == 8
  assert packed["decoder_attention_mask"].sum() > 1.5 * padded["decoder_attention_mask"].sum()
  assert int(packed["decoder_segment_ids"].max()) >= 2
