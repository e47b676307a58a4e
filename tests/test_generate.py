"""edjax.generate vs transformers 4.57.6 PyTorch `generate`: identical sequences, same beam scores.

Tiny random HF models are saved with save_pretrained and loaded with edjax.from_pretrained. The
EOS logit is raised so that beams finish at different steps and every early-stopping branch of
HF's beam search is exercised (a random model with a 99-token vocabulary almost never emits EOS).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest
import torch

import edjax
from edjax import generation as G

from edjax.testing import hf_utils
from edjax.testing.hf_utils import hf_encoder_decoder, to_np

EOS = 3  # tests/hf_utils.hf_encoder_decoder sets eos_token_id = 3


def boost_eos(hf, amount: float) -> None:
  """Adds `amount` to the decoder's EOS logit through its output bias (or embedding row)."""
  dec = hf.decoder
  with torch.no_grad():
    if hasattr(dec, "cls"):
      dec.cls.predictions.bias[EOS] += amount
    elif hasattr(dec, "lm_head") and hasattr(dec.lm_head, "bias") and dec.lm_head.bias is not None:
      dec.lm_head.bias[EOS] += amount
    else:  # GPT-2: tied, bias-free head; push the EOS row toward the final hidden states
      emb = dec.transformer.wte.weight
      emb[EOS] = emb[EOS] + amount * dec.transformer.ln_f.bias / dec.transformer.ln_f.bias.norm()


@functools.lru_cache(maxsize=None)
def pair(name: str):
  """(hf_model, edjax model, params) for a named tiny pair."""
  spec = {"bert2bert": ("bert", "bert", 32, 32, False, 2.0),
          "roberta2gpt2-proj": ("roberta", "gpt2", 32, 24, False, 6.0),
          "bertshare": ("bert", "bert", 32, 32, True, 2.0)}[name]
  enc, dec, eh, dh, tie, boost = spec
  hf = hf_encoder_decoder(enc, dec, eh, dh, tie, seed=1)
  boost_eos(hf, boost)
  directory = tempfile.mkdtemp(prefix=f"edjax-gen-{name}-")
  hf.save_pretrained(directory)
  model, params = edjax.from_pretrained(directory)
  return hf, model, params, directory


def inputs(hf, batch=3, length=9, seed=0):
  rng = np.random.RandomState(seed)
  pad = hf.config.encoder.pad_token_id
  ids = rng.randint(4, 99, (batch, length))
  mask = np.ones_like(ids)
  ids[1, length - 3:], mask[1, length - 3:] = pad, 0  # one right-padded row
  return ids, mask


def hf_generate(hf, ids, mask, **kw):
  with torch.no_grad():
    out = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                      output_scores=True, return_dict_in_generate=True, **kw)
  scores = getattr(out, "sequences_scores", None)
  return to_np(out.sequences), None if scores is None else to_np(scores)


def assert_same_sequences(ours: np.ndarray, theirs: np.ndarray, pad: int) -> None:
  hf_utils.assert_same_sequences(ours, theirs, EOS, pad)


SETTINGS = {
    "greedy": dict(max_length=12),
    "beam-lp2": dict(max_length=12, num_beams=4, length_penalty=2.0),
    "beam-early-true": dict(max_length=12, num_beams=3, early_stopping=True),
    "beam-early-never": dict(max_length=12, num_beams=3, early_stopping="never", length_penalty=0.6),
    "beam-ngram-minlen-return": dict(max_length=14, num_beams=4, no_repeat_ngram_size=2,
                                     min_length=7, num_return_sequences=3, length_penalty=1.5),
    "greedy-repetition": dict(max_length=12, repetition_penalty=1.8),
    "beam-repetition": dict(max_length=12, num_beams=2, repetition_penalty=1.3),
    "forced-bos-eos": dict(max_length=10, num_beams=2, forced_bos_token_id=7, forced_eos_token_id=EOS),
    "max-new-tokens": dict(max_new_tokens=6, num_beams=2),
}


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("name", ["bert2bert", "roberta2gpt2-proj", "bertshare"])
def test_sequences_match_transformers(name, setting):
  hf, model, params, _ = pair(name)
  ids, mask = inputs(hf)
  kw = SETTINGS[setting]
  theirs, their_scores = hf_generate(hf, ids, mask, **kw)
  out = edjax.generate(model, params, ids, mask, **kw)
  assert out.sequences.dtype == np.int32
  assert_same_sequences(np.asarray(out.sequences), theirs, model.config.pad_token_id)
  if kw.get("num_beams", 1) > 1:
    np.testing.assert_allclose(np.asarray(out.scores), their_scores, atol=1e-5, rtol=0)
  else:
    assert out.scores is None


