"""Swin / Donut-Swin encoders: parity with transformers' SwinModel / DonutSwinModel, lossless
conversion, and Swin -> BERT VisionEncoderDecoderModel parity (logits, loss, greedy and beam
generation, warm start).

Tiny random torch models (every parameter seeded noise, LayerNorm scales around 1, the relative
position bias tables noise too) are loaded through the registered `encoder_rules`. Each case
builds its own torch model: HF's SwinLayer rewrites its window / shift size in place on the
first forward of a small image (`set_shift_and_window_size`), so one torch model must not see
two resolutions.
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
from edjax import model_configs as configs
from edjax.models import registry, swin
from edjax.testing.hf_utils import assert_same_sequences, to_np

TOL = 1e-4
TINY = dict(image_size=32, patch_size=4, num_channels=3, embed_dim=16, depths=[2, 2],
            num_heads=[2, 4], window_size=4, mlp_ratio=2.0, layer_norm_eps=1e-6)
HF_CLASSES = {"swin": (transformers.SwinConfig, transformers.SwinModel),
              "donut-swin": (transformers.DonutSwinConfig, transformers.DonutSwinModel)}

# name: (model_type, config overrides, pixel_values [height, width]); stage grids in comments.
CASES = {
    # 12x12 (shifted) -> 6x6 (padded to 8x8, shifted)
    "shifted": ("swin", {}, (48, 48)),
    # patch padding 38x34 -> 10x9, window padding to 12x12, odd merge -> 5x5 (pad 8x8, shifted)
    "odd-sizes": ("swin", {}, (38, 34)),
    # 8x8 (shifted) -> 4x4 == window: one window, no shift (HF's clamp)
    "clamp": ("swin", {}, (32, 32)),
    # 14x14 (window 7: 2x2 windows, shifted) -> 7x7 == window (clamp)
    "clamp-window7": ("swin", dict(window_size=7), (56, 56)),
    # non-square 8x16 -> 4x8 (clamped: min side == window, two windows side by side, no shift)
    "non-square": ("swin", {}, (32, 64)),
    "three-stages": ("swin", dict(depths=[2, 1, 2], num_heads=[2, 2, 4], window_size=2,
                                  hidden_act="gelu_new"), (36, 44)),
    "absolute-embeddings": ("swin", dict(use_absolute_embeddings=True), (32, 32)),
    "donut": ("donut-swin", {}, (32, 64)),
    "donut-no-qkv-bias": ("donut-swin", dict(qkv_bias=False), (48, 40)),
}


def _randomize(model: torch.nn.Module, seed: int, std: float = 0.2) -> None:
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen) * std
      is_norm_scale = "norm" in name.lower() and name.endswith(".weight")
      p.copy_(1.0 + noise if is_norm_scale else noise)


def _hf_config(model_type: str, **overrides):
  return HF_CLASSES[model_type][0](**{**TINY, **overrides})


def _expected_shapes(module, config) -> dict:
  pix = swin.dummy_inputs(config)["pixel_values"]
  shapes = nn.meta.unbox(jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), pix))["params"])
  return {"/".join(k): tuple(v.shape) for k, v in traverse_util.flatten_dict(shapes).items()}


def _convert(hf_model, cfg):
  """HF state dict -> (edjax params, flat params, rules, state); asserts a clean load."""
  state = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
  module = registry.encoder_module(cfg, jnp.float32)
  rules = registry.encoder_rules(cfg, "", "")
  expected = _expected_shapes(module, cfg)
  flat, report = convert.hf_to_flax(state, rules, expected,
                                    ignored=registry.get(cfg.model_type).ignored_hf_keys)
  assert not report.missing and not report.unexpected and not report.mismatched, report.summary()
  assert set(flat) == set(expected), set(flat) ^ set(expected)
  params = traverse_util.unflatten_dict({tuple(k.split("/")): jnp.asarray(v)
                                         for k, v in flat.items()})
  return module, params, flat, rules, state


@functools.lru_cache(maxsize=None)
def built(name: str):
  model_type, overrides, _ = CASES[name]
  torch.manual_seed(0)
  hf_cfg = _hf_config(model_type, **overrides)
  hf = HF_CLASSES[model_type][1](hf_cfg).eval()
  _randomize(hf, seed=len(name))
  cfg = configs.config_from_dict(hf_cfg.to_dict())
  assert type(cfg) is registry.get(model_type).config_class
  module, params, flat, rules, state = _convert(hf, cfg)
  return dict(hf=hf, cfg=cfg, module=module, params=params, flat=flat, rules=rules, state=state)


def _pixels(hw, batch: int = 2, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).standard_normal((batch, 3, *hw)).astype(np.float32)


def _hf_forward(name: str, hf, pix):
  if CASES[name][1].get("use_absolute_embeddings"):
    # transformers 4.57.6 cannot run absolute embeddings (num_patches + 1 rows added to
    # num_patches tokens, huggingface/transformers#37161); edjax adds the patch rows 1.., so the
    # reference is HF's forward with exactly those rows.
    with pytest.raises(RuntimeError, match="must match the size"):
      hf(pixel_values=torch.from_numpy(pix))
    table = hf.embeddings.position_embeddings
    hf.embeddings.position_embeddings = torch.nn.Parameter(table.detach()[:, 1:].clone())
    try:
      return hf(pixel_values=torch.from_numpy(pix), output_hidden_states=True)
    finally:
      hf.embeddings.position_embeddings = table
  return hf(pixel_values=torch.from_numpy(pix), output_hidden_states=True)


@pytest.mark.parametrize("name", list(CASES))
def test_parity(name):
  case, hw = built(name), CASES[name][2]
  pix = _pixels(hw)
  with torch.no_grad():
    ref = _hf_forward(name, case["hf"], pix)
  out = case["module"].apply({"params": case["params"]}, jnp.asarray(pix),
                             output_hidden_states=True)
  cfg = case["cfg"]
  h, w = cfg.stage_resolutions(*hw)[-1]
  assert out.last_hidden_state.shape == (2, h * w, cfg.hidden_size)
  diffs = {"last_hidden_state": np.abs(np.asarray(out.last_hidden_state)
                                       - to_np(ref.last_hidden_state)).max(),
           "pooler_output": np.abs(np.asarray(out.pooler_output) - to_np(ref.pooler_output)).max()}
  assert len(out.hidden_states) == len(ref.hidden_states) == len(cfg.depths) + 1
  for i, (a, b) in enumerate(zip(out.hidden_states, ref.hidden_states)):
    diffs[f"hidden_states[{i}]"] = np.abs(np.asarray(a) - to_np(b)).max()
  print(name, {k: f"{v:.1e}" for k, v in diffs.items()})
  for k, v in diffs.items():
    assert v <= TOL, (name, k, v)


def test_attentions_match_transformers():
  """Per stage the last block's window attention probs [batch*windows, heads, q, k], as HF."""
  case = built("shifted")
  pix = _pixels(CASES["shifted"][2])
  with torch.no_grad():
    ref = case["hf"](pixel_values=torch.from_numpy(pix), output_attentions=True)
  out = case["module"].apply({"params": case["params"]}, jnp.asarray(pix), output_attentions=True)
  assert len(out.attentions) == len(ref.attentions) == 2
  for a, b in zip(out.attentions, ref.attentions):
    assert a.shape == b.shape
    np.testing.assert_allclose(np.asarray(a), to_np(b), atol=TOL, rtol=0)


