"""BART / MBart causal decoders behind a text encoder: parity with transformers 4.57.6 PyTorch.

BERT -> BART (post-LN, widths differ: enc_to_dec_proj) and RoBERTa -> MBart (pre-LN, final
layer_norm, scaled embeddings), tiny random EncoderDecoderModels (every weight seeded noise):
logits and loss on padded batches, generated sequences, warm start from BartForCausalLM /
MBartForCausalLM directories, and the export round trip.
"""

from __future__ import annotations

import functools
import tempfile

import numpy as np
import pytest
import torch
import transformers

import edjax
from edjax.testing.hf_utils import (assert_same_sequences, hf_encoder_decoder, randomize_,
                                    tiny_hf_config, to_np)

LOGITS_TOL = 1e-4
LOSS_TOL = 1e-5
EOS, START = 3, 2

# name: (encoder, decoder, encoder width, decoder width, decoder overrides)
CASES = {
    "bert2bart-proj": ("bert", "bart", 32, 48, {}),
    "roberta2mbart": ("roberta", "mbart", 32, 32, dict(scale_embedding=True)),
}


@functools.lru_cache(maxsize=None)
def built(name: str):
  enc, dec, enc_hidden, dec_hidden, overrides = CASES[name]
  hf = hf_encoder_decoder(enc, dec, enc_hidden, dec_hidden, seed=len(name), **overrides)
  with torch.no_grad():  # EOS likely enough that beams finish at different steps
    hf.decoder.model.decoder.embed_tokens.weight[EOS] *= 3.0
  directory = tempfile.mkdtemp(prefix=f"edjax-{name}-")
  hf.save_pretrained(directory)
  model, params = edjax.from_pretrained(directory)
  return hf, model, params, directory


def _inputs(model, seed: int = 0):
  enc, pad = model.config.encoder, model.config.pad_token_id
  rng = np.random.default_rng(seed)
  ids = rng.integers(4, enc.vocab_size, (3, 9))
  mask = np.ones_like(ids)
  ids[1, 6:], mask[1, 6:] = enc.pad_token_id, 0
  ids[2, 3:], mask[2, 3:] = enc.pad_token_id, 0
  labels = rng.integers(4, model.config.decoder.vocab_size, (3, 7))
  dec_mask = (np.arange(7)[None] < np.array([7, 5, 2])[:, None]).astype(np.int64)
  labels = np.where(dec_mask > 0, labels, pad)
  dec_in = np.concatenate([np.full((3, 1), START), labels[:, :-1]], axis=1)
  return ids, mask, labels, dec_in, dec_mask


@pytest.mark.parametrize("name", list(CASES))
def test_logits_and_loss_match_transformers(name):
  hf, model, params, _ = built(name)
  assert model.config.needs_enc_to_dec_proj == name.endswith("-proj")
  ids, mask, labels, dec_in, dec_mask = _inputs(model)
  ignored = np.where(dec_mask > 0, labels, -100)
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
             decoder_input_ids=torch.tensor(dec_in), decoder_attention_mask=torch.tensor(dec_mask),
             labels=torch.tensor(ignored), output_hidden_states=True)
  out = model.apply({"params": params}, input_ids=ids, attention_mask=mask,
                    decoder_input_ids=dec_in, decoder_attention_mask=dec_mask, labels=ignored,
                    output_hidden_states=True)
  real = dec_mask.astype(bool)
  np.testing.assert_allclose(np.asarray(out.logits)[real], to_np(ref.logits)[real],
                             atol=LOGITS_TOL, rtol=0)
  assert len(out.decoder_hidden_states) == len(ref.decoder_hidden_states) == 3
  for a, b in zip(out.decoder_hidden_states, ref.decoder_hidden_states):
    np.testing.assert_allclose(np.asarray(a)[real], to_np(b)[real], atol=LOGITS_TOL, rtol=0)
  np.testing.assert_allclose(float(out.loss), float(ref.loss), atol=LOSS_TOL, rtol=0)


GEN_SETTINGS = {
    "greedy": dict(max_length=10),
    "beam-lp-early": dict(max_length=10, num_beams=3, length_penalty=2.0, early_stopping=True),
    "beam-ngram-min-nrs": dict(max_length=12, num_beams=4, no_repeat_ngram_size=2, min_length=6,
                               num_return_sequences=2),
    "repetition": dict(max_length=10, repetition_penalty=1.3),
}


