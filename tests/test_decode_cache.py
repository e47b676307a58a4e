"""Decode-mode consistency: the static self-attention cache and precomputed cross K/V.

Running the decoder token by token (or a multi-token prefill, then token by token) with the
cache gives the logits of the full teacher-forced pass, for BERT, RoBERTa and GPT-2 decoders,
with and without `enc_to_dec_proj`, with padded encoder inputs. Params are perturbed with seeded
noise (LayerNorms and biases included) so that a wrong position offset, a dropped mask or a stale
cache entry changes the logits far beyond the tolerance.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import edjax

ATOL = 1e-5
BATCH, SRC_LEN, TGT_LEN, MAX_LEN = 2, 7, 6, 8
DEC_TYPES = ("bert", "roberta", "gpt2")


def _part_config(model_type: str, hidden: int, vocab: int):
  if model_type == "bert":
    return edjax.BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=2,
                              num_attention_heads=4, intermediate_size=37,
                              max_position_embeddings=64)
  if model_type == "roberta":
    return edjax.RobertaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=37,
                                 max_position_embeddings=66)
  assert model_type == "gpt2"
  return edjax.GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=2, n_head=4, n_positions=64,
                            bos_token_id=vocab - 1, eos_token_id=vocab - 1, pad_token_id=0)


def random_params(model, seed: int, std: float = 0.2):
  """Seeded noise for every param (LayerNorm scales 1 + noise), straight from the param shapes:
  no init compile, and no weight left at a value (zero bias, unit scale) that could hide a bug."""
  rng = np.random.default_rng(seed)
  flat = traverse_util.flatten_dict(model.param_shapes(), sep="/")
  out = {}
  for path, shape in sorted(flat.items()):
    noise = std * rng.standard_normal(shape.shape).astype(np.float32)
    out[path] = jnp.asarray(1.0 + noise if path.endswith("scale") else noise)
  return traverse_util.unflatten_dict(out, sep="/")


@functools.lru_cache(maxsize=None)
def _setup(dec_type: str, proj: bool):
  """(model, params, inputs) for a `enc -> dec_type` model; proj: encoder 48 wide, decoder 32."""
  enc_type = "roberta" if dec_type == "roberta" else "bert"
  enc = _part_config(enc_type, 48 if proj else 32, 99)
  dec = _part_config(dec_type, 32, 101 if dec_type == "gpt2" else 99)
  cfg = edjax.EncoderDecoderConfig.from_encoder_decoder_configs(
      enc, dec, decoder_start_token_id=2, pad_token_id=dec.pad_token_id)
  assert cfg.needs_enc_to_dec_proj == proj
  model = edjax.EncoderDecoderModel(cfg)
  params = random_params(model, seed=len(dec_type) + 10 * proj)
  if proj:
    assert "enc_to_dec_proj" in params
  rng = np.random.default_rng(0)
  # Ids >= 3 keep the RoBERTa pad id (1) out, so positions are the plain running count.
  input_ids = rng.integers(3, 99, (BATCH, SRC_LEN)).astype(np.int32)
  attention_mask = np.ones((BATCH, SRC_LEN), np.int32)
  attention_mask[1, 4:] = 0  # row 1: 3 padded (but non-pad-id, so only the mask hides them)
  decoder_input_ids = rng.integers(3, dec.vocab_size, (BATCH, TGT_LEN)).astype(np.int32)
  decoder_input_ids[:, 0] = 2
  inputs = dict(input_ids=jnp.asarray(input_ids), attention_mask=jnp.asarray(attention_mask),
                decoder_input_ids=jnp.asarray(decoder_input_ids))
  return model, params, inputs


@functools.lru_cache(maxsize=None)
def _jitted(model):
  """Jitted full pass / cross_kv / decode / decode step of `model` (one compile per shape)."""

  @jax.jit
  def full(params, inputs, extra):
    out = model.apply({"params": params}, **inputs, **extra)
    return out.logits, out.encoder_last_hidden_state

  @jax.jit
  def cross_kv(params, encoder_hidden_states):
    return model.apply({"params": params}, encoder_hidden_states=encoder_hidden_states,
                       method="cross_kv")

  @jax.jit
  def decode_two_ways(params, decoder_input_ids, encoder_hidden_states, kv, encoder_attention_mask):
    """decode() without the cache, from encoder states and from precomputed cross K/V."""
    common = dict(decoder_input_ids=decoder_input_ids,
                  encoder_attention_mask=encoder_attention_mask, method="decode")
    via_states = model.apply({"params": params}, encoder_hidden_states=encoder_hidden_states,
                             **common)
    via_kv = model.apply({"params": params}, cross_kv=kv, **common)
    return via_states.logits, via_kv.logits

  @jax.jit
  def step(params, cache, ids, kv, encoder_attention_mask, decoder_attention_mask):
    out, mutated = model.apply(
        {"params": params, "cache": cache}, decoder_input_ids=ids, cross_kv=kv,
        encoder_attention_mask=encoder_attention_mask,
        decoder_attention_mask=decoder_attention_mask, decode=True, method="decode",
        mutable=["cache"])
    return out.logits, mutated["cache"]

  return dict(full=full, cross_kv=cross_kv, decode_two_ways=decode_two_ways, step=step)


@functools.lru_cache(maxsize=None)
def _reference(dec_type: str, proj: bool):
  """(full teacher-forced logits, encoder last_hidden_state, cross K/V) of `_setup`'s model."""
  model, params, inputs = _setup(dec_type, proj)
  fns = _jitted(model)
  logits, enc_states = fns["full"](params, inputs, {})
  return np.asarray(logits), enc_states, fns["cross_kv"](params, enc_states)


