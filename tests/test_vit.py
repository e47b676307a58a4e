"""ViT / DeiT encoders: parity with transformers' ViTModel / DeiTModel and lossless conversion.

Tiny random torch models (every parameter seeded noise, LayerNorm scales around 1) are loaded
through the registered `encoder_rules`; both run on the same NCHW pixel_values.
"""

from __future__ import annotations

import flax.linen as nn
import flax.traverse_util as traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from edjax import model_configs as configs, convert
from edjax.model_configs import ConfigError
from edjax.models import registry, vit

TINY = dict(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=37, layer_norm_eps=1e-12)
HF_CLASSES = {"vit": (transformers.ViTConfig, transformers.ViTModel),
              "deit": (transformers.DeiTConfig, transformers.DeiTModel)}
TOL = 1e-4


def _randomize(model: torch.nn.Module, seed: int, std: float = 0.2) -> None:
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen) * std
      is_norm_scale = "layernorm" in name and name.endswith(".weight")
      p.copy_(1.0 + noise if is_norm_scale else noise)


def _expected_shapes(module, config) -> dict:
  pix = jnp.zeros((1, config.num_channels, config.image_size, config.image_size), jnp.float32)
  shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), pix))["params"]
  shapes = nn.meta.unbox(shapes)
  return {"/".join(k): tuple(v.shape) for k, v in traverse_util.flatten_dict(shapes).items()}


@pytest.fixture(scope="module", params=["vit", "deit", "vit-no_qkv_bias"])
def case(request):
  """vit-no_qkv_bias: ViTConfig(qkv_bias=False), the encoder of TrOCR-base / -large."""
  model_type = request.param.split("-")[0]
  hf_cfg_cls, hf_model_cls = HF_CLASSES[model_type]
  torch.manual_seed(0)
  hf_cfg = hf_cfg_cls(**TINY, **({"qkv_bias": False} if "no_qkv_bias" in request.param else {}))
  hf = hf_model_cls(hf_cfg).eval()
  _randomize(hf, seed=1 if model_type == "vit" else 2)
  state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
  cfg = configs.config_from_dict(hf_cfg.to_dict())
  assert type(cfg) is registry.get(model_type).config_class
  module = registry.encoder_module(cfg, jnp.float32)
  expected = _expected_shapes(module, cfg)
  rules = registry.encoder_rules(cfg, "", "")
  flat, report = convert.hf_to_flax(state, rules, expected)
  assert not report.missing and not report.unexpected and not report.mismatched, report.summary()
  assert set(flat) == set(expected), set(flat) ^ set(expected)
  params = traverse_util.unflatten_dict({tuple(k.split("/")): jnp.asarray(v) for k, v in flat.items()})
  return dict(model_type=model_type, hf=hf, state=state, cfg=cfg, module=module, params=params,
              flat=flat, rules=rules)


def test_config_defaults_match_transformers():
  for model_type, (hf_cfg_cls, _) in HF_CLASSES.items():
    ours = registry.get(model_type).config_class()
    theirs = hf_cfg_cls().to_dict()
    for name in ours.field_names():
      if name == "pooler_output_size":  # HF resolves None to hidden_size
        assert ours.pooler_size == theirs[name]
        continue
      assert getattr(ours, name) == theirs[name], (model_type, name)
    assert ours.max_positions == 196 + (2 if model_type == "deit" else 1)
    assert ours.num_layers == 12 and ours.num_heads == 12 and ours.dropout_rate == 0.0
    assert configs.config_from_dict(ours.to_dict()) == ours


def test_parity(case):
  rng = np.random.default_rng(0)
  pix = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
  with torch.no_grad():
    ref = case["hf"](pixel_values=torch.from_numpy(pix), output_hidden_states=True)
  out = case["module"].apply({"params": case["params"]}, jnp.asarray(pix),
                             output_hidden_states=True)
  seq = 16 + (2 if case["model_type"] == "deit" else 1)
  assert out.last_hidden_state.shape == (2, seq, 32)
  diffs = {"last_hidden_state": np.abs(np.asarray(out.last_hidden_state)
                                       - ref.last_hidden_state.numpy()).max(),
           "pooler_output": np.abs(np.asarray(out.pooler_output) - ref.pooler_output.numpy()).max()}
  assert len(out.hidden_states) == len(ref.hidden_states) == 3
  for i, (a, b) in enumerate(zip(out.hidden_states, ref.hidden_states)):
    diffs[f"hidden_states[{i}]"] = np.abs(np.asarray(a) - b.numpy()).max()
  print(case["model_type"], {k: f"{v:.2e}" for k, v in diffs.items()})
  for k, v in diffs.items():
    assert v <= TOL, (case["model_type"], k, v)


def test_round_trip(case):
  back = convert.flax_to_hf({k: np.asarray(v) for k, v in case["flat"].items()}, case["rules"])
  assert set(back) == set(case["state"])
  for k, v in case["state"].items():
    assert back[k].shape == v.shape and back[k].dtype == v.dtype, k
    np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_param_logical_axes(case):
  pix = jnp.zeros((1, 3, 32, 32), jnp.float32)
  boxed = jax.eval_shape(lambda: case["module"].init(jax.random.PRNGKey(0), pix))["params"]
  kernel = boxed["embeddings"]["patch_embeddings"]["kernel"]
  assert kernel.names == (None, None, None, "embed")
  assert kernel.value.shape == (8, 8, 3, 32)


