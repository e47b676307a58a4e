"""Generation controls vs transformers 4.57.6 PyTorch `generate` (issue #11 item 6).

A decoder prompt (`decoder_input_ids`, Donut's task prompt) in greedy, beam and sampling;
bad_words_ids (single- and multi-token), suppress_tokens and begin_suppress_tokens; and
output_scores: HF's per-step scores, `compute_transition_scores` and beam_indices. Tiny random
HF models (every weight seeded noise) are saved with save_pretrained and loaded with
edjax.from_pretrained: BERT -> BART, RoBERTa -> MBart, BERT -> GPT-2, and the vision cases ViT ->
MBart and DonutSwin -> MBart (Donut's shape: its task token is the start, HF prepends nothing).
"""

from __future__ import annotations

import functools
import tempfile

import numpy as np
import pytest
import torch
import transformers

import edjax
from edjax import generation as G
from edjax.testing.hf_utils import assert_same_sequences, hf_encoder_decoder, randomize_, to_np

EOS, START = 3, 2


def _save_and_load(hf, name: str):
  directory = tempfile.mkdtemp(prefix=f"edjax-controls-{name}-")
  hf.save_pretrained(directory)
  model, params = edjax.from_pretrained(directory)
  return hf, model, params


@functools.lru_cache(maxsize=None)
def text_pair(name: str):
  """(hf, edjax model, params) for a tiny text pair, EOS raised so beams end at different steps."""
  enc, dec = {"bert2bart": ("bert", "bart"), "roberta2mbart": ("roberta", "mbart"),
              "bert2gpt2": ("bert", "gpt2")}[name]
  hf = hf_encoder_decoder(enc, dec, 32, 32, seed=len(name))
  with torch.no_grad():
    if dec == "gpt2":  # tied, bias-free heads: push the EOS row toward the final LN's bias
      emb, ln = hf.decoder.transformer.wte.weight, hf.decoder.transformer.ln_f.bias
      emb[EOS] = emb[EOS] + 0.5 * ln / ln.norm()
    elif dec == "bart":
      emb, ln = hf.decoder.model.decoder.embed_tokens.weight, hf.decoder.model.decoder.layers[-1]
      emb[EOS] = emb[EOS] + 4.0 * ln.final_layer_norm.bias / ln.final_layer_norm.bias.norm()
    else:
      hf.decoder.model.decoder.embed_tokens.weight[EOS] *= 3.0
  return _save_and_load(hf, name)


@functools.lru_cache(maxsize=None)
def vision_pair(encoder: str):
  """A tiny VisionEncoderDecoderModel: 'vit' (ViT -> MBart, test_vision_parity's case) or
  'donut' (DonutSwin -> MBart)."""
  torch.manual_seed(0)
  if encoder == "vit":
    enc = transformers.ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32,
                                 num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
  else:
    enc = transformers.DonutSwinConfig(image_size=32, patch_size=4, num_channels=3, embed_dim=16,
                                       depths=[2, 2], num_heads=[2, 4], window_size=4)
  dec = transformers.MBartConfig(vocab_size=99, d_model=48, decoder_layers=2, encoder_layers=2,
                                 decoder_attention_heads=4, decoder_ffn_dim=37,
                                 max_position_embeddings=64, scale_embedding=True, pad_token_id=0,
                                 bos_token_id=START, eos_token_id=EOS, decoder_start_token_id=START,
                                 forced_eos_token_id=None, is_decoder=True, add_cross_attention=True)
  cfg = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
  cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id = START, 0, EOS
  hf = transformers.VisionEncoderDecoderModel(config=cfg)
  randomize_(hf, seed=3)
  hf.tie_weights()
  with torch.no_grad():
    hf.decoder.model.decoder.embed_tokens.weight[EOS] *= 3.0
  return _save_and_load(hf.eval(), f"vision-{encoder}")


def text_inputs(batch: int = 3, seed: int = 0):
  rng = np.random.RandomState(seed)
  ids = rng.randint(4, 99, (batch, 9))
  mask = np.ones_like(ids)
  ids[1, 6:], mask[1, 6:] = 0, 0  # one right-padded row (pad 0 / 1 both fine: masked)
  return {"input_ids": ids, "attention_mask": mask}