def _full_logits(model, params, inputs, **extra):
  return np.asarray(_jitted(model)["full"](params, inputs, extra)[0])


def _cache_counters(cache) -> tuple[list[int], list[int]]:
  flat = traverse_util.flatten_dict(cache, sep="/")
  index = [int(v) for k, v in flat.items() if k.endswith("/cache_index")]
  position = [int(v) for k, v in flat.items() if k.endswith("position_index")]
  return index, position


def _decode_in_chunks(dec_type, proj, chunks, decoder_attention_mask=None):
  """Feeds decoder_input_ids in chunks (sizes `chunks`) through the cache; returns logits."""
  model, params, inputs = _setup(dec_type, proj)
  fns = _jitted(model)
  kv = _reference(dec_type, proj)[2]
  cache = model.init_cache(BATCH, MAX_LEN)
  outs, start = [], 0
  for size in chunks:
    ids = inputs["decoder_input_ids"][:, start:start + size]
    logits, cache = fns["step"](params, cache, ids, kv, inputs["attention_mask"],
                                decoder_attention_mask)
    start += size
    index, position = _cache_counters(cache)
    assert len(index) == 2 and index == [start] * len(index), (index, start)
    assert position == [start], (position, start)
    outs.append(np.asarray(logits))
  return np.concatenate(outs, axis=1), cache


@pytest.mark.parametrize("proj", [False, True], ids=["same_width", "enc_to_dec_proj"])
@pytest.mark.parametrize("dec_type", DEC_TYPES)
def test_token_by_token_equals_full_pass(dec_type, proj):
  model = _setup(dec_type, proj)[0]
  full = _reference(dec_type, proj)[0]
  stepped, cache = _decode_in_chunks(dec_type, proj, [1] * TGT_LEN)
  assert stepped.shape == full.shape == (BATCH, TGT_LEN, model.config.decoder.vocab_size)
  np.testing.assert_allclose(stepped, full, atol=ATOL, rtol=0)
  # The cache holds exactly TGT_LEN written slots: the rest of the static buffer is still zero.
  flat = traverse_util.flatten_dict(cache, sep="/")
  for key in [k for k in flat if k.endswith("cached_key") or k.endswith("cached_value")]:
    buf = np.asarray(flat[key])
    if key.endswith("cached_value"):  # [batch, heads, max_len, hd] -> K's [batch, heads, hd, max_len]
      assert buf.shape == (BATCH, 4, MAX_LEN, 8), (key, buf.shape)
      buf = buf.transpose(0, 1, 3, 2)
    assert buf.shape == (BATCH, 4, 8, MAX_LEN), (key, buf.shape)  # [batch, heads, hd, max_len]
    assert np.all(np.abs(buf[..., :TGT_LEN]).sum(axis=(1, 2)) > 0), key
    assert np.all(buf[..., TGT_LEN:] == 0), key


def test_encoder_padding_matters():
  """Sanity for the tests above: the masked encoder positions do change the logits."""
  model, params, inputs = _setup("gpt2", False)
  masked = _reference("gpt2", False)[0]
  unmasked_inputs = dict(inputs, attention_mask=jnp.ones_like(inputs["attention_mask"]))
  unmasked = _full_logits(model, params, unmasked_inputs)
  assert np.abs(masked[1] - unmasked[1]).max() > 1e-2
  np.testing.assert_allclose(masked[0], unmasked[0], atol=ATOL, rtol=0)  # row 0 has no padding


