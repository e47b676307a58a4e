"""Sequence packing (`config.data.pack=True`, edjax.data.packing + edjax.models.segments): packed
losses equal unpacked ones, attention never crosses segments, positions and decoder inputs restart
per segment, the packer is deterministic and pure in (seed, step), WikiSplit rows fill up."""

from __future__ import annotations

import importlib
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

import edjax
from edjax import losses
from edjax.data import packing
from edjax.data.pipeline import Tokenized
from edjax.model_configs import ConfigError, EncoderDecoderConfig, config_from_dict
from edjax.models import bert, segments
from edjax.train import loss as loss_lib

VOCAB = 97
SRC_LEN, TGT_LEN = 24, 20
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
TINY = {
    "bert": dict(model_type="bert", vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                 num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                 **NO_DROPOUT),
    "roberta": dict(model_type="roberta", vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=64, max_position_embeddings=66,
                    pad_token_id=1, **NO_DROPOUT),
    "gpt2": dict(model_type="gpt2", vocab_size=VOCAB, n_embd=48, n_layer=2, n_head=4,
                 n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
    "bart": dict(model_type="bart", vocab_size=VOCAB, d_model=32, decoder_layers=2,
                 decoder_attention_heads=4, decoder_ffn_dim=64, max_position_embeddings=64,
                 dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, pad_token_id=1),
}
# (encoder, decoder, pad id, decoder start id): the two pairs, plus BART's offset-2
# learned positions in the decoder.
PAIRS = {"bert2bert": ("bert", "bert", 0, 2), "roberta2gpt2": ("roberta", "gpt2", 1, 2),
         "roberta2bart": ("roberta", "bart", 1, 2)}


def tiny_model(pair: str):
  enc, dec, pad, start = PAIRS[pair]
  cfg = EncoderDecoderConfig.from_encoder_decoder_configs(
      config_from_dict(TINY[enc]), config_from_dict(TINY[dec]), decoder_start_token_id=start,
      pad_token_id=pad)
  model, params = edjax.from_config(cfg, rng=0)
  return model, params, pad


def random_examples(n: int, pad: int, seed: int = 0, min_len: int = 3) -> Tokenized:
  """n examples of random lengths (ids never equal to pad), padded to SRC_LEN / TGT_LEN."""
  rng = np.random.RandomState(seed)
  src_len = rng.randint(min_len, SRC_LEN // 2, n).astype(np.int32)
  tgt_len = rng.randint(min_len, TGT_LEN // 2, n).astype(np.int32)
  src = np.full((n, SRC_LEN), pad, np.int32)
  tgt = np.full((n, TGT_LEN), pad, np.int32)
  for i in range(n):
    src[i, :src_len[i]] = rng.randint(3, VOCAB, src_len[i])
    tgt[i, :tgt_len[i]] = rng.randint(3, VOCAB, tgt_len[i])
  return Tokenized(src, src_len, tgt, tgt_len)


def packed_and_unpacked(pad: int, n: int = 8, rows: int = 3, seed: int = 0):
  """(packed batch of n examples in `rows` rows, their unpacked batch); every example fits."""
  data = random_examples(n, pad, seed)
  packed, dropped = packing.pack_rows(data.source_ids, data.source_len, data.target_ids,
                                      data.target_len, rows, pad)
  assert dropped == 0
  return packed, data.rows(np.arange(n))


def packed_logits(model, params, batch):
  cfg = model.config
  dec_ids = segments.shift_right_per_segment(
      batch["labels"], batch["decoder_positions"], batch["decoder_segment_ids"], cfg.pad_token_id,
      cfg.decoder_start_token_id)
  return np.asarray(model.apply({"params": params}, input_ids=batch["input_ids"],
                                decoder_input_ids=dec_ids,
                                **segments.packed_model_inputs(batch)).logits)


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_packed_token_loss_equals_the_unpacked_sum(pair):
  model, params, pad = tiny_model(pair)
  packed, unpacked = packed_and_unpacked(pad)
  assert packed["labels"].shape[0] == 3 and unpacked["labels"].shape[0] == 8
  total_p, count_p = loss_lib.token_loss(model, params, packed)
  total_u, count_u = loss_lib.token_loss(model, params, unpacked)
  assert int(count_p) == int(count_u) == int(unpacked["decoder_attention_mask"].sum())
  assert int(packed["decoder_loss_weights"].sum()) == int(count_u)  # every token weighted once
  np.testing.assert_allclose(float(total_p), float(total_u), rtol=1e-5)
  # Token by token: segment s of packed row r holds example k's target at its positions.
  logp_p, _, _ = losses.token_log_probs(jnp.asarray(packed_logits(model, params, packed)),
                                        jnp.asarray(packed["labels"]))
  out = model.apply({"params": params}, input_ids=unpacked["input_ids"],
                    attention_mask=unpacked["attention_mask"],
                    decoder_input_ids=loss_lib.decoder_inputs(model, unpacked["labels"]),
                    decoder_attention_mask=unpacked["decoder_attention_mask"])
  logp_u, _, _ = losses.token_log_probs(out.logits, jnp.asarray(unpacked["labels"]))
  logp_p, logp_u = np.asarray(logp_p), np.asarray(logp_u)
  k = 0
  for r in range(packed["labels"].shape[0]):
    for s in range(1, packed["decoder_segment_ids"][r].max() + 1):
      sel = packed["decoder_segment_ids"][r] == s
      n = int(unpacked["decoder_attention_mask"][k].sum())
      np.testing.assert_allclose(logp_p[r, sel], logp_u[k, :n], atol=1e-5)
      np.testing.assert_array_equal(packed["labels"][r, sel], unpacked["labels"][k, :n])
      k += 1
  assert k == 8  # first fit kept the examples' order within the rows' fill


@pytest.mark.parametrize("pair", ["bert2bert", "roberta2gpt2"])
def test_attention_never_crosses_segments(pair):
  model, params, pad = tiny_model(pair)
  packed, _ = packed_and_unpacked(pad)
  base = packed_logits(model, params, packed)
  changed = {k: v.copy() for k, v in packed.items()}
  enc_sel = np.flatnonzero(packed["encoder_segment_ids"][0] == 2)
  dec_sel = np.flatnonzero(packed["decoder_segment_ids"][0] == 2)
  changed["input_ids"][0, enc_sel[1]] = (packed["input_ids"][0, enc_sel[1]] + 1 - 3) % (VOCAB - 3) + 3
  changed["labels"][0, dec_sel[0]] = (packed["labels"][0, dec_sel[0]] + 1 - 3) % (VOCAB - 3) + 3
  after = packed_logits(model, params, changed)
  other = packed["decoder_segment_ids"][0] != 2  # other segments and padding of row 0
  np.testing.assert_array_equal(after[0, other], base[0, other])  # bit-identical
  np.testing.assert_array_equal(after[1:], base[1:])
  assert np.abs(after[0, dec_sel] - base[0, dec_sel]).max() > 1e-4  # the edited segment did change


def test_roberta_positions_restart_per_segment():
  cfg = config_from_dict(TINY["roberta"])
  packed, _ = packed_and_unpacked(cfg.pad_token_id)
  ids, segs = packed["input_ids"], packed["encoder_segment_ids"]
  rows = np.asarray(bert.position_ids(cfg, jnp.asarray(ids), 0, jnp.asarray(packed["encoder_positions"])))
  pad = cfg.pad_token_id
  for r in range(ids.shape[0]):
    for s in range(1, segs[r].max() + 1):
      n = int((segs[r] == s).sum())
      np.testing.assert_array_equal(rows[r, segs[r] == s], pad + 1 + np.arange(n))
    assert (rows[r, segs[r] == 0] == pad).all()
  # One unpacked example: the given positions give HF's create_position_ids_from_input_ids rows.
  single = packed_and_unpacked(pad)[1]
  ids1 = jnp.asarray(single["input_ids"])
  within = jnp.asarray(np.broadcast_to(np.arange(SRC_LEN), ids1.shape) * single["attention_mask"])
  np.testing.assert_array_equal(np.asarray(bert.position_ids(cfg, ids1, 0, within)),
                                np.asarray(bert.position_ids(cfg, ids1, 0)))


def test_decoder_inputs_restart_with_the_start_token_per_segment():
  packed, unpacked = packed_and_unpacked(0)
  dec = np.asarray(segments.shift_right_per_segment(
      jnp.asarray(packed["labels"]), packed["decoder_positions"], packed["decoder_segment_ids"],
      0, 5))
  want = np.asarray(losses.shift_tokens_right(jnp.asarray(unpacked["labels"]), 0, 5))
  k = 0
  for r in range(dec.shape[0]):
    for s in range(1, packed["decoder_segment_ids"][r].max() + 1):
      got = dec[r, packed["decoder_segment_ids"][r] == s]
      assert got[0] == 5
      np.testing.assert_array_equal(got, want[k, :len(got)])
      k += 1
    assert (dec[r, packed["decoder_segment_ids"][r] == 0] == 0).all()


def test_packing_is_deterministic_and_batch_is_pure():
  data = random_examples(200, 0, seed=1)
  kwargs = dict(global_batch_size=4, examples_per_row=3, encoder_pad_id=0)
  a = packing.PackedStream(data, seed=7, **kwargs)
  b = packing.PackedStream(data, seed=7, **kwargs)
  for step in (3, 0, 11):  # any order; a fresh stream agrees
    a.batch(step)
  for step in (11, 5, 0):
    got, want = a.batch(step), b.batch(step)
    assert set(got) == set(packing.PACKED_KEYS)
    for key in got:
      np.testing.assert_array_equal(got[key], want[key])
  other = packing.PackedStream(data, seed=8, **kwargs).batch(5)
  assert not np.array_equal(other["labels"], a.batch(5)["labels"])
  # The rows hold exactly the window's examples that fit, each target once.
  window = a.window.indices(5)
  packed, dropped = a.pack(5)
  targets = sorted(tuple(data.target_ids[i, :data.target_len[i]]) for i in window)
  got = [tuple(packed["labels"][r, packed["decoder_segment_ids"][r] == s])
         for r in range(4) for s in range(1, packed["decoder_segment_ids"][r].max() + 1)]
  assert len(got) + dropped == len(window) == 12
  assert all(t in targets for t in got) and len(set(got)) == len(got)
  # Two hosts read disjoint halves of the window and pack them into two rows each.
  hosts = [packing.PackedStream(data, seed=7, process_index=p, process_count=2, **kwargs)
           for p in range(2)]
  halves = [h.window.indices(5) for h in hosts]
  np.testing.assert_array_equal(np.concatenate(halves), window)
  assert all(h.batch(5)["labels"].shape == (2, TGT_LEN) for h in hosts)


def test_pack_with_an_image_dataset_is_a_config_error():
  cfg = edjax.data.get_config("rendered_ocr")
  cfg.pack = True
  with pytest.raises(ConfigError, match="data.pack"):
    edjax.data.build_dataset(cfg, decoder_tokenizer=object(), image_processor=lambda x: x,
                             global_batch_size=4, seed=0)


def _real_token_fraction(tmp_path, pack: bool) -> list[float]:
  from edjax.train import trainer as train_lib
  config = importlib.import_module("configs.bert2bert").get_config("smoke")
  config.data.pack = pack
  config.data.max_source_length = config.data.max_target_length = 128  # room for several
  config.total_steps, config.log_every_steps = 4, 2
  config.checkpoint_every_steps = config.eval_every_steps = 4
  config.eval.update(dict(num_generate=1, num_beams=1, max_length=4))
  config.export_hf = False
  workdir = str(tmp_path / ("packed" if pack else "unpacked"))
  train_lib.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return [r["train/real_token_fraction"] for r in rows if "train/real_token_fraction" in r]


def test_packed_wikisplit_training_fills_the_target_rows(tmp_path):
  packed = _real_token_fraction(tmp_path, pack=True)
  unpacked = _real_token_fraction(tmp_path, pack=False)
  print(f"train/real_token_fraction packed {packed} unpacked {unpacked}")
  assert len(packed) == len(unpacked) == 2  # logged every log step, packed or not
  assert min(packed) >= 0.8
  assert 0 < max(unpacked) < min(packed)