@pytest.mark.parametrize("name", ["shifted", "absolute-embeddings", "donut-no-qkv-bias"])
def test_round_trip(name):
  """flax_to_hf + the derived index buffers give back HF's state dict, keys and values."""
  case = built(name)
  back = convert.flax_to_hf({k: np.asarray(v) for k, v in case["flat"].items()}, case["rules"])
  buffers = swin.hf_buffers(case["cfg"])
  assert not set(back) & set(buffers)
  back.update(buffers)
  assert set(back) == set(case["state"]), set(back) ^ set(case["state"])
  for k, v in case["state"].items():
    assert back[k].shape == v.shape and back[k].dtype == v.dtype, k
    np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_below_window_is_a_clear_error_as_transformers_cannot_run_it():
  torch.manual_seed(0)
  hf = transformers.SwinModel(_hf_config("swin", window_size=7)).eval()  # stage 2 is 4x4 < 7
  pix = _pixels((32, 32), batch=1)
  with torch.no_grad(), pytest.raises(RuntimeError):
    hf(pixel_values=torch.from_numpy(pix))
  cfg = configs.config_from_dict(hf.config.to_dict())
  module, params, *_ = _convert(hf, cfg)
  with pytest.raises(ValueError, match=r"stage 1 a 4x4 token grid, smaller than window_size=7"):
    module.apply({"params": params}, jnp.asarray(pix))