@pytest.mark.parametrize("dec_type,proj", [("bert", False), ("roberta", True), ("gpt2", True)])
def test_prefill_then_steps_equals_full_pass(dec_type, proj):
  """A 3-token prefill, then one token per call."""
  chunked, _ = _decode_in_chunks(dec_type, proj, [3] + [1] * (TGT_LEN - 3))
  np.testing.assert_allclose(chunked, _reference(dec_type, proj)[0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("dec_type", ["bert", "gpt2"])
def test_decoder_attention_mask_in_decode_mode(dec_type):
  """decode mode takes the decoder mask over the whole cache ([batch, max_len])."""
  model, params, inputs = _setup(dec_type, False)
  dec_mask = np.ones((BATCH, TGT_LEN), np.int32)
  dec_mask[1, 2] = 0  # one hidden key in row 1
  full = _full_logits(model, params, inputs, decoder_attention_mask=jnp.asarray(dec_mask))
  unmasked = _reference(dec_type, False)[0]
  assert np.abs(full[1, 3:] - unmasked[1, 3:]).max() > 1e-2  # the mask matters
  cache_mask = np.ones((BATCH, MAX_LEN), np.int32)
  cache_mask[:, :TGT_LEN] = dec_mask
  stepped, _ = _decode_in_chunks(dec_type, False, [1] * TGT_LEN,
                                 decoder_attention_mask=jnp.asarray(cache_mask))
  np.testing.assert_allclose(stepped, full, atol=ATOL, rtol=0)


@pytest.mark.parametrize("proj", [False, True], ids=["same_width", "enc_to_dec_proj"])
@pytest.mark.parametrize("dec_type", DEC_TYPES)
def test_cross_kv_equals_encoder_states(dec_type, proj):
  """decode(cross_kv=...) == decode(encoder_hidden_states=...) == __call__, no decode mode."""
  model, params, inputs = _setup(dec_type, proj)
  full, enc_states, kv = _reference(dec_type, proj)
  assert len(kv) == model.config.decoder.num_layers
  for key, value in kv:
    assert key.shape == value.shape == (BATCH, SRC_LEN, 4, 8)
  via_states, via_kv = _jitted(model)["decode_two_ways"](
      params, inputs["decoder_input_ids"], enc_states, kv, inputs["attention_mask"])
  np.testing.assert_allclose(np.asarray(via_kv), np.asarray(via_states), atol=ATOL, rtol=0)
  np.testing.assert_allclose(np.asarray(via_states), full, atol=ATOL, rtol=0)


def test_eager_recipe_equals_full_pass():
  """The documented loop, un-jitted: model.apply with concrete values (eager cache checks on)."""
  model, params, inputs = _setup("gpt2", False)
  full = _reference("gpt2", False)[0]
  variables = {"params": params}
  enc = model.apply(variables, input_ids=inputs["input_ids"],
                    attention_mask=inputs["attention_mask"], method="encode")
  kv = model.apply(variables, encoder_hidden_states=enc.last_hidden_state, method="cross_kv")
  cache = model.init_cache(BATCH, MAX_LEN)
  outs = []
  for t in range(TGT_LEN):
    out, mutated = model.apply({"params": params, "cache": cache},
                               decoder_input_ids=inputs["decoder_input_ids"][:, t:t + 1],
                               cross_kv=kv, encoder_attention_mask=inputs["attention_mask"],
                               decode=True, method="decode", mutable=["cache"])
    cache = mutated["cache"]
    assert _cache_counters(cache) == ([t + 1, t + 1], [t + 1])
    outs.append(np.asarray(out.logits))
  np.testing.assert_allclose(np.concatenate(outs, axis=1), full, atol=ATOL, rtol=0)


@pytest.mark.parametrize("dec_type", DEC_TYPES)
def test_init_cache_layout(dec_type):
  model, _, _ = _setup(dec_type, True)
  cache = model.init_cache(3, 5)
  flat = traverse_util.flatten_dict(cache, sep="/")
  keys = sorted(k for k in flat if k.endswith("cached_key"))
  assert len(keys) == model.config.decoder.num_layers == 2
  for path, value in flat.items():
    assert np.all(np.asarray(value) == 0), path
    if path.endswith("cached_key") or path.endswith("cached_value"):  # K: [b, heads, hd, len]
      want = (3, 4, 8, 5) if path.endswith("cached_key") else (3, 4, 5, 8)  # V: [b, heads, len, hd]
      assert value.shape == want and value.dtype == jnp.float32, (path, value.shape)
    else:
      assert path.endswith("cache_index") or path.endswith("position_index"), path
      assert value.shape == () and value.dtype == jnp.int32, path
  assert _cache_counters(cache) == ([0, 0], [0])