@pytest.mark.parametrize("shape,match", [
    ((2, 3, 16, 16), "image size"),
    ((2, 1, 32, 32), "channels"),
    ((2, 32, 32, 3), "channels"),
    ((3, 32, 32), "rank"),
])
def test_bad_pixel_values(case, shape, match):
  with pytest.raises(ValueError, match=match):
    case["module"].apply({"params": case["params"]}, jnp.zeros(shape, jnp.float32))


def test_qkv_bias_false_has_no_projection_biases():
  module = registry.encoder_module(vit.ViTConfig(**TINY, qkv_bias=False), jnp.float32)
  pix = jnp.zeros((1, 3, 32, 32), jnp.float32)
  attn = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), pix))["params"]
  attn = attn["encoder"]["layers_0"]["self_attn"]
  assert all(set(attn[p]) == {"kernel"} for p in ("query", "key", "value"))
  assert set(attn["out"]) == {"kernel", "bias"}


def test_vision_encoder_in_the_text_composite_names_the_vision_class():
  import edjax
  from edjax import BertConfig, EncoderDecoderConfig, ViTConfig
  cfg = EncoderDecoderConfig.from_encoder_decoder_configs(
      ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37,
                image_size=32, patch_size=8),
      BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37))
  with pytest.raises(edjax.ConfigError, match="belongs in a VisionEncoderDecoderModel"):
    edjax.EncoderDecoderModel(cfg)
  with pytest.raises(edjax.ConfigError, match="image encoder"):
    edjax.VisionEncoderDecoderConfig.from_encoder_decoder_configs(cfg.decoder, cfg.decoder)


@pytest.mark.parametrize("model_type,size", [("vit", (48, 48)), ("deit", (48, 48)),
                                             ("vit", (24, 40))])
def test_interpolated_position_embeddings_equal_transformers(model_type, size):
  """A 32x32-pretrained encoder at another image size == HF's interpolate_pos_encoding=True."""
  hf_cfg_cls, hf_model_cls = HF_CLASSES[model_type]
  torch.manual_seed(0)
  hf = hf_model_cls(hf_cfg_cls(**TINY)).eval()
  _randomize(hf, seed=3)
  state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
  cfg = registry.get(model_type).config_class(**{**TINY, "image_size": list(size)})
  module = registry.encoder_module(cfg, jnp.float32)
  pix = jnp.zeros((1, 3, *size), jnp.float32)
  shapes = nn.meta.unbox(jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), pix))["params"])
  expected = {"/".join(k): tuple(v.shape) for k, v in traverse_util.flatten_dict(shapes).items()}
  flat, report = convert.hf_to_flax(state, registry.encoder_rules(cfg, "", ""), expected)
  assert not report.missing and not report.unexpected and not report.mismatched, report.summary()
  params = traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})
  rng = np.random.default_rng(1)
  pixels = rng.standard_normal((2, 3, *size)).astype(np.float32)
  with torch.no_grad():
    ref = hf(pixel_values=torch.from_numpy(pixels), interpolate_pos_encoding=True)
  out = module.apply({"params": params}, jnp.asarray(pixels))
  np.testing.assert_allclose(np.asarray(out.last_hidden_state), ref.last_hidden_state.numpy(),
                             atol=TOL, rtol=0)


def test_image_size_not_a_multiple_of_the_patch_is_a_config_error():
  with pytest.raises(ConfigError, match=r"image_size 30x30 is not a multiple of patch_size 8x8"):
    vit.ViTConfig(**{**TINY, "image_size": 30})


def test_warm_start_at_another_image_size(tmp_path, minilm_dir):
  """from_encoder_decoder_pretrained(vit_dir, ..., encoder_image_size=48): the 32x32 checkpoint's
  positions interpolated on load, the encoder equal to HF's interpolate_pos_encoding=True."""
  import edjax
  torch.manual_seed(0)
  hf = transformers.ViTModel(transformers.ViTConfig(**TINY)).eval()
  _randomize(hf, seed=4)
  hf.save_pretrained(tmp_path / "vit")
  model, params = edjax.from_encoder_decoder_pretrained(
      str(tmp_path / "vit"), minilm_dir, encoder_image_size=48, decoder_start_token_id=101,
      eos_token_id=102, pad_token_id=0)
  assert model.config.encoder.image_hw == (48, 48)
  pixels = np.random.default_rng(2).standard_normal((1, 3, 48, 48)).astype(np.float32)
  enc = model.apply({"params": params}, pixel_values=pixels, method="encode")
  with torch.no_grad():
    ref = hf(pixel_values=torch.from_numpy(pixels), interpolate_pos_encoding=True)
  np.testing.assert_allclose(np.asarray(enc.last_hidden_state), ref.last_hidden_state.numpy(),
                             atol=TOL, rtol=0)
