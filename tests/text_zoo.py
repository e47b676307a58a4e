"""Shared parity checks of the text-zoo families (BertGeneration, XLM-RoBERTa / CamemBERT,
ELECTRA) against transformers 4.57.6 PyTorch; each family's test file names its cases.

Every model is tiny and random (every weight seeded noise, `randomize_`). The checks:
  check_logits       logits (and decoder hidden states, loss) on padded batches <= 1e-4
  check_generate     greedy / beam / n-gram / repetition-penalty sequences identical to HF's
  check_warm_start   single-model dirs: the same tensors and logits as transformers'
                     EncoderDecoderModel.from_encoder_decoder_pretrained
  check_export       edjax.save_pretrained loads in transformers with no missing / unexpected
                     keys and the same logits
Each returns the max |diff| it saw, so the test files can report the parity figures.
"""

from __future__ import annotations

import functools
import os
import tempfile

import flax.traverse_util as traverse_util
import numpy as np
import torch
import transformers

import edjax
from edjax import convert
from edjax.testing.hf_utils import assert_same_sequences, randomize_, tiny_hf_config, to_np

LOGITS_TOL = 1e-4
LOSS_TOL = 1e-5
EOS, START = 3, 2
HEADS = ("lm_head.", "generator_predictions.", "generator_lm_head.")  # causal-LM heads

GEN_SETTINGS = {
    "greedy": dict(max_length=10),
    "beam-lp-early": dict(max_length=10, num_beams=3, length_penalty=2.0, early_stopping=True),
    "beam-ngram-min-nrs": dict(max_length=12, num_beams=4, no_repeat_ngram_size=2, min_length=6,
                               num_return_sequences=2),
    "repetition": dict(max_length=10, repetition_penalty=1.3),
}


def _vocab(model_type: str) -> int:
  return 101 if model_type == "gpt2" else 99


def hf_model(enc: str, dec: str, enc_hidden: int, dec_hidden: int, seed: int, **dec_overrides):
  """A random transformers.EncoderDecoderModel (eval, fp32); the composite's pad is the
  decoder's own, and EOS likely enough that beams finish at different steps."""
  torch.manual_seed(seed)
  dec_cfg = tiny_hf_config(dec, dec_hidden, vocab=_vocab(dec), decoder=True, **dec_overrides)
  cfg = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(
      tiny_hf_config(enc, enc_hidden), dec_cfg)
  cfg.decoder_start_token_id, cfg.eos_token_id = START, EOS
  cfg.pad_token_id = dec_cfg.pad_token_id if dec_cfg.pad_token_id is not None else 0
  model = transformers.EncoderDecoderModel(config=cfg)
  randomize_(model, seed)
  model.tie_weights()
  with torch.no_grad():
    model.decoder.get_input_embeddings().weight[EOS] *= 3.0
  return model.eval()


@functools.lru_cache(maxsize=None)
def built(enc: str, dec: str, enc_hidden: int, dec_hidden: int, seed: int = 0,
          dec_overrides: tuple = ()):
  """(hf, edjax model, params, dir): the HF model saved with save_pretrained, loaded by edjax
  (dec_overrides: ((key, value), ...) set on the decoder's HF config)."""
  hf = hf_model(enc, dec, enc_hidden, dec_hidden, seed, **dict(dec_overrides))
  directory = tempfile.mkdtemp(prefix=f"edjax-{enc}2{dec}-")
  hf.save_pretrained(directory)
  model, params = edjax.from_pretrained(directory)
  return hf, model, params, directory


def inputs(model, seed: int = 0, batch: int = 3):
  """A padded batch: encoder ids / mask, labels, decoder inputs (start token first), decoder mask."""
  enc, pad = model.config.encoder, model.config.pad_token_id
  rng = np.random.default_rng(seed)
  ids = rng.integers(4, enc.vocab_size, (batch, 9))
  mask = np.ones_like(ids)
  ids[1, 6:], mask[1, 6:] = enc.pad_token_id, 0
  ids[2, 3:], mask[2, 3:] = enc.pad_token_id, 0
  labels = rng.integers(4, model.config.decoder.vocab_size, (batch, 7))
  dec_mask = (np.arange(7)[None] < np.array([7, 5, 2])[:, None]).astype(np.int64)
  labels = np.where(dec_mask > 0, labels, pad)
  dec_in = np.concatenate([np.full((batch, 1), START), labels[:, :-1]], axis=1)
  return ids, mask, labels, dec_in, dec_mask


