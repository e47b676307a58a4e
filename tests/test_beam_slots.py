"""Beam search over an unmoved cache (`edjax.models.beam_slots`) against the cache reorder.

The slot attention equals plain attention over each beam's gathered history (random slot
tables, causal + padding masks, every backend's path); its einsum path reads the stored K/V in
place (no gather in the compiled program); a beam reorder moves only the slot tables; and whole
beam searches (BERT, GPT-2 and BART decoders, scanned, a decoder prompt, output_scores) give the
same sequences and scores with the slots as with the per-step cache reorder, whose HF parity
tests/test_generate.py checks. The cross-attention K/V laid out for the decode steps
(`generation.CROSS_KV_LAYOUT`) generate the same as well.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers

import edjax
from edjax import generation
from edjax.generation_processors import gather_cache_beams
from edjax.model_configs import with_runtime_options
from edjax.models import beam_slots, stacking
from edjax.models.attention import dot_product_attention
from edjax.models.encoder_decoder import model_for_config
from edjax.models.layers import causal_mask, combine_masks
from edjax.testing.hf_utils import tiny_hf_config

BATCH, BEAMS, HEADS, HEAD_DIM, MAX_LEN = 2, 3, 4, 8, 10


def _slot_case(q_len: int, index: int, seed: int = 0):
  """Random query / stored K, V / slot table / mask for a step writing positions index.."""
  rng = np.random.default_rng(seed)
  rows = BATCH * BEAMS
  query = jnp.asarray(rng.normal(size=(rows, q_len, HEADS, HEAD_DIM)), jnp.float32)
  key = jnp.asarray(rng.normal(size=(rows, HEADS, HEAD_DIM, MAX_LEN)), jnp.float32)
  value = jnp.asarray(rng.normal(size=(rows, HEADS, MAX_LEN, HEAD_DIM)), jnp.float32)  # V layout
  slots = jnp.asarray(rng.integers(0, BEAMS, (BATCH, BEAMS, MAX_LEN)), jnp.int32)
  slots = slots.at[:, :, index:index + q_len].set(jnp.arange(BEAMS)[None, :, None])  # own
  padding = np.ones((rows, 1, 1, MAX_LEN), bool)
  padding[1, ..., 0] = False  # a padded first position in one row (fully masked at index 0:
  #                             HF's finfo.min bias then averages the row's history)
  mask = combine_masks(jnp.asarray(padding), causal_mask(q_len, MAX_LEN, offset=index))
  return query, key, value, slots, mask


def _history(stored: np.ndarray, slots: np.ndarray) -> np.ndarray:
  """numpy: each beam's history [rows, max_len, heads, head_dim] from its slot table and the
  stored [rows, heads, head_dim, max_len] (K's layout; V's transposed to it)."""
  out = np.zeros((BATCH * BEAMS, MAX_LEN, HEADS, HEAD_DIM), np.float32)
  for b in range(BATCH):
    for g in range(BEAMS):
      for t in range(MAX_LEN):
        out[b * BEAMS + g, t] = stored[b * BEAMS + slots[b, g, t], :, :, t]
  return out


@pytest.mark.parametrize("q_len,index", [(1, 0), (1, 6), (3, 4)])
@pytest.mark.parametrize("impl", ["einsum", "xla"])
def test_slot_attention_equals_attention_over_each_beams_history(q_len, index, impl):
  query, key, value, slots, mask = _slot_case(q_len, index)
  out, probs = beam_slots.attention(query, key, value, slots, mask, None,
                                    0.35, jnp.float32, impl)
  hist_k = _history(np.asarray(key), np.asarray(slots))
  hist_v = _history(np.asarray(value).transpose(0, 1, 3, 2), np.asarray(slots))
  want_out, want_probs = dot_product_attention(query, jnp.asarray(hist_k), jnp.asarray(hist_v),
                                               None, 0.35, None, 0.0, jnp.float32, mask=mask)
  np.testing.assert_allclose(np.asarray(out), np.asarray(want_out), atol=1e-6, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(probs), np.asarray(want_probs), atol=1e-6)
  np.testing.assert_allclose(np.asarray(beam_slots.read_rows(key, slots)), hist_k)


def test_slot_attention_with_a_bias_reads_the_history_through_a_gather():
  query, key, value, slots, mask = _slot_case(1, 5)
  bias = jnp.asarray(np.random.default_rng(1).normal(size=(1, HEADS, 1, MAX_LEN)), jnp.float32)
  out, _ = beam_slots.attention(query, key, value, slots, mask, bias, 0.35,
                                jnp.float32)
  hist_v = _history(np.asarray(value).transpose(0, 1, 3, 2), np.asarray(slots))
  want, _ = dot_product_attention(
      query, jnp.asarray(_history(np.asarray(key), np.asarray(slots))), jnp.asarray(hist_v), bias,
      0.35, None, 0.0, jnp.float32, mask=mask)
  np.testing.assert_allclose(np.asarray(out), np.asarray(want), atol=1e-6, rtol=1e-6)


def test_einsum_slot_attention_reads_the_stored_cache_in_place():
  """The point of the slots: no gather (and no K/V-sized copy) in the compiled attention."""
  query, key, value, slots, mask = _slot_case(1, 5)
  fn = jax.jit(lambda *a: beam_slots.attention(*a, None, 0.35, jnp.float32)[0])
  hlo = fn.lower(query, key, value, slots, mask).compile().as_text()
  assert " gather(" not in hlo
  plain = jax.jit(beam_slots.read_rows).lower(key, slots).compile().as_text()
  assert " gather(" in plain  # the check above can see a gather


def test_beam_reorder_moves_only_the_slot_tables():
  model, _ = _model("bert2bert")
  cache = beam_slots.add_beam_slots(model.init_cache(BATCH * BEAMS, MAX_LEN), BATCH, BEAMS)
  assert beam_slots.has_beam_slots(cache)
  leaves = jax.tree_util.tree_leaves_with_path(cache)
  cache = jax.tree_util.tree_map(lambda x: x + 1 if x.dtype == jnp.float32 else x, cache)
  parents = jnp.asarray([[2, 2, 0], [1, 0, 1]], jnp.int32)
  moved = gather_cache_beams(cache, parents)
  for (path, before), after in zip(jax.tree_util.tree_leaves_with_path(cache),
                                   jax.tree_util.tree_leaves(moved)):
    if path[-1].key == beam_slots.NAME:
      np.testing.assert_array_equal(np.asarray(after), np.broadcast_to(
          np.asarray(parents)[:, :, None], (BATCH, BEAMS, MAX_LEN)))
    else:
      assert after is before  # K/V and counters untouched
  assert sum(p[-1].key == beam_slots.NAME for p, _ in leaves) == 2  # one per decoder layer


PAIRS = {
    "bert2bert": lambda: (tiny_hf_config("bert"), tiny_hf_config("bert", decoder=True)),
    "bert2gpt2": lambda: (tiny_hf_config("bert"),
                          tiny_hf_config("gpt2", vocab=101, decoder=True)),
    "bert2bart": lambda: (tiny_hf_config("bert"), tiny_hf_config("bart", decoder=True)),
}


def _model(name: str, **options):
  enc, dec = PAIRS[name]()
  cfg = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(enc, dec).to_dict()
  cfg.update(decoder_start_token_id=2, eos_token_id=3, pad_token_id=1)
  model, params = edjax.from_config(cfg, rng=0)
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(7), len(leaves))
  params = jax.tree_util.tree_unflatten(  # a little noise: beams that diverge and switch
      tree, [p + 0.05 * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)])
  if options:
    model = model_for_config(with_runtime_options(model.config, **options))
    params = stacking.to_scanned(model, params)
  return model, params


def _search(model, params, slots: bool, monkeypatch, switch: str = "BEAM_SLOTS", **settings):
  monkeypatch.setattr(generation, switch, slots)
  jax.clear_caches()  # the switch is read at trace time
  rng = np.random.default_rng(0)
  ids = rng.integers(4, 99, (3, 9)).astype(np.int32)
  mask = (np.arange(9)[None] < np.array([9, 6, 3])[:, None]).astype(np.int32)
  out = edjax.generate(model, params, ids, mask, max_length=9, **settings)
  jax.clear_caches()
  return jax.tree_util.tree_map(np.asarray, out)


@pytest.mark.parametrize("name,options,settings", [
    ("bert2bert", {}, dict(num_beams=4, num_return_sequences=4, length_penalty=0.6,
                           output_scores=True)),
    ("bert2gpt2", {}, dict(num_beams=3, num_return_sequences=2, min_length=4)),
    ("bert2bart", {}, dict(num_beams=2, no_repeat_ngram_size=2)),
    ("bert2bert", dict(scan_layers=True), dict(num_beams=3)),
    ("bert2bert", {}, dict(num_beams=3, decoder_input_ids=np.array([[2, 7, 8]] * 3))),
])
def test_beam_search_with_slots_equals_the_cache_reorder(name, options, settings, monkeypatch):
  model, params = _model(name, **options)
  moved = _search(model, params, False, monkeypatch, **settings)
  slotted = _search(model, params, True, monkeypatch, **settings)
  np.testing.assert_array_equal(slotted.sequences, moved.sequences)
  assert (moved.sequences[:, 1:] != 1).any()  # something was generated
  np.testing.assert_allclose(slotted.scores, moved.scores, atol=1e-5)
  if settings.get("output_scores"):
    np.testing.assert_array_equal(slotted.beam_indices, moved.beam_indices)
    np.testing.assert_allclose(slotted.transition_scores, moved.transition_scores, atol=1e-5)
    # a hypothesis switched rows mid-search (a parent other than itself): slots were reordered
    steps = [row[row >= 0] for row in slotted.beam_indices]
    assert any(len(np.unique(row[1:])) > 1 for row in steps)


@pytest.mark.parametrize("options", [{}, dict(scan_layers=True)])
def test_cross_kv_laid_out_before_the_loop_generates_the_same(options, monkeypatch):
  """generation.CROSS_KV_LAYOUT (cross-attention K/V stored [.., heads, head_dim, src] for the
  steps) against K/V as the model returns them, greedy and beam search."""
  model, params = _model("bert2gpt2", **options)
  for settings in (dict(num_beams=1, output_scores=True), dict(num_beams=3)):
    plain = _search(model, params, False, monkeypatch, "CROSS_KV_LAYOUT", **settings)
    laid = _search(model, params, True, monkeypatch, "CROSS_KV_LAYOUT", **settings)
    np.testing.assert_array_equal(laid.sequences, plain.sequences)
    np.testing.assert_allclose(laid.scores, plain.scores, atol=1e-5)
    assert (plain.sequences[:, 1:] != 1).any()
