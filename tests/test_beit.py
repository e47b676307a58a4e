"""BEiT encoder: parity with transformers' BeitModel, conversion, and BEiT -> RoBERTa generation.

Tiny random BeitModels (every parameter seeded noise: relative position tables, layer scales and
LayerNorms included) in the configurations HF offers: per-layer and shared relative position
bias, absolute positions, mean pooling on (final LayerNorm = identity) and off, a mask token.
"""

from __future__ import annotations

import functools
import tempfile

import flax.linen as nn
import flax.traverse_util as traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

import edjax
from edjax import convert
from edjax.models import beit, registry
from edjax.testing.hf_utils import assert_same_sequences, to_np

TOL = 1e-4
TINY = dict(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=37, drop_path_rate=0.0)
VARIANTS = {
    "per_layer_bias": dict(use_relative_position_bias=True),
    "shared_bias": dict(use_shared_relative_position_bias=True),
    "absolute_no_mean_pool": dict(use_absolute_position_embeddings=True, use_mean_pooling=False,
                                  use_mask_token=True),
    "no_layer_scale": dict(use_relative_position_bias=True, layer_scale_init_value=0.0),
}


def _randomize(model: torch.nn.Module, seed: int, std: float = 0.2) -> None:
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen) * std
      is_norm = ("norm" in name.lower() or ".ln_" in name) and name.endswith(".weight")
      p.copy_(1.0 + noise if is_norm else noise)


@functools.lru_cache(maxsize=None)
def case(variant: str):
  torch.manual_seed(0)
  hf = transformers.BeitModel(transformers.BeitConfig(**TINY, **VARIANTS[variant])).eval()
  _randomize(hf, seed=len(variant))
  state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
  cfg = edjax.model_configs.config_from_dict(hf.config.to_dict())
  assert type(cfg) is beit.BeitConfig
  module = registry.encoder_module(cfg, jnp.float32)
  pix = jnp.zeros((1, 3, 32, 32), jnp.float32)
  shapes = nn.meta.unbox(jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), pix))["params"])
  expected = {"/".join(k): tuple(v.shape) for k, v in traverse_util.flatten_dict(shapes).items()}
  rules = registry.encoder_rules(cfg, "", "")
  flat, report = convert.hf_to_flax(state, rules, expected,
                                    ignored=registry.get("beit").ignored_hf_keys)
  assert not report.missing and not report.unexpected and not report.mismatched, report.summary()
  assert set(flat) == set(expected), set(flat) ^ set(expected)
  params = traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})
  return hf, state, module, params, flat, rules


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_parity_with_transformers(variant):
  hf, _, module, params, _, _ = case(variant)
  pixels = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
  with torch.no_grad():
    ref = hf(pixel_values=torch.from_numpy(pixels), output_hidden_states=True)
  out = module.apply({"params": params}, jnp.asarray(pixels), output_hidden_states=True)
  np.testing.assert_allclose(np.asarray(out.last_hidden_state), to_np(ref.last_hidden_state),
                             atol=TOL, rtol=0)
  np.testing.assert_allclose(np.asarray(out.pooler_output), to_np(ref.pooler_output), atol=TOL,
                             rtol=0)
  assert len(out.hidden_states) == len(ref.hidden_states) == 3
  for a, b in zip(out.hidden_states, ref.hidden_states):
    np.testing.assert_allclose(np.asarray(a), to_np(b), atol=TOL, rtol=0)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_round_trip(variant):
  _, state, _, _, flat, rules = case(variant)
  back = convert.flax_to_hf(flat, rules)
  want = {k for k in state if not convert.is_ignored(k, registry.get("beit").ignored_hf_keys)}
  assert set(back) == want
  for k in want:
    np.testing.assert_array_equal(back[k], state[k], err_msg=k)


def test_key_projection_has_no_bias():
  _, _, _, params, _, _ = case("per_layer_bias")
  attn = params["layers_0"]["self_attn"]
  assert set(attn["key"]) == {"kernel"} and set(attn["query"]) == {"kernel", "bias"}


def test_relative_position_index_matches_transformers():
  hf_bias = transformers.models.beit.modeling_beit.BeitRelativePositionBias(
      transformers.BeitConfig(**TINY), window_size=(4, 3))
  ref = hf_bias.generate_relative_position_index((4, 3)).numpy()
  np.testing.assert_array_equal(beit.relative_position_index((4, 3)), ref)


EOS, PAD, START = 3, 1, 0


@functools.lru_cache(maxsize=None)
def composite():
  """A tiny BEiT -> RoBERTa VisionEncoderDecoderModel (transformers) and its edjax load."""
  torch.manual_seed(0)
  dec = transformers.RobertaConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=37,
                                   max_position_embeddings=66, is_decoder=True,
                                   add_cross_attention=True)
  cfg = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(
      transformers.BeitConfig(**TINY, use_relative_position_bias=True), dec)
  cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id = START, PAD, EOS
  hf = transformers.VisionEncoderDecoderModel(config=cfg)
  _randomize(hf, seed=7)
  with torch.no_grad():
    hf.decoder.lm_head.bias[EOS] += 2.0  # beams finish at different steps
  hf.eval()
  directory = tempfile.mkdtemp(prefix="edjax-beit2roberta-")
  hf.save_pretrained(directory)
  model, params = edjax.from_pretrained(directory)
  return hf, model, params, directory