def _max_diff(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def check_logits(hf, model, params) -> float:
  """Logits, decoder hidden states and loss on a padded batch equal transformers'."""
  ids, mask, labels, dec_in, dec_mask = inputs(model)
  ignored = np.where(dec_mask > 0, labels, -100)
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
             decoder_input_ids=torch.tensor(dec_in), decoder_attention_mask=torch.tensor(dec_mask),
             labels=torch.tensor(ignored), output_hidden_states=True)
  out = model.apply({"params": params}, input_ids=ids, attention_mask=mask,
                    decoder_input_ids=dec_in, decoder_attention_mask=dec_mask, labels=ignored,
                    output_hidden_states=True)
  real = dec_mask.astype(bool)
  ours, theirs = np.asarray(out.logits)[real], to_np(ref.logits)[real]
  np.testing.assert_allclose(ours, theirs, atol=LOGITS_TOL, rtol=0)
  assert len(out.encoder_hidden_states) == len(ref.encoder_hidden_states)
  enc_real = mask.astype(bool)
  for a, b in zip(out.encoder_hidden_states, ref.encoder_hidden_states):
    np.testing.assert_allclose(np.asarray(a)[enc_real], to_np(b)[enc_real], atol=LOGITS_TOL, rtol=0)
  assert len(out.decoder_hidden_states) == len(ref.decoder_hidden_states)
  for a, b in zip(out.decoder_hidden_states, ref.decoder_hidden_states):
    np.testing.assert_allclose(np.asarray(a)[real], to_np(b)[real], atol=LOGITS_TOL, rtol=0)
  np.testing.assert_allclose(float(out.loss), float(ref.loss), atol=LOSS_TOL, rtol=0)
  return _max_diff(ours, theirs)


def check_generate(hf, model, params, setting: str) -> None:
  """edjax.generate returns HF's sequences (and, for beams, its sequence scores)."""
  ids, mask = inputs(model, seed=1)[:2]
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


def check_export(hf, model, params, directory: str) -> float:
  """edjax's export loads in transformers with no missing / unexpected keys, same logits."""
  edjax.save_pretrained(model, params, directory)
  back, info = transformers.EncoderDecoderModel.from_pretrained(directory, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  assert back.config.encoder.model_type == model.config.encoder.model_type
  assert back.config.decoder.model_type == model.config.decoder.model_type
  ids, mask, _, dec_in, _ = inputs(model, seed=2)
  with torch.no_grad():
    a = back.eval()(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                    decoder_input_ids=torch.tensor(dec_in)).logits
    b = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
           decoder_input_ids=torch.tensor(dec_in)).logits
  np.testing.assert_array_equal(to_np(a), to_np(b))
  model2, _ = edjax.from_pretrained(directory)
  assert model2.config == model.config
  return _max_diff(to_np(a), to_np(b))


# ----------------------------------------------------------------------------- warm start


def save_single(cls_name: str, model_type: str, hidden: int, lm: bool, seed: int,
                root: str) -> str:
  """A random single-model checkpoint (e.g. ElectraModel, XLMRobertaForCausalLM) in root/cls."""
  torch.manual_seed(seed)
  cfg = tiny_hf_config(model_type, hidden, vocab=_vocab(model_type),
                       **(dict(is_decoder=True) if lm and model_type != "gpt2" else {}))
  model = getattr(transformers, cls_name)(cfg)
  randomize_(model, seed)
  model.tie_weights()
  directory = os.path.join(root, cls_name)
  model.eval().save_pretrained(directory)
  return directory


def _flat(model, params) -> dict[str, np.ndarray]:
  full = model.untie_params(params)
  return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(full, sep="/").items()}