@pytest.mark.parametrize("shape,match", [
    ((2, 1, 32, 32), "channels"),
    ((2, 32, 32, 3), "channels-last"),
    ((3, 32, 32), "NCHW"),
])
def test_bad_pixel_values(shape, match):
  case = built("clamp")
  with pytest.raises(ValueError, match=match):
    case["module"].apply({"params": case["params"]}, jnp.zeros(shape, jnp.float32))


def test_absolute_embeddings_need_the_config_image_size():
  case = built("absolute-embeddings")
  with pytest.raises(ValueError, match="absolute position embeddings"):
    case["module"].apply({"params": case["params"]}, jnp.zeros((1, 3, 48, 48), jnp.float32))


def test_config_matches_transformers():
  for model_type, (hf_cfg_cls, _) in HF_CLASSES.items():
    ours, theirs = registry.get(model_type).config_class(), hf_cfg_cls().to_dict()
    for name in ours.field_names():
      value = getattr(ours, name)
      assert (list(value) if isinstance(value, tuple) else value) == theirs[name], (model_type, name)
    assert ours.hidden_size == theirs["hidden_size"] == 768
    assert ours.num_layers == theirs["num_layers"] == 4
    assert configs.config_from_dict(ours.to_dict()) == ours
    # A config.json written by transformers loads; ours has the same keys and derived values.
    hf_dict = hf_cfg_cls(**TINY).to_dict()
    cfg = configs.config_from_dict(hf_dict)
    written = cfg.to_dict()
    for key in ("hidden_size", "num_layers", "stage_names", "depths", "num_heads", "out_features"):
      assert written.get(key) == hf_dict.get(key), (model_type, key)
    assert not {"hidden_size", "num_layers"} & {k for k, _ in cfg.extra}
    bigger = cfg.replace(embed_dim=24)
    assert bigger.to_dict()["hidden_size"] == hf_cfg_cls(**{**TINY, "embed_dim": 24}).hidden_size
  assert registry.get("swin").base_model_prefix == transformers.SwinModel.base_model_prefix
  assert (registry.get("donut-swin").base_model_prefix
          == transformers.DonutSwinModel.base_model_prefix == "donut")


def test_drop_path_rates_and_training_mode():
  cfg = swin.SwinConfig(**{**TINY, "drop_path_rate": 0.3})
  hf = transformers.SwinModel(_hf_config("swin", drop_path_rate=0.3))
  theirs = [getattr(b.drop_path, "drop_prob", 0.0) for stage in hf.encoder.layers
            for b in stage.blocks]
  np.testing.assert_allclose(cfg.drop_path_rates(), theirs, rtol=0, atol=1e-7)
  module = registry.encoder_module(cfg, jnp.float32)
  pix = jnp.asarray(_pixels((32, 32)))
  params = module.init(jax.random.PRNGKey(0), pix)["params"]
  params = jax.tree_util.tree_map(lambda x: x + 0.1, params)  # make every branch non-zero

  def train(seed):
    return np.asarray(module.apply({"params": params}, pix, deterministic=False,
                                   rngs={"dropout": jax.random.PRNGKey(seed)}).last_hidden_state)
  evaluated = np.asarray(module.apply({"params": params}, pix).last_hidden_state)
  assert np.isfinite(train(0)).all()
  np.testing.assert_array_equal(train(0), train(0))
  assert np.abs(train(0) - evaluated).max() > 1e-3 and np.abs(train(0) - train(1)).max() > 1e-3