@pytest.mark.parametrize("setting", list(GEN_SETTINGS))
@pytest.mark.parametrize("name", list(CASES))
def test_generate_matches_transformers(name, setting):
  hf, model, params, _ = built(name)
  ids, mask = _inputs(model, seed=1)[:2]
  kw = GEN_SETTINGS[setting]
  with torch.no_grad():
    ref = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                      return_dict_in_generate=True, output_scores=True, **kw)
  out = edjax.generate(model, params, ids, mask, **kw)
  assert_same_sequences(np.asarray(out.sequences), to_np(ref.sequences), EOS,
                        model.config.pad_token_id)
  if kw.get("num_beams", 1) > 1:
    np.testing.assert_allclose(np.asarray(out.scores), to_np(ref.sequences_scores), atol=1e-5,
                               rtol=0)


@pytest.mark.parametrize("dec", ["bart", "mbart"])
def test_warm_start_from_causal_lm_dir_equals_transformers(dec, tmp_path):
  """BertModel dir + Bart/MBartForCausalLM dir: the same model as transformers' warm start (the
  causal LM's checkpoint holds its cross-attention, so nothing is fresh at equal widths)."""
  torch.manual_seed(0)
  bert = transformers.BertModel(tiny_hf_config("bert")).eval()
  randomize_(bert, seed=1)
  lm_cls = transformers.BartForCausalLM if dec == "bart" else transformers.MBartForCausalLM
  lm = lm_cls(tiny_hf_config(dec, decoder=True)).eval()
  randomize_(lm, seed=2)
  lm.tie_weights()
  bert.save_pretrained(tmp_path / "bert")
  lm.save_pretrained(tmp_path / dec)
  hf = transformers.EncoderDecoderModel.from_encoder_decoder_pretrained(
      str(tmp_path / "bert"), str(tmp_path / dec)).eval()
  model, params, info = edjax.from_encoder_decoder_pretrained(
      str(tmp_path / "bert"), str(tmp_path / dec), output_loading_info=True,
      decoder_start_token_id=START, pad_token_id=1, eos_token_id=EOS)
  assert not info["decoder"].missing and not info["decoder"].unexpected, info["decoder"].summary()
  assert not info["decoder"].initialized  # cross-attention came from the checkpoint
  ids, mask, _, dec_in, dec_mask = _inputs(model)
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
             decoder_input_ids=torch.tensor(dec_in), decoder_attention_mask=torch.tensor(dec_mask))
  out = model.apply({"params": params}, input_ids=ids, attention_mask=mask,
                    decoder_input_ids=dec_in, decoder_attention_mask=dec_mask)
  real = dec_mask.astype(bool)
  np.testing.assert_allclose(np.asarray(out.logits)[real], to_np(ref.logits)[real],
                             atol=LOGITS_TOL, rtol=0)


@pytest.mark.parametrize("name", list(CASES))
def test_export_round_trip_loads_in_transformers(name, tmp_path):
  hf, model, params, _ = built(name)
  edjax.save_pretrained(model, params, str(tmp_path))
  back, info = transformers.EncoderDecoderModel.from_pretrained(str(tmp_path),
                                                                output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  ids, mask, _, dec_in, _ = _inputs(model, seed=2)
  with torch.no_grad():
    a = back.eval()(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                    decoder_input_ids=torch.tensor(dec_in)).logits
    b = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
           decoder_input_ids=torch.tensor(dec_in)).logits
  np.testing.assert_array_equal(to_np(a), to_np(b))
  model2, _ = edjax.from_pretrained(str(tmp_path))
  assert model2.config == model.config


def test_decode_with_cache_equals_teacher_forcing():
  _, model, params, _ = built("roberta2mbart")
  ids, mask, _, dec_in, _ = _inputs(model, seed=3)
  full = np.asarray(model.apply({"params": params}, input_ids=ids, attention_mask=mask,
                                decoder_input_ids=dec_in).logits)
  enc = model.apply({"params": params}, input_ids=ids, attention_mask=mask,
                    method="encode").last_hidden_state
  kv = model.apply({"params": params}, encoder_hidden_states=enc, method="cross_kv")
  cache = model.init_cache(3, dec_in.shape[1])
  steps = []
  for t in range(dec_in.shape[1]):
    out, mutated = model.apply({"params": params, "cache": cache},
                               decoder_input_ids=dec_in[:, t:t + 1], cross_kv=kv,
                               encoder_attention_mask=mask, decode=True, method="decode",
                               mutable=["cache"])
    cache = mutated["cache"]
    steps.append(np.asarray(out.logits[:, 0]))
  np.testing.assert_allclose(np.stack(steps, 1), full, atol=1e-5, rtol=0)