def check_warm_start(enc_dir: str, dec_dir: str) -> float:
  """edjax.from_encoder_decoder_pretrained equals transformers' on the same dirs: every loaded
  tensor identical, the same tensors fresh; with our fresh tensors copied into HF's model, the
  same logits. Returns the logits' max |diff|."""
  dec_cfg = edjax.model_configs.load_config_file(dec_dir)
  pad = dec_cfg.pad_token_id if dec_cfg.pad_token_id is not None else 0
  model, params, info = edjax.from_encoder_decoder_pretrained(
      enc_dir, dec_dir, rng=0, output_loading_info=True, decoder_start_token_id=START,
      pad_token_id=pad, eos_token_id=EOS)
  # Unused (a warning, as in transformers): an LM checkpoint's head behind the encoder, a base
  # model's pooler in the decoder.
  assert all(k.startswith(HEADS) for k in info["encoder"].unexpected), info["encoder"].summary()
  assert all(".pooler." in k for k in info["decoder"].unexpected), info["decoder"].summary()
  torch.manual_seed(0)
  hf = transformers.EncoderDecoderModel.from_encoder_decoder_pretrained(enc_dir, dec_dir).eval()
  hf_state = {k: to_np(v) for k, v in hf.state_dict().items()}
  rules = convert.encoder_decoder_rules(model.config)
  ours = convert.flax_to_hf(_flat(model, params), rules)
  fresh_paths = set(info["encoder"].initialized) | set(info["decoder"].initialized)
  fresh = {r.hf for r in rules if all(p in fresh_paths for p in r.flax)}
  assert not {r.hf for r in rules if any(p in fresh_paths for p in r.flax)} - fresh
  assert fresh  # at least the cross-attention
  assert all("crossattention" in k or "ln_cross_attn" in k or "enc_to_dec_proj" in k or "lm_head" in k
             or "generator_" in k or "pooler" in k for k in fresh), sorted(fresh)

  assert set(ours) <= set(hf_state), sorted(set(ours) - set(hf_state))
  ignored = convert.ignored_hf_keys(model.config.encoder, model.config.decoder)
  extra = set(hf_state) - set(ours)
  assert all(convert.is_ignored(k, ignored) or k.endswith("decoder.bias") for k in extra), extra
  for k in sorted(set(ours) - fresh):
    np.testing.assert_array_equal(ours[k], hf_state[k], err_msg=k)
  for part in ("encoder", "decoder"):
    for key in ("is_decoder", "add_cross_attention"):
      assert getattr(getattr(model.config, part), key) == getattr(getattr(hf.config, part), key)

  result = hf.load_state_dict({k: torch.tensor(ours[k]) for k in fresh}, strict=False)
  assert not result.unexpected_keys
  ids, mask, _, dec_in, dec_mask = inputs(model)
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
             decoder_input_ids=torch.tensor(dec_in), decoder_attention_mask=torch.tensor(dec_mask))
  out = model.apply({"params": params}, input_ids=ids, attention_mask=mask,
                    decoder_input_ids=dec_in, decoder_attention_mask=dec_mask)
  real = dec_mask.astype(bool)
  ours_logits, theirs = np.asarray(out.logits)[real], to_np(ref.logits)[real]
  np.testing.assert_allclose(ours_logits, theirs, atol=LOGITS_TOL, rtol=0)
  return _max_diff(ours_logits, theirs)


def check_config_defaults(ours: type, theirs: type) -> None:
  """Every field of our config class defaults to what transformers' config class sets, and a
  default config round-trips through transformers' from_dict."""
  hf = theirs()
  for name in ours.field_names():
    assert getattr(ours(), name) == getattr(hf, name), (ours.__name__, name)
  assert theirs.model_type == ours.model_type
  back = theirs.from_dict(ours().to_dict())
  for name in ours.field_names():
    assert getattr(back, name) == getattr(ours(), name), name


class SingleCheckpoints:
  """Lazily saved single-model dirs, {class name: (model_type, hidden, is an LM, seed)}."""

  def __init__(self, classes: dict, root: str):
    self.classes, self.root, self.dirs = classes, root, {}

  def __getitem__(self, name: str) -> str:
    if name not in self.dirs:
      cls_name = name.split("-")[0]
      model_type, hidden, lm, seed = self.classes[name]
      root = os.path.join(self.root, name)
      self.dirs[name] = save_single(cls_name, model_type, hidden, lm, seed, root)
    return self.dirs[name]