def test_param_logical_axes():
  case = built("clamp")
  pix = jnp.zeros((1, 3, 32, 32), jnp.float32)
  boxed = jax.eval_shape(lambda: case["module"].init(jax.random.PRNGKey(0), pix))["params"]
  assert boxed["embeddings"]["patch_embeddings"]["kernel"].names == (None, None, None, "embed")
  table = boxed["encoder"]["layers_1"]["blocks_0"]["relative_position_bias_table"]
  assert table.names == (None, "heads") and table.value.shape == (49, 4)


# ----------------------------------------------------------------------------- composite

EOS, PAD, START = 3, 0, 2
BATCH, TGT_LEN = 3, 7
DEC_LENGTHS = (TGT_LEN, TGT_LEN - 2, 2)
IMAGE_HW = (40, 56)  # 10x14 -> 5x7: padding, odd merge, shifted windows in both stages


def _bert_config(**overrides):
  cfg = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=4, intermediate_size=37,
                                max_position_embeddings=64, is_decoder=True,
                                add_cross_attention=True)
  for k, v in overrides.items():
    setattr(cfg, k, v)
  return cfg


@functools.lru_cache(maxsize=None)
def composite():
  """(hf VisionEncoderDecoderModel Swin -> BERT, edjax model, params, checkpoint dir)."""
  torch.manual_seed(0)
  cfg = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(
      _hf_config("swin", image_size=IMAGE_HW), _bert_config())
  cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id = START, PAD, EOS
  hf = transformers.VisionEncoderDecoderModel(config=cfg)
  assert isinstance(hf.encoder, transformers.SwinModel)
  assert isinstance(hf.decoder, transformers.BertLMHeadModel)
  _randomize(hf, seed=5)
  hf.tie_weights()
  with torch.no_grad():
    hf.decoder.cls.predictions.bias[EOS] += 6.0  # beams finish at different steps
  hf.eval()
  directory = tempfile.mkdtemp(prefix="edjax-swin2bert-")
  hf.save_pretrained(directory)
  model, params = edjax.from_pretrained(directory)
  return hf, model, params, directory


def _inputs(seed: int = 0):
  rng = np.random.RandomState(seed)
  pixels = rng.randn(BATCH, 3, *IMAGE_HW).astype(np.float32)
  labels = rng.randint(4, 99, (BATCH, TGT_LEN))
  dec_mask = (np.arange(TGT_LEN)[None] < np.array(DEC_LENGTHS)[:, None]).astype(np.int64)
  labels = np.where(dec_mask > 0, labels, PAD)
  dec_in = np.concatenate([np.full((BATCH, 1), START), labels[:, :-1]], axis=1)
  return pixels, labels, dec_in, dec_mask


def test_composite_logits_and_loss_match_transformers():
  hf, model, params, _ = composite()
  assert isinstance(model, edjax.VisionEncoderDecoderModel)
  assert not model.config.needs_enc_to_dec_proj
  pixels, labels, dec_in, dec_mask = _inputs()
  with torch.no_grad():
    ref = hf(pixel_values=torch.tensor(pixels), decoder_input_ids=torch.tensor(dec_in),
             decoder_attention_mask=torch.tensor(dec_mask))
  out = model.apply({"params": params}, pixel_values=pixels, decoder_input_ids=dec_in,
                    decoder_attention_mask=dec_mask, labels=np.where(dec_mask > 0, labels, -100))
  real = dec_mask.astype(bool)
  logits_diff = np.abs(np.asarray(out.logits)[real] - to_np(ref.logits)[real]).max()
  enc_diff = np.abs(np.asarray(out.encoder_last_hidden_state)
                    - to_np(ref.encoder_last_hidden_state)).max()
  print("swin2bert logits", f"{logits_diff:.1e}", "encoder", f"{enc_diff:.1e}")
  assert logits_diff <= TOL and enc_diff <= TOL
  # The reference loss by hand (transformers 4.57 shifts VisionEncoderDecoder labels twice).
  ce = torch.nn.functional.cross_entropy(ref.logits.reshape(-1, ref.logits.shape[-1]),
                                         torch.tensor(np.where(real, labels, -100)).reshape(-1))
  np.testing.assert_allclose(float(out.loss), float(ce), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kw", [dict(max_length=10),
                                dict(max_length=10, num_beams=3),
                                dict(max_length=10, num_beams=3, length_penalty=1.5,
                                     num_return_sequences=2)],
                         ids=["greedy", "beam", "beam-2-returned"])
