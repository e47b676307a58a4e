"""Model configs: HF config.json round trips, defaults, hashing, logical-axis annotations."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import pytest
import transformers
from flax import traverse_util

import edjax
from edjax import model_configs as configs

HF_CLASSES = {
    "bert": (transformers.BertConfig, edjax.BertConfig),
    "roberta": (transformers.RobertaConfig, edjax.RobertaConfig),
    "gpt2": (transformers.GPT2Config, edjax.GPT2Config),
}
NON_DEFAULT = {
    "bert": dict(vocab_size=77, hidden_size=48, num_hidden_layers=3, num_attention_heads=6,
                 intermediate_size=61, hidden_act="gelu_new", layer_norm_eps=1e-7,
                 max_position_embeddings=33, type_vocab_size=3, pad_token_id=5,
                 tie_word_embeddings=False, id2label={0: "NEG", 1: "POS"}),
    "roberta": dict(vocab_size=78, hidden_size=40, num_attention_heads=5, bos_token_id=3,
                    is_decoder=True, add_cross_attention=True, cross_attention_hidden_size=24),
    "gpt2": dict(vocab_size=79, n_embd=24, n_layer=3, n_head=3, n_inner=50, n_positions=17,
                 activation_function="relu", scale_attn_by_inverse_layer_idx=True,
                 layer_norm_epsilon=1e-6, summary_type="mean"),
}
UNKNOWN_KEYS = {"my_custom_key": {"nested": [1, 2, {"deep": None}]}, "another_one": 3.5,
                "architectures": ["SomethingForCausalLM"]}


def _hf_dict(model_type: str, non_default: bool) -> dict:
  hf_cls = HF_CLASSES[model_type][0]
  cfg = hf_cls(**NON_DEFAULT[model_type]) if non_default else hf_cls()
  # Through JSON, as read from a config.json (integer id2label keys become strings).
  return json.loads(json.dumps({**cfg.to_dict(), **UNKNOWN_KEYS}))


@pytest.mark.parametrize("non_default", [False, True], ids=["defaults", "non_default"])
@pytest.mark.parametrize("model_type", sorted(HF_CLASSES))
def test_hf_dict_round_trip(model_type, non_default):
  d = _hf_dict(model_type, non_default)
  cfg = configs.config_from_dict(d)
  assert type(cfg) is HF_CLASSES[model_type][1]
  out = cfg.to_dict()
  assert out == d  # every key and value, the unknown ones included
  assert out["model_type"] == model_type
  assert dict(cfg.extra)["my_custom_key"] == UNKNOWN_KEYS["my_custom_key"]
  # Modelled keys are fields, not extras.
  assert not set(dict(cfg.extra)) & type(cfg).field_names()
  if non_default:
    for key, value in NON_DEFAULT[model_type].items():
      if key in type(cfg).field_names():
        assert getattr(cfg, key) == value, key
  # And transformers reads what we write.
  hf_again = HF_CLASSES[model_type][0].from_dict(json.loads(json.dumps(out)))
  assert json.loads(json.dumps(hf_again.to_dict())) == d


def test_encoder_decoder_dict_round_trip():
  hf = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(
      transformers.RobertaConfig(vocab_size=78, hidden_size=40, num_attention_heads=5),
      transformers.GPT2Config(n_embd=40),
      tie_encoder_decoder=False)
  hf.decoder_start_token_id, hf.pad_token_id, hf.eos_token_id = 7, 1, 2
  d = json.loads(json.dumps({**hf.to_dict(), **UNKNOWN_KEYS}))
  cfg = configs.config_from_dict(d)
  assert isinstance(cfg, edjax.EncoderDecoderConfig)
  assert isinstance(cfg.encoder, edjax.RobertaConfig)
  assert isinstance(cfg.decoder, edjax.GPT2Config)
  assert (cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id) == (7, 1, 2)
  assert cfg.decoder.is_decoder and cfg.decoder.add_cross_attention
  assert not cfg.encoder.is_decoder and cfg.encoder.hidden_size == 40
  assert cfg.needs_enc_to_dec_proj is False  # both 40 wide
  out = cfg.to_dict()
  assert out == d
  hf_again = transformers.EncoderDecoderConfig.from_dict(json.loads(json.dumps(out)))
  assert hf_again.decoder.n_embd == 40 and hf_again.decoder_start_token_id == 7


def test_from_encoder_decoder_configs_makes_decoder_causal_with_cross_attention():
  enc = edjax.BertConfig(hidden_size=48, num_attention_heads=4)
  dec = edjax.GPT2Config(n_embd=32, n_head=4)
  assert not dec.is_decoder and not dec.add_cross_attention
  cfg = edjax.EncoderDecoderConfig.from_encoder_decoder_configs(
      enc, dec, decoder_start_token_id=5, pad_token_id=0)
  assert cfg.decoder.is_decoder and cfg.decoder.add_cross_attention
  assert cfg.encoder == enc  # the encoder is left as it is
  assert not cfg.encoder.is_decoder and not cfg.encoder.add_cross_attention
  assert cfg.decoder.replace(is_decoder=False, add_cross_attention=False) == dec
  assert (cfg.decoder_start_token_id, cfg.pad_token_id) == (5, 0)
  assert cfg.tie_encoder_decoder is False
  assert cfg.needs_enc_to_dec_proj  # widths 48 vs 32, no cross_attention_hidden_size
  same_width = edjax.EncoderDecoderConfig.from_encoder_decoder_configs(
      enc, dec.replace(n_embd=48))
  assert not same_width.needs_enc_to_dec_proj
  # transformers does the same to the decoder.
  hf = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(
      transformers.BertConfig(), transformers.GPT2Config())
  assert hf.decoder.is_decoder and hf.decoder.add_cross_attention


@pytest.mark.parametrize("model_type", sorted(HF_CLASSES))
def test_defaults_match_transformers(model_type):
  hf_cls, ed_cls = HF_CLASSES[model_type]
  hf, ours = hf_cls(), ed_cls()
  for name in ed_cls.field_names():
    assert getattr(ours, name) == getattr(hf, name), name


def test_roberta_defaults():
  """transformers.RobertaConfig's defaults, with RoBERTa's special ids and position offset."""
  cfg = edjax.RobertaConfig()
  assert (cfg.vocab_size, cfg.max_position_embeddings, cfg.type_vocab_size) == (50265, 512, 2)
  assert (cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id) == (1, 0, 2)
  assert cfg.layer_norm_eps == 1e-12
  assert cfg.max_positions == 510  # padding_idx + 1 position rows are never used by tokens
  assert edjax.RobertaConfig(max_position_embeddings=514).max_positions == 512  # roberta-base
  assert edjax.RobertaConfig(pad_token_id=0, max_position_embeddings=66).max_positions == 65
  assert edjax.BertConfig().max_positions == 512 and edjax.BertConfig().pad_token_id == 0
  assert isinstance(cfg, edjax.BertConfig) and cfg.model_type == "roberta"
  # A config.json that leaves keys out gets transformers' values for them.
  partial = {"model_type": "roberta", "hidden_size": 64, "num_attention_heads": 4}
  ours = configs.config_from_dict(partial)
  hf = transformers.RobertaConfig.from_dict(partial)
  for name in edjax.RobertaConfig.field_names():
    assert getattr(ours, name) == getattr(hf, name), name


def test_configs_are_frozen_and_hashable():
  d = _hf_dict("bert", True)  # extras hold dicts and lists
  a, b = configs.config_from_dict(d), configs.config_from_dict(dict(d))
  assert a == b and hash(a) == hash(b)
  assert a != a.replace(hidden_size=64) and hash(a) != hash(a.replace(hidden_size=64))
  with pytest.raises(dataclasses.FrozenInstanceError):
    a.hidden_size = 3
  ed = edjax.EncoderDecoderConfig.from_encoder_decoder_configs(a, edjax.GPT2Config())
  ed2 = edjax.EncoderDecoderConfig.from_encoder_decoder_configs(b, edjax.GPT2Config())
  assert ed == ed2 and hash(ed) == hash(ed2) and len({ed, ed2, a, b}) == 2
  with pytest.raises(dataclasses.FrozenInstanceError):
    ed.pad_token_id = 0
  # Usable as a static jit argument (what flax modules and jitted steps need).
  calls = []

  def f(cfg, x):
    calls.append(cfg)
    return x * cfg.encoder.num_layers
  jitted = jax.jit(f, static_argnums=0)
  assert int(jitted(ed, jnp.int32(2))) == 2 * a.num_layers
  assert int(jitted(ed2, jnp.int32(3))) == 3 * a.num_layers
  assert len(calls) == 1  # the equal config hit the cache


def test_replace_keeps_extra_and_validates():
  cfg = configs.config_from_dict(_hf_dict("gpt2", False))
  new = cfg.replace(n_layer=4)
  assert new.n_layer == 4 and new.extra == cfg.extra
  assert new.to_dict()["my_custom_key"] == UNKNOWN_KEYS["my_custom_key"]
  with pytest.raises(edjax.ConfigError, match=r"unknown GPT2Config key\(s\) \['my_custom_key'\]"):
    cfg.replace(my_custom_key=1)  # extras are kept, not settable fields


def _tiny(model_type, hidden=32, **kw):
  if model_type == "gpt2":
    return edjax.GPT2Config(vocab_size=101, n_embd=hidden, n_layer=2, n_head=4, n_positions=64,
                              **kw)
  cls = edjax.RobertaConfig if model_type == "roberta" else edjax.BertConfig
  return cls(vocab_size=99, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=37, max_position_embeddings=66, **kw)


AXIS_NAMES = {"embed", "mlp", "heads", "kv", "vocab", "length", None}
MODELS = {
    "bert2bert": lambda: (_tiny("bert"), _tiny("bert"), False),
    "bert2gpt2_proj": lambda: (_tiny("bert", 48), _tiny("gpt2"), False),
    "roberta_share": lambda: (_tiny("roberta"), _tiny("roberta"), True),
    "bert2bert_untied_head": lambda: (_tiny("bert"), _tiny("bert", tie_word_embeddings=False),
                                      False),
    "bert2gpt2_untied_head": lambda: (_tiny("bert"), _tiny("gpt2", tie_word_embeddings=False),
                                      False),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_logical_axes_cover_every_param(name):
  enc, dec, tie = MODELS[name]()
  model = edjax.EncoderDecoderModel(edjax.EncoderDecoderConfig.from_encoder_decoder_configs(
      enc, dec, tie_encoder_decoder=tie))
  shapes = traverse_util.flatten_dict(model.param_shapes(), sep="/")
  axes = traverse_util.flatten_dict(model.logical_axes(), sep="/")
  assert set(shapes) == set(axes) and len(shapes) > 40
  for path, shape in shapes.items():
    spec = axes[path]
    assert isinstance(spec, jax.sharding.PartitionSpec), (path, spec)
    assert len(spec) == len(shape.shape), (path, spec, shape.shape)
    assert set(spec) <= AXIS_NAMES, (path, spec)
  # Spot checks of the documented layout.
  enc_layer = "encoder/encoder/layers_0"
  assert tuple(axes[f"{enc_layer}/self_attn/query/kernel"]) == ("embed", "heads", "kv")
  assert tuple(axes[f"{enc_layer}/self_attn/query/bias"]) == ("heads", "kv")
  assert tuple(axes[f"{enc_layer}/self_attn/out/kernel"]) == ("heads", "kv", "embed")
  assert tuple(axes[f"{enc_layer}/mlp/fc_in/kernel"]) == ("embed", "mlp")
  assert tuple(axes[f"{enc_layer}/mlp/fc_out/kernel"]) == ("mlp", "embed")
  assert tuple(axes[f"{enc_layer}/mlp_norm/scale"]) == ("embed",)
  assert tuple(axes["encoder/embeddings/word_embeddings/embedding"]) == ("vocab", "embed")
  assert tuple(axes["encoder/embeddings/position_embeddings/embedding"]) == ("length", "embed")
  if "enc_to_dec_proj" in name or "proj" in name:
    assert shapes["enc_to_dec_proj/kernel"].shape == (48, 32)
  if tie:  # tied weights appear once, at the encoder path
    assert not any(p.startswith("decoder/roberta/encoder/layers_0/self_attn/") for p in shapes)
    assert "decoder/roberta/encoder/layers_0/cross_attn/query/kernel" in shapes
  if "untied_head" in name:
    head = [p for p in shapes if "lm_head" in p and p.endswith("kernel")
            and shapes[p].shape[-1] == dec.vocab_size]
    assert head and all(tuple(axes[p]) == ("embed", "vocab") for p in head), head


def test_runtime_options_are_settable_checked_and_never_written():
  """attention_impl / scan_layers / remat say how a model runs: replace and with_runtime_options
  set them (on both parts of a composite), a bad value is a ConfigError, config.json omits them."""
  from edjax.model_configs import ConfigError, with_runtime_options
  bert = edjax.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=37)
  both = edjax.EncoderDecoderConfig.from_encoder_decoder_configs(bert, bert)
  fast = with_runtime_options(both, remat="full", scan_layers=True, attention_impl=None)
  assert (fast.encoder.remat, fast.decoder.remat, fast.decoder.scan_layers) == ("full", "full", True)
  assert fast.encoder.attention_impl == "einsum"  # None keeps the value
  assert not {"remat", "scan_layers", "attention_impl"} & set(fast.encoder.to_dict())
  assert fast.to_dict() == both.to_dict()
  with pytest.raises(ConfigError, match="remat='fully'"):
    bert.replace(remat="fully")
  with pytest.raises(ConfigError, match="attention_impl='flash'"):
    with_runtime_options(both, attention_impl="flash")
  with pytest.raises(ConfigError, match="unknown runtime option"):
    with_runtime_options(both, scan=True)