def pixels(batch: int = 2, seed: int = 0):
  return {"pixel_values": np.random.RandomState(seed).randn(batch, 3, 32, 32).astype(np.float32)}


def prompt(batch: int, length: int, seed: int = 1, start: bool = False) -> np.ndarray:
  """[batch, length] prompt ids (no EOS / pad / start); start=True puts the start token first."""
  ids = np.random.RandomState(seed).randint(5, 99, (batch, length))
  if start:
    ids[:, 0] = START
  return ids


def hf_generate(hf, inputs: dict, **kw):
  tensors = {k: torch.tensor(v) for k, v in inputs.items() if v is not None}
  with torch.no_grad():
    return hf.generate(**tensors, output_scores=True, return_dict_in_generate=True, **kw)


def ours(model, params, inputs: dict, **kw):
  return edjax.generate(model, params, **inputs, **kw)


def hf_kw(kw: dict) -> dict:
  """Our keywords as HF's (decoder_input_ids as a tensor; output_scores is always on there)."""
  out = {k: v for k, v in kw.items() if k != "output_scores"}
  if out.get("decoder_input_ids") is not None:
    out["decoder_input_ids"] = torch.tensor(out["decoder_input_ids"])
  return out


def check_against_hf(hf, model, params, inputs, **kw):
  """Identical sequences (and beam scores to 1e-5); returns (hf output, our output)."""
  ref = hf_generate(hf, inputs, **hf_kw(kw))
  out = ours(model, params, inputs, **kw)
  theirs = to_np(ref.sequences)
  assert_same_sequences(np.asarray(out.sequences), theirs, EOS, model.config.pad_token_id)
  if kw.get("num_beams", 1) > 1:
    np.testing.assert_allclose(np.asarray(out.scores), to_np(ref.sequences_scores), atol=1e-5, rtol=0)
  return ref, out


# ----------------------------------------------------------------------------- decoder prompt

PROMPT_SETTINGS = {
    "greedy": dict(max_length=12),
    "greedy-new-tokens": dict(max_new_tokens=7),
    "beam-lp": dict(max_length=12, num_beams=3, length_penalty=2.0, num_return_sequences=2),
    "beam-early": dict(max_new_tokens=8, num_beams=3, early_stopping=True),
    "beam-never": dict(max_length=13, num_beams=3, early_stopping="never", length_penalty=0.7),
    "beam-minlen-ngram": dict(max_length=12, num_beams=2, min_length=8, no_repeat_ngram_size=2,
                              repetition_penalty=1.2),  # both read the prompt too, as HF
}


@pytest.mark.parametrize("setting", list(PROMPT_SETTINGS))
@pytest.mark.parametrize("name,length,start", [("bert2bart", 1, False), ("roberta2mbart", 3, True),
                                               ("bert2gpt2", 3, False)])