def test_composite_generate_matches_transformers(kw):
  hf, model, params, _ = composite()
  pixels = _inputs(seed=1)[0]
  with torch.no_grad():
    ref = hf.generate(pixel_values=torch.tensor(pixels), output_scores=True,
                      return_dict_in_generate=True, **kw)
  out = edjax.generate(model, params, pixel_values=pixels, **kw)
  assert_same_sequences(np.asarray(out.sequences), to_np(ref.sequences), EOS, PAD)
  if kw.get("num_beams", 1) > 1:
    np.testing.assert_allclose(np.asarray(out.scores), to_np(ref.sequences_scores), atol=1e-5,
                               rtol=0)
    # The EOS boost makes hypotheses finish at different steps (every branch of HF's search).
    ends = {int(np.argmax(r[1:] == EOS)) for r in to_np(ref.sequences) if (r[1:] == EOS).any()}
    assert len(ends) >= 2, to_np(ref.sequences)


def test_composite_export_loads_in_transformers(tmp_path):
  hf, model, params, _ = composite()
  edjax.save_pretrained(model, params, str(tmp_path))
  back, info = transformers.VisionEncoderDecoderModel.from_pretrained(
      str(tmp_path), output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  pixels, _, dec_in, _ = _inputs(seed=2)
  with torch.no_grad():
    a = back.eval()(pixel_values=torch.tensor(pixels), decoder_input_ids=torch.tensor(dec_in)).logits
    b = hf(pixel_values=torch.tensor(pixels), decoder_input_ids=torch.tensor(dec_in)).logits
  np.testing.assert_array_equal(to_np(a), to_np(b))
  model2, _ = edjax.from_pretrained(str(tmp_path))
  assert model2.config == model.config


@pytest.mark.parametrize("kind", ["swin", "donut-swin"])
def test_warm_start_equals_transformers(kind, tmp_path):
  """from_encoder_decoder_pretrained(Swin dir, BERT dir): the encoder params are the checkpoint's
  (compared through HF's own warm start), and the encoders agree on the same images."""
  torch.manual_seed(0)
  enc = HF_CLASSES[kind][1](_hf_config(kind, image_size=IMAGE_HW)).eval()
  _randomize(enc, seed=21)
  bert = transformers.BertModel(_bert_config(is_decoder=False, add_cross_attention=False))
  enc.save_pretrained(tmp_path / "enc")
  bert.save_pretrained(tmp_path / "bert")
  hf = transformers.VisionEncoderDecoderModel.from_encoder_decoder_pretrained(
      str(tmp_path / "enc"), str(tmp_path / "bert")).eval()
  model, params, info = edjax.from_encoder_decoder_pretrained(
      str(tmp_path / "enc"), str(tmp_path / "bert"), output_loading_info=True)
  assert model.config.encoder.model_type == kind
  assert not info["encoder"].missing and not info["encoder"].unexpected
  assert info["encoder"].initialized == [] or all(
      k.startswith("decoder/") for k in info["encoder"].initialized)
  flat = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()
          if k.startswith("encoder/")}
  ours = convert.flax_to_hf(flat, registry.encoder_rules(model.config.encoder, "", "encoder/"))
  theirs = {k: to_np(v) for k, v in hf.encoder.state_dict().items()
            if not k.endswith("relative_position_index")}
  assert set(ours) == set(theirs)
  for k, v in theirs.items():
    np.testing.assert_array_equal(ours[k], v, err_msg=k)
  pixels = _inputs(seed=4)[0]
  with torch.no_grad():
    ref = hf.encoder(pixel_values=torch.tensor(pixels)).last_hidden_state
  out = model.apply({"params": params}, pixel_values=pixels, method="encode")
  np.testing.assert_allclose(np.asarray(out.last_hidden_state), to_np(ref), atol=TOL, rtol=0)