def test_eos_is_exercised():
  """The boosted EOS makes beams finish at different lengths (else early stopping is untested)."""
  hf, model, params, _ = pair("bert2bert")
  ids, mask = inputs(hf)
  seqs = np.asarray(edjax.generate(model, params, ids, mask, max_length=12, num_beams=3,
                                   num_return_sequences=3).sequences)
  lengths = {int(np.argmax(row[1:] == EOS)) + 2 for row in seqs if (row[1:] == EOS).any()}
  assert len(lengths) >= 2, seqs


def test_min_length_bans_eos_and_defaults_from_generation_config():
  hf, model, params, directory = pair("bert2bert")
  ids, mask = inputs(hf)
  seqs = np.asarray(edjax.generate(model, params, ids, mask, max_length=12, min_length=9).sequences)
  assert not (seqs[:, 1:8] == EOS).any()
  # generation_config.json of the checkpoint supplies defaults, as in HF.
  import json
  with open(os.path.join(directory, "generation_config.json")) as f:
    gen = json.load(f)
  assert gen["decoder_start_token_id"] == 2 and gen["eos_token_id"] == EOS
  model2, params2 = edjax.from_pretrained(directory)
  model2.generation_defaults = dict(gen, num_beams=3, max_length=9, length_penalty=0.5)
  theirs, _ = hf_generate(hf, ids, mask, num_beams=3, max_length=9, length_penalty=0.5)
  ours = np.asarray(edjax.generate(model2, params2, ids, mask).sequences)
  assert ours.shape[1] == 9
  assert_same_sequences(ours, theirs, model.config.pad_token_id)