def test_prompt_matches_transformers(name, length, start, setting):
  """P = 1 and 3 given tokens (HF prepends the start token when no row begins with it)."""
  hf, model, params = text_pair(name)
  inputs = text_inputs()
  dec = prompt(3, length, start=start)
  _, out = check_against_hf(hf, model, params, inputs, decoder_input_ids=dec,
                            **PROMPT_SETTINGS[setting])
  seqs = np.asarray(out.sequences)
  full = dec if start else np.concatenate([np.full((3, 1), START), dec], axis=1)
  np.testing.assert_array_equal(seqs[:, :full.shape[1]], np.repeat(full, seqs.shape[0] // 3, 0))


@pytest.mark.parametrize("encoder,kw", [
    ("vit", dict(max_length=10)),
    ("vit", dict(max_length=10, num_beams=3, length_penalty=1.5)),
    ("donut", dict(max_new_tokens=6)),
    ("donut", dict(max_new_tokens=6, num_beams=2, early_stopping=True)),
])
def test_vision_prompt_matches_transformers(encoder, kw):
  """ViT -> MBart with a 3-token prompt; DonutSwin -> MBart with one task token (no start)."""
  hf, model, params = vision_pair(encoder)
  dec = prompt(2, 3 if encoder == "vit" else 1, seed=4)
  _, out = check_against_hf(hf, model, params, pixels(), decoder_input_ids=dec, **kw)
  if encoder == "donut":  # Donut: the task token itself opens the output
    np.testing.assert_array_equal(np.asarray(out.sequences)[:, 0], dec[:, 0])


def test_prompt_sampling_keeps_prefix_and_is_deterministic():
  hf, model, params = text_pair("bert2bart")
  inputs, dec = text_inputs(), prompt(3, 3, start=True)
  kw = dict(do_sample=True, top_k=5, max_new_tokens=6, num_return_sequences=2,
            decoder_input_ids=dec)
  a = np.asarray(ours(model, params, inputs, prng_key=5, **kw).sequences)
  b = np.asarray(ours(model, params, inputs, prng_key=5, **kw).sequences)
  c = np.asarray(ours(model, params, inputs, prng_key=6, **kw).sequences)
  assert a.shape == (6, 6 + 4)  # max_new_tokens + prompt bucket (3 -> 4)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  np.testing.assert_array_equal(a[:, :3], np.repeat(dec, 2, 0))
  assert (a[:, 9] == model.config.pad_token_id).all()  # HF's max_length = 6 + 3 columns
  ref = hf_generate(hf, inputs, **hf_kw(kw))
  assert to_np(ref.sequences).shape[1] <= 9
  scored = ours(model, params, inputs, prng_key=5, output_scores=True, **kw)
  np.testing.assert_array_equal(np.asarray(scored.sequences), a)  # same draws
  steps = np.asarray(scored.step_scores)  # [6, 9, vocab]: top_k=5 leaves 5 finite per step,
  assert steps.shape == (6, 9, 99) and (np.isfinite(steps[:, :5]).sum(-1) == 5).all()
  assert (np.isfinite(steps[:, 5]).sum(-1) == 1).all()  # BART's forced EOS (id 2) at the last
  chosen = np.take_along_axis(steps[:, :6], a[:, 3:9, None], -1)[..., 0]
  np.testing.assert_array_equal(np.asarray(scored.transition_scores)[:, :6], chosen)


def test_prompt_length_bucket_compiles_once():
  hf, model, params = text_pair("bert2bart")
  inputs = text_inputs()
  kw = dict(max_new_tokens=5, num_beams=2)
  ours(model, params, inputs, decoder_input_ids=prompt(3, 3, start=True), **kw)  # P = 3: bucket 4
  before = G.jit_generate.trace_count
  out = ours(model, params, inputs, decoder_input_ids=prompt(3, 4, seed=2, start=True), **kw)
  assert G.jit_generate.trace_count == before  # P = 4: same bucket, same settings
  ref = hf_generate(hf, inputs, **hf_kw(dict(kw, decoder_input_ids=prompt(3, 4, seed=2, start=True))))
  assert_same_sequences(np.asarray(out.sequences), to_np(ref.sequences), EOS, 0)
  ours(model, params, inputs, decoder_input_ids=prompt(3, 5, start=True), **kw)  # bucket 8
  assert G.jit_generate.trace_count == before + 1
  # A prompt that is the start token alone is the prompt-free search (same compile, same output).
  plain = ours(model, params, inputs, **kw)
  start_only = ours(model, params, inputs, decoder_input_ids=np.full((3, 1), START), **kw)
  np.testing.assert_array_equal(np.asarray(plain.sequences), np.asarray(start_only.sequences))


# ----------------------------------------------------------------------------- processors


def _generated(model, params, inputs, **kw) -> np.ndarray:
  return np.asarray(ours(model, params, inputs, **kw).sequences)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_bad_words_single_and_multi_token(num_beams):
  hf, model, params = text_pair("bert2bart")
  inputs = text_inputs()
  kw = dict(max_length=12, num_beams=num_beams)
  free = _generated(model, params, inputs, **kw)
  single = int(np.bincount(free[:, 1:].ravel(), minlength=99)[4:].argmax() + 4)  # a common token
  multi = [int(free[0, 2]), int(free[0, 3])]  # bans free[0, 3] right after free[0, 2]
  bad = [[single], multi, [EOS]]  # [eos] alone is ignored, as HF
  _, out = check_against_hf(hf, model, params, inputs, bad_words_ids=bad, **kw)
  seqs = np.asarray(out.sequences)
  assert not (seqs[:, 1:] == single).any()
  assert not np.array_equal(seqs, free)
  pairs = np.stack([seqs[:, 1:-1], seqs[:, 2:]], -1).reshape(-1, 2)
  assert not any(tuple(p) == tuple(multi) for p in pairs)
  # multi-token only, with a prompt ending in the word's prefix: the ban starts at once
  dec = np.full((3, 2), multi[0])
  check_against_hf(hf, model, params, inputs, bad_words_ids=[multi], decoder_input_ids=dec, **kw)


@pytest.mark.parametrize("kw", [
    dict(max_length=10),
    dict(max_length=10, num_beams=3),
    dict(max_length=10, forced_bos_token_id=7),  # begin index 2 after the forced BOS
    dict(max_length=10, num_beams=2, decoder_input_ids=prompt(3, 2, seed=7)),  # begin index 3
])
def test_suppress_tokens_and_begin_suppress_tokens(kw):
  hf, model, params = text_pair("roberta2mbart")
  inputs = text_inputs()
  free = _generated(model, params, inputs, **kw)
  first = 1 + (kw.get("forced_bos_token_id") is not None)
  if kw.get("decoder_input_ids") is not None:
    first = 3
  begin = sorted({int(t) for t in free[:, first]} - {EOS})
  suppress = [int(free[0, first + 1])] if free[0, first + 1] != EOS else [50]
  _, out = check_against_hf(hf, model, params, inputs, suppress_tokens=suppress,
                            begin_suppress_tokens=begin, **kw)
  seqs = np.asarray(out.sequences)
  assert not np.isin(seqs[:, first], begin).any()
  assert not (seqs[:, 1:] == suppress[0]).any()


def test_new_settings_default_from_generation_config():
  hf, model, params = text_pair("bert2bart")
  inputs = text_inputs()
  free = _generated(model, params, inputs, max_length=9)
  banned = int(np.bincount(free[:, 1:].ravel(), minlength=99)[4:].argmax() + 4)
  model.generation_defaults = dict(model.generation_defaults, bad_words_ids=[[banned]],
                                   output_scores=True)
  try:
    out = ours(model, params, inputs, max_length=9)
  finally:
    model.generation_defaults = {k: v for k, v in model.generation_defaults.items()
                                 if k not in ("bad_words_ids", "output_scores")}
  assert out.transition_scores is not None
  assert not (np.asarray(out.sequences)[:, 1:] == banned).any()
  ref = hf_generate(hf, inputs, max_length=9, bad_words_ids=[[banned]])
  assert_same_sequences(np.asarray(out.sequences), to_np(ref.sequences), EOS, 0)


@pytest.mark.parametrize("kw,fragment", [
    (dict(bad_words_ids=[5, 6]), "list of non-empty token-id lists"),
    (dict(bad_words_ids=[]), "non-empty list"),
    (dict(bad_words_ids=[[500]]), "bad_words_ids holds ids"),
    (dict(suppress_tokens=[-1]), "suppress_tokens holds ids"),
    (dict(begin_suppress_tokens=[99]), "begin_suppress_tokens holds ids"),
    (dict(decoder_input_ids=np.full((3, 12), 7), max_length=12), "nothing is left to generate"),
    (dict(decoder_input_ids=np.full((2, 3), 7)), "one prompt row per input"),
    (dict(decoder_input_ids=np.full((3,), 7)), "decoder_input_ids must be"),
    (dict(decoder_input_ids=np.full((3, 2), 200)), "decoder_input_ids hold ids"),
])
def test_bad_controls_raise_clear_errors(kw, fragment):
  _, model, params = text_pair("bert2bart")
  with pytest.raises(ValueError, match=fragment):
    ours(model, params, text_inputs(), **kw)


# ----------------------------------------------------------------------------- output_scores


def _hf_transition(hf, ref, beam: bool, normalize: bool = False) -> np.ndarray:
  return to_np(hf.compute_transition_scores(ref.sequences, ref.scores,
                                            ref.beam_indices if beam else None,
                                            normalize_logits=normalize))


def _close(a, b, atol=1e-5):
  """Equal to atol, -inf where the other is -inf."""
  a, b = np.asarray(a), np.asarray(b)
  assert a.shape == b.shape, (a.shape, b.shape)
  np.testing.assert_array_equal(np.isneginf(a), np.isneginf(b))
  finite = np.isfinite(b)
  np.testing.assert_allclose(a[finite], b[finite], atol=atol, rtol=0)


@pytest.mark.parametrize("kw", [
    dict(max_length=11),
    dict(max_length=11, do_sample=False, repetition_penalty=1.5, bad_words_ids=[[9]]),
    dict(max_new_tokens=6, decoder_input_ids=prompt(3, 3, start=True), suppress_tokens=[11]),
])
def test_greedy_output_scores_match_transformers(kw):
  hf, model, params = text_pair("bert2bart")
  inputs = text_inputs()
  ref, out = check_against_hf(hf, model, params, inputs, output_scores=True, **kw)
  steps = len(ref.scores)
  plen = ref.sequences.shape[1] - steps
  trans = np.asarray(out.transition_scores)
  assert trans.shape == (3, out.sequences.shape[1] - 1)
  _close(trans[:, :steps], _hf_transition(hf, ref, beam=False))
  assert (trans[:, steps:] == 0).all()
  step_scores = np.asarray(out.step_scores)
  _close(step_scores[:, :steps], np.stack([to_np(s) for s in ref.scores], axis=1))
  assert (step_scores[:, steps:] == 0).all()
  # scores: summed normalised log-probs of the tokens up to and including EOS
  norm = _hf_transition(hf, ref, beam=False, normalize=True)
  gen = to_np(ref.sequences)[:, plen:]
  upto = np.cumsum(np.cumsum(gen == EOS, axis=1), axis=1) <= 1  # through the first EOS
  np.testing.assert_allclose(np.asarray(out.scores), np.where(upto, norm, 0).sum(1), atol=1e-5)
  plain = ours(model, params, inputs, **kw)  # output_scores does not change the sequences
  np.testing.assert_array_equal(np.asarray(plain.sequences), np.asarray(out.sequences))
  assert plain.scores is None and plain.transition_scores is None


@pytest.mark.parametrize("name,kw", [
    ("bert2bart", dict(max_length=11, num_beams=3, length_penalty=1.5, num_return_sequences=2)),
    ("roberta2mbart", dict(max_length=10, num_beams=2, early_stopping=True, no_repeat_ngram_size=2)),
    ("bert2gpt2", dict(max_new_tokens=6, num_beams=3, decoder_input_ids=prompt(3, 3, start=True))),
])
def test_beam_output_scores_match_transformers(name, kw):
  hf, model, params = text_pair(name)
  inputs = text_inputs()
  ref, out = check_against_hf(hf, model, params, inputs, output_scores=True, **kw)
  steps, gen = len(ref.scores), to_np(ref.beam_indices).shape[1]
  trans, idx = np.asarray(out.transition_scores), np.asarray(out.beam_indices)
  _close(trans[:, :gen], _hf_transition(hf, ref, beam=True))
  assert (trans[:, gen:] == 0).all() and (idx[:, gen:] == -1).all()
  np.testing.assert_array_equal(idx[:, :gen], to_np(ref.beam_indices))
  step_scores = np.asarray(out.step_scores)
  assert step_scores.shape[0] == 3 * kw["num_beams"]
  _close(step_scores[:, :steps], np.stack([to_np(s) for s in ref.scores], axis=1))
  plain = ours(model, params, inputs, **kw)  # output_scores does not change the search
  np.testing.assert_array_equal(np.asarray(plain.sequences), np.asarray(out.sequences))
  np.testing.assert_array_equal(np.asarray(plain.scores), np.asarray(out.scores))