def test_beit_to_roberta_logits():
  hf, model, params, _ = composite()
  assert isinstance(model, edjax.VisionEncoderDecoderModel)
  pixels = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
  dec_in = np.array([[START, 5, 6, 7], [START, 8, 9, 10]])
  with torch.no_grad():
    ref = hf(pixel_values=torch.from_numpy(pixels), decoder_input_ids=torch.tensor(dec_in))
  out = model.apply({"params": params}, pixel_values=pixels, decoder_input_ids=dec_in)
  np.testing.assert_allclose(np.asarray(out.logits), to_np(ref.logits), atol=TOL, rtol=0)


@pytest.mark.parametrize("kw", [dict(max_length=9),
                                dict(max_length=9, num_beams=3, length_penalty=1.5,
                                     early_stopping=True),
                                dict(max_length=10, num_beams=3, no_repeat_ngram_size=2,
                                     min_length=5, num_return_sequences=2),
                                dict(max_length=9, repetition_penalty=1.4)],
                         ids=["greedy", "beam-lp-early", "beam-ngram-min-nrs", "repetition"])
def test_beit_to_roberta_generate_matches_transformers(kw):
  hf, model, params, _ = composite()
  pixels = np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32)
  with torch.no_grad():
    ref = hf.generate(pixel_values=torch.from_numpy(pixels), return_dict_in_generate=True,
                      output_scores=True, **kw)
  out = edjax.generate(model, params, pixel_values=pixels, **kw)
  assert_same_sequences(np.asarray(out.sequences), to_np(ref.sequences), EOS, PAD)
  if kw.get("num_beams", 1) > 1:
    np.testing.assert_allclose(np.asarray(out.scores), to_np(ref.sequences_scores), atol=1e-5,
                               rtol=0)


def test_warm_start_from_beit_dir_and_export(tmp_path):
  hf, model, params, directory = composite()
  hf.encoder.save_pretrained(tmp_path / "beit")
  hf.decoder.save_pretrained(tmp_path / "roberta")
  warm, warm_params = edjax.from_encoder_decoder_pretrained(
      str(tmp_path / "beit"), str(tmp_path / "roberta"), decoder_start_token_id=START,
      pad_token_id=PAD, eos_token_id=EOS)
  jax.tree_util.tree_map(np.testing.assert_array_equal, warm_params["encoder"],
                         params["encoder"])
  edjax.save_pretrained(model, params, str(tmp_path / "export"))
  back, info = transformers.VisionEncoderDecoderModel.from_pretrained(
      str(tmp_path / "export"), output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  pixels = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)
  dec_in = torch.tensor([[START, 5, 6]])
  with torch.no_grad():
    a = back.eval()(pixel_values=torch.from_numpy(pixels), decoder_input_ids=dec_in).logits
    b = hf(pixel_values=torch.from_numpy(pixels), decoder_input_ids=dec_in).logits
  np.testing.assert_array_equal(to_np(a), to_np(b))


@pytest.mark.parametrize("variant", ["per_layer_bias", "shared_bias", "absolute_no_mean_pool"])
def test_other_image_size_equals_transformers(variant):
  """A 32x32 checkpoint at 48x48: relative tables resized (bilinear) and absolute positions
  interpolated (bicubic) on load == HF's BeitModel run at 48x48 (interpolate_pos_encoding)."""
  hf, state, _, _, _, _ = case(variant)
  cfg = beit.BeitConfig(**{**TINY, **VARIANTS[variant], "image_size": 48})
  module = registry.encoder_module(cfg, jnp.float32)
  pix = jnp.zeros((1, 3, 48, 48), jnp.float32)
  shapes = nn.meta.unbox(jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), pix))["params"])
  expected = {"/".join(k): tuple(v.shape) for k, v in traverse_util.flatten_dict(shapes).items()}
  flat, report = convert.hf_to_flax(state, registry.encoder_rules(cfg, "", ""), expected,
                                    ignored=registry.get("beit").ignored_hf_keys)
  assert not report.missing and not report.unexpected and not report.mismatched, report.summary()
  params = traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})
  pixels = np.random.default_rng(4).standard_normal((2, 3, 48, 48)).astype(np.float32)
  with torch.no_grad():
    ref = hf(pixel_values=torch.from_numpy(pixels), interpolate_pos_encoding=True)
  out = module.apply({"params": params}, jnp.asarray(pixels))
  np.testing.assert_allclose(np.asarray(out.last_hidden_state), to_np(ref.last_hidden_state),
                             atol=TOL, rtol=0)