def test_minilm_bert2bert_cnn_dm_settings(minilm_dir, wiki_sentences):
  """A transformers-made MiniLM bert2bert with CNN/DM-style settings: identical sequences."""
  import transformers
  from edjax.processing.tokenizers import Tokenizer
  torch.manual_seed(0)
  hf = transformers.EncoderDecoderModel.from_encoder_decoder_pretrained(minilm_dir, minilm_dir).eval()
  hf.config.decoder_start_token_id, hf.config.pad_token_id, hf.config.eos_token_id = 101, 0, 102
  with tempfile.TemporaryDirectory() as d:
    hf.save_pretrained(d)
    model, params = edjax.from_pretrained(d)
  ids, mask = Tokenizer.from_dir(minilm_dir).encode_batch([s for s, _ in wiki_sentences[:2]], 64)
  kw = dict(num_beams=4, length_penalty=2.0, no_repeat_ngram_size=3, min_length=12, max_length=20,
            early_stopping=True, decoder_start_token_id=101, eos_token_id=102, pad_token_id=0)
  with torch.no_grad():
    ref = hf.generate(input_ids=torch.tensor(ids, dtype=torch.long),
                      attention_mask=torch.tensor(mask, dtype=torch.long), output_scores=True,
                      return_dict_in_generate=True, **kw)
  out = edjax.generate(model, params, ids, mask, **kw)
  theirs = to_np(ref.sequences)
  np.testing.assert_array_equal(np.asarray(out.sequences)[:, :theirs.shape[1]], theirs)
  np.testing.assert_allclose(np.asarray(out.scores), to_np(ref.sequences_scores), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- sampling


def _sampled_positions(seqs):
  """[n, length-1] True where seqs[:, 1:] was sampled (up to and including the first EOS)."""
  is_eos = seqs[:, 1:] == EOS
  after = np.cumsum(is_eos, axis=1) - is_eos  # EOS seen strictly before this position
  return after == 0


def _teacher_forced_logits(model, params, ids, mask, seqs):
  out = model.apply({"params": params}, input_ids=ids, attention_mask=mask,
                    decoder_input_ids=seqs[:, :-1])
  return np.asarray(out.logits)  # [n, length - 1, vocab]: logits that chose seqs[:, 1:]


def test_sampling_is_deterministic_per_key_and_respects_top_k_and_top_p():
  hf, model, params, _ = pair("bert2bert")
  ids, mask = inputs(hf)
  kw = dict(do_sample=True, max_length=10, top_k=3)
  a = np.asarray(edjax.generate(model, params, ids, mask, prng_key=7, **kw).sequences)
  b = np.asarray(edjax.generate(model, params, ids, mask, prng_key=7, **kw).sequences)
  c = np.asarray(edjax.generate(model, params, ids, mask, prng_key=8, **kw).sequences)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  logits = _teacher_forced_logits(model, params, ids, mask, a)
  rank = (logits > np.take_along_axis(logits, a[:, 1:, None], -1)).sum(-1)  # [n, length-1]
  sampled = _sampled_positions(a)
  assert sampled.sum() > 10
  assert rank[sampled].max() < 3, rank

  kw = dict(do_sample=True, max_length=10, top_k=0, top_p=0.3, num_return_sequences=2)
  s = np.asarray(edjax.generate(model, params, ids, mask, prng_key=3, **kw).sequences)
  assert s.shape[0] == 2 * ids.shape[0]
  logits = _teacher_forced_logits(model, params, np.repeat(ids, 2, 0), np.repeat(mask, 2, 0), s)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  chosen = np.take_along_axis(probs, s[:, 1:, None], -1)[..., 0]
  mass_above = np.where(probs > chosen[..., None], probs, 0).sum(-1)  # prob of better tokens
  sampled = _sampled_positions(s)
  assert sampled.sum() > 10
  # each sampled token lies inside the 0.3 nucleus: less than 0.3 mass on better tokens
  assert (mass_above[sampled] < 0.3 + 1e-6).all(), mass_above


# ----------------------------------------------------------------------------- compilation


def test_same_shapes_and_settings_do_not_recompile():
  hf, model, params, _ = pair("bert2bert")
  ids, mask = inputs(hf, length=9)
  kw = dict(max_length=8, num_beams=2)
  edjax.generate(model, params, ids, mask, **kw)
  before = G.jit_generate.trace_count
  edjax.generate(model, params, ids, mask, **kw)
  ids2, mask2 = inputs(hf, length=13, seed=1)  # same bucket (16): no recompile either
  edjax.generate(model, params, ids2, mask2, **kw)
  assert G.jit_generate.trace_count == before
  edjax.generate(model, params, ids, mask, max_length=8, num_beams=3)  # new settings: compiles
  assert G.jit_generate.trace_count == before + 1


def test_bucket_padding_does_not_change_results():
  hf, model, params, _ = pair("roberta2gpt2-proj")
  ids, mask = inputs(hf, length=9)
  a = edjax.generate(model, params, ids, mask, max_length=10, num_beams=2)
  b = edjax.generate(model, params, ids, mask, max_length=10, num_beams=2, bucket_inputs=False)
  np.testing.assert_array_equal(np.asarray(a.sequences), np.asarray(b.sequences))
  np.testing.assert_allclose(np.asarray(a.scores), np.asarray(b.scores), atol=1e-6)


@pytest.mark.parametrize("kw,fragment", [
    (dict(num_beams=2, num_return_sequences=3), "exceeds num_beams"),
    (dict(num_return_sequences=2), "greedy search returns one sequence"),
    (dict(max_length=500), "exceeds the decoder's"),
    (dict(num_beams=2, do_sample=True), "beam sampling"),
    (dict(early_stopping="sometimes", num_beams=2), "early_stopping must be"),
    (dict(decoder_start_token_id=1000), "must lie in"),
])
def test_bad_settings_raise_clear_errors(kw, fragment):
  hf, model, params, _ = pair("bert2bert")
  ids, mask = inputs(hf)
  with pytest.raises(ValueError, match=fragment):
    edjax.generate(model, params, ids, mask, **kw)


# ----------------------------------------------------------------------------- sharding

SHARDED_SCRIPT = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import edjax
    assert jax.device_count() == 8, jax.devices()
    model, params = edjax.from_pretrained({directory!r})
    rng = np.random.RandomState(0)
    ids = rng.randint(4, 99, (8, 9)).astype(np.int32); mask = np.ones_like(ids); mask[3, 6:] = 0
    kw = dict(max_length=10, num_beams=3, length_penalty=2.0)
    single = edjax.generate(model, params, ids, mask, **kw)
    mesh = Mesh(np.array(jax.devices()).reshape(8), ("data",))
    shard = NamedSharding(mesh, P("data"))
    rep = NamedSharding(mesh, P())
    sharded = edjax.generate(model, jax.device_put(params, rep), jax.device_put(ids, shard),
                             jax.device_put(mask, shard), **kw)
    assert len(sharded.sequences.sharding.device_set) == 8, sharded.sequences.sharding
    np.testing.assert_array_equal(np.asarray(single.sequences), np.asarray(sharded.sequences))
    np.testing.assert_allclose(np.asarray(single.scores), np.asarray(sharded.scores), atol=1e-5)
    print("SHARDED-OK")
""")


def test_sharded_generation_on_8_fake_devices_matches_one_device():
  _, _, _, directory = pair("bert2bert")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
  proc = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT.format(directory=directory)],
                        capture_output=True, text=True, env=env, timeout=600)
  assert "SHARDED-OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]
