"""Bad input gets one clear error that names the problem and the fix (DESIGN.md).

Every case asserts the exception type and a fragment of the message that names the problem,
and where there is one, a fragment that names the fix. Inputs are checked before any compute,
so most cases run no model at all (params are zeros of the right shapes).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time

import numpy as np
import pytest
import torch
import transformers
from flax import traverse_util
from safetensors.numpy import load_file, save_file

import edjax
from edjax import model_configs as configs
from edjax.testing import hf_utils

# ----------------------------------------------------------------------------- tiny models


def _bert(**kw):
  base = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=37, max_position_embeddings=64)
  return edjax.BertConfig(**{**base, **kw})


def _roberta(**kw):
  base = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=37, max_position_embeddings=66)
  return edjax.RobertaConfig(**{**base, **kw})


def _gpt2(**kw):
  base = dict(vocab_size=101, n_embd=32, n_layer=2, n_head=4, n_positions=64)
  return edjax.GPT2Config(**{**base, **kw})


def _zeros(model):
  return traverse_util.unflatten_dict(
      {k: np.zeros(v.shape, v.dtype)
       for k, v in traverse_util.flatten_dict(model.param_shapes(), sep="/").items()}, sep="/")


@pytest.fixture(scope="module")
def bert2gpt2():
  """(model, {'params': zeros}) for bert (vocab 99, 64 positions) -> gpt2 (vocab 101)."""
  cfg = edjax.EncoderDecoderConfig.from_encoder_decoder_configs(
      _bert(), _gpt2(), decoder_start_token_id=2, pad_token_id=0)
  model = edjax.EncoderDecoderModel(cfg)
  return model, {"params": _zeros(model)}


IDS = np.ones((2, 5), np.int32)

# ----------------------------------------------------------------------------- model inputs


def test_input_ids_rank(bert2gpt2):
  model, variables = bert2gpt2
  with pytest.raises(ValueError, match=r"input_ids must be \[batch, length\].*shape \(5,\)"
                                       r".*add a batch dimension"):
    model.apply(variables, input_ids=IDS[0], decoder_input_ids=IDS)


def test_decoder_input_ids_rank(bert2gpt2):
  model, variables = bert2gpt2
  with pytest.raises(ValueError, match=r"decoder_input_ids must be \[batch, length\].*\(2, 5, 1\)"):
    model.apply(variables, input_ids=IDS, decoder_input_ids=IDS[..., None])


def test_attention_mask_shape(bert2gpt2):
  model, variables = bert2gpt2
  with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 4\) but input_ids has "
                                       r"\(2, 5\): they must match"):
    model.apply(variables, input_ids=IDS, attention_mask=np.ones((2, 4), np.int32),
                decoder_input_ids=IDS)


def test_decoder_attention_mask_shape(bert2gpt2):
  model, variables = bert2gpt2
  with pytest.raises(ValueError, match=r"decoder_attention_mask has shape \(2, 3\) but "
                                       r"decoder_input_ids has \(2, 5\)"):
    model.apply(variables, input_ids=IDS, decoder_input_ids=IDS,
                decoder_attention_mask=np.ones((2, 3), np.int32))


@pytest.mark.parametrize("bad,where,message", [
    (99, "input_ids", r"input_ids holds ids in \[1, 99\] but the vocabulary has 99 entries"),
    (-1, "input_ids", r"input_ids holds ids in \[-1, 1\] but the vocabulary has 99 entries"),
    (101, "decoder_input_ids",
     r"decoder_input_ids holds ids in \[1, 101\] but the vocabulary has 101 entries"),
])
def test_token_ids_out_of_vocab(bert2gpt2, bad, where, message):
  model, variables = bert2gpt2
  inputs = dict(input_ids=IDS, decoder_input_ids=IDS)
  inputs[where] = IDS.copy()
  inputs[where][1, 3] = bad
  with pytest.raises(ValueError, match=message + r".*use the tokenizer that matches"):
    model.apply(variables, **inputs)


def test_float_token_ids(bert2gpt2):
  model, variables = bert2gpt2
  with pytest.raises(ValueError, match=r"input_ids must be integer token ids, got dtype float32"):
    model.apply(variables, input_ids=IDS.astype(np.float32), decoder_input_ids=IDS)


def test_input_longer_than_positions(bert2gpt2):
  model, variables = bert2gpt2
  with pytest.raises(ValueError, match=r"input_ids has length 65 but the model has 64 positions; "
                                       r"truncate inputs to 64 tokens"):
    model.apply(variables, input_ids=np.ones((1, 65), np.int32), decoder_input_ids=IDS[:1])
  with pytest.raises(ValueError, match=r"decoder_input_ids has length 65 but the model has 64"):
    model.apply(variables, input_ids=IDS[:1], decoder_input_ids=np.ones((1, 65), np.int32))


def test_roberta_positions_lose_padding_offset():
  """RoBERTa's 66-row position table covers 64 tokens (padding_idx + 1 rows are reserved)."""
  cfg = edjax.EncoderDecoderConfig.from_encoder_decoder_configs(_roberta(), _roberta())
  model = edjax.EncoderDecoderModel(cfg)
  with pytest.raises(ValueError, match=r"length 65 but the model has 64 positions"):
    model.apply({"params": _zeros(model)}, input_ids=np.full((1, 65), 5, np.int32),
                decoder_input_ids=IDS[:1])


def test_labels_out_of_range(bert2gpt2):
  model, variables = bert2gpt2
  labels = np.array([[5, 6, -100, -100], [7, 101, 8, -100]], np.int32)
  with pytest.raises(ValueError, match=r"labels hold ids outside \[0, 101\) other than -100 "
                                       r"\(e.g. 101\); mask ignored positions with -100"):
    model.apply(variables, input_ids=IDS, labels=labels)
  labels[1, 1] = -5
  with pytest.raises(ValueError, match=r"\(e.g. -5\)"):
    model.apply(variables, input_ids=IDS, labels=labels)


def test_token_type_ids_out_of_range(bert2gpt2):
  model, variables = bert2gpt2
  with pytest.raises(ValueError, match=r"token_type_ids hold values in \[0, 2\] but the encoder "
                                       r"has type_vocab_size=2"):
    model.apply(variables, input_ids=IDS, token_type_ids=np.array([[0, 0, 1, 1, 2]] * 2),
                decoder_input_ids=IDS)
  with pytest.raises(ValueError, match=r"token_type_ids has shape \(2, 4\) but input_ids has"):
    model.apply(variables, input_ids=IDS, token_type_ids=np.zeros((2, 4), np.int32),
                decoder_input_ids=IDS)


def test_missing_decoder_inputs(bert2gpt2):
  model, variables = bert2gpt2
  with pytest.raises(ValueError, match=r"pass decoder_input_ids or labels"):
    model.apply(variables, input_ids=IDS)


def test_positional_inputs(bert2gpt2):
  model, variables = bert2gpt2
  with pytest.raises(TypeError, match=r"pass model inputs by keyword"):
    model.apply(variables, IDS, IDS)


def test_variables_without_params(bert2gpt2):
  model, variables = bert2gpt2
  with pytest.raises(ValueError, match=r"variables must be \{'params': params"):
    model.apply(variables["params"], input_ids=IDS, decoder_input_ids=IDS)


def test_unknown_method(bert2gpt2):
  model, variables = bert2gpt2
  with pytest.raises(ValueError, match=r"unknown method 'encdoe'; use one of \['encode', "
                                       r"'decode', 'cross_kv'"):
    model.apply(variables, input_ids=IDS, method="encdoe")
  with pytest.raises(ValueError, match=r"unknown method '_check'"):
    model.apply(variables, input_ids=IDS, method="_check")


def test_decode_without_encoder_states(bert2gpt2):
  model, variables = bert2gpt2
  with pytest.raises(ValueError, match=r"decode needs encoder_hidden_states or cross_kv"):
    model.apply(variables, decoder_input_ids=IDS, method="decode")


def test_encoder_attention_mask_shape(bert2gpt2):
  model, variables = bert2gpt2
  states = np.zeros((2, 7, 32), np.float32)
  with pytest.raises(ValueError, match=r"encoder_attention_mask has shape \(2, 5\) but "
                                       r"encoder_hidden_states is \[batch, src_len\] = \(2, 7\)"):
    model.apply(variables, decoder_input_ids=IDS, encoder_hidden_states=states,
                encoder_attention_mask=np.ones((2, 5), np.int32), method="decode")
  kv = tuple((np.zeros((2, 7, 4, 8), np.float32),) * 2 for _ in range(2))
  with pytest.raises(ValueError, match=r"but cross_kv is \[batch, src_len\] = \(2, 7\)"):
    model.apply(variables, decoder_input_ids=IDS, cross_kv=kv,
                encoder_attention_mask=np.ones((2, 5), np.int32), method="decode")


# ----------------------------------------------------------------------------- decode cache


def _kv(batch):
  return tuple((np.zeros((batch, 7, 4, 8), np.float32),) * 2 for _ in range(2))


def test_decode_without_cache(bert2gpt2):
  model, variables = bert2gpt2
  with pytest.raises(ValueError, match=r"decode=True needs a decode cache.*model.init_cache"
                                       r"\(batch_size, max_length\)"):
    model.apply(variables, decoder_input_ids=IDS[:, :1], cross_kv=_kv(2), decode=True,
                method="decode", mutable=["cache"])


def test_decode_cache_batch_mismatch(bert2gpt2):
  model, variables = bert2gpt2
  cache = model.init_cache(1, 8)
  with pytest.raises(ValueError, match=r"decoder_input_ids has batch 2 but the decode cache was "
                                       r"built for batch 1: .*init_cache\(2, max_length\)"):
    model.apply(dict(variables, cache=cache), decoder_input_ids=IDS[:, :1], cross_kv=_kv(2),
                decode=True, method="decode", mutable=["cache"])


def test_decode_cache_overflow(bert2gpt2):
  """A full static cache would silently clamp its writes: a clear error instead."""
  model, variables = bert2gpt2
  cache = traverse_util.flatten_dict(model.init_cache(2, 4), sep="/")
  cache = {k: (np.array(3, np.int32) if k.endswith("index") else v) for k, v in cache.items()}
  cache = traverse_util.unflatten_dict(cache, sep="/")
  with pytest.raises(ValueError, match=r"the decode cache holds 4 positions, 3 are used and 2 "
                                       r"more do not fit.*max_length >= 5"):
    model.apply(dict(variables, cache=cache), decoder_input_ids=IDS[:, :2], cross_kv=_kv(2),
                decode=True, method="decode", mutable=["cache"])


def test_init_cache_longer_than_positions(bert2gpt2):
  model, _ = bert2gpt2
  with pytest.raises(ValueError, match=r"max_length 65 exceeds the decoder's 64 positions"):
    model.init_cache(1, 65)


# ----------------------------------------------------------------------------- losses


def test_shift_tokens_right_needs_ids():
  with pytest.raises(ValueError, match=r"decoder_start_token_id is None: set it in the model "
                                       r"config.*config.replace\(decoder_start_token_id="):
    edjax.shift_tokens_right(IDS, 0, None)
  with pytest.raises(ValueError, match=r"pad_token_id is None.*replace\(pad_token_id="):
    edjax.shift_tokens_right(IDS, None, 2)
  with pytest.raises(ValueError, match=r"labels must be \[batch, length\], got shape \(5,\)"):
    edjax.shift_tokens_right(IDS[0], 0, 2)


def test_labels_without_decoder_start_token_id():
  cfg = edjax.EncoderDecoderConfig.from_encoder_decoder_configs(_bert(), _gpt2(), pad_token_id=0)
  model = edjax.EncoderDecoderModel(cfg)
  with pytest.raises(ValueError, match=r"decoder_start_token_id is None"):
    model.apply({"params": _zeros(model)}, input_ids=IDS, labels=IDS)


def test_loss_shape_mismatch():
  with pytest.raises(ValueError, match=r"logits \(2, 5, 7\) and labels \(2, 4\) disagree"):
    edjax.seq2seq_loss(np.zeros((2, 5, 7), np.float32), IDS[:, :4])


# ----------------------------------------------------------------------------- configs


def test_unknown_model_type_in_dict():
  with pytest.raises(edjax.ConfigError, match=r"unknown model_type 't5': edjax supports "
                                              r"\['bart', 'beit', 'bert', 'bert-generation', 'camembert', "
                                              r"'deit', 'donut-swin', 'electra', 'gpt2', 'mbart', "
                                              r"'roberta', "
                                              r"'swin', 'trocr', 'vit', 'xlm-roberta'\]"):
    configs.config_from_dict({"model_type": "t5", "d_model": 32})
  with pytest.raises(edjax.ConfigError, match=r"config has no 'model_type' key; add one of"):
    configs.config_from_dict({"hidden_size": 32})
  with pytest.raises(edjax.ConfigError, match=r"BertConfig got a config with model_type='gpt2'"
                                              r".*config_from_dict"):
    edjax.BertConfig.from_dict(_gpt2().to_dict())


def test_config_replace_typo():
  with pytest.raises(edjax.ConfigError, match=r"unknown BertConfig key\(s\) \['typo'\]; valid "
                                              r"keys are: .*hidden_size"):
    _bert().replace(typo=1)
  cfg = edjax.EncoderDecoderConfig.from_encoder_decoder_configs(_bert(), _gpt2())
  with pytest.raises(edjax.ConfigError, match=r"unknown EncoderDecoderConfig key\(s\) "
                                              r"\['decoder_start_token'\]"):
    cfg.replace(decoder_start_token=2)
  assert cfg.replace(decoder_start_token_id=2).decoder_start_token_id == 2  # the right key works


def test_encoder_decoder_dict_without_decoder():
  with pytest.raises(edjax.ConfigError, match=r"no 'decoder' sub-config; is this a single-model "
                                              r"checkpoint\? Use from_encoder_decoder_pretrained"):
    edjax.EncoderDecoderConfig.from_dict({"model_type": "encoder-decoder",
                                          "encoder": _bert().to_dict()})


def test_tie_bert_with_gpt2():
  cfg = edjax.EncoderDecoderConfig.from_encoder_decoder_configs(_bert(), _gpt2(),
                                                               tie_encoder_decoder=True)
  with pytest.raises(edjax.ConfigError, match=r"tie_encoder_decoder=True but the bert encoder and "
                                              r"the gpt2 decoder share no weight names.*"
                                              r"set tie_encoder_decoder=False"):
    edjax.EncoderDecoderModel(cfg)


def test_cross_attention_hidden_size_mismatch():
  cfg = edjax.EncoderDecoderConfig.from_encoder_decoder_configs(
      _bert(hidden_size=48), _gpt2(cross_attention_hidden_size=32))
  with pytest.raises(edjax.ConfigError, match=r"cross_attention_hidden_size=32 but the encoder is "
                                              r"48 wide; set it to None \(adds enc_to_dec_proj\)"):
    edjax.EncoderDecoderModel(cfg)


def test_gpt2_cannot_encode():
  cfg = edjax.EncoderDecoderConfig.from_encoder_decoder_configs(_gpt2(), _gpt2())
  with pytest.raises(edjax.ConfigError, match=r"model_type 'gpt2' cannot be an encoder; encoders: "
                                              r"\['bert', 'roberta', 'xlm-roberta', 'camembert', 'vit', "
                                              r"'deit', 'swin', 'donut-swin', 'beit', 'bert-generation', "
                                              r"'electra'\]"):
    edjax.EncoderDecoderModel(cfg)


def test_decoder_config_not_causal():
  cfg = edjax.EncoderDecoderConfig(encoder=_bert(), decoder=_gpt2())
  with pytest.raises(edjax.ConfigError, match=r"is_decoder=True and add_cross_attention=True; "
                                              r"build the config with "
                                              r".*from_encoder_decoder_configs"):
    edjax.EncoderDecoderModel(cfg)
  with pytest.raises(edjax.ConfigError, match=r"needs an EncoderDecoderConfig, got BertConfig"):
    edjax.EncoderDecoderModel(_bert())


@pytest.mark.parametrize("override,message", [
    (dict(num_attention_heads=5), r"hidden_size 32 is not a multiple of num_heads 5"),
    (dict(hidden_act="gelu_foo"), r"unsupported activation 'gelu_foo'; edjax knows"),
    (dict(position_embedding_type="relative_key"),
     r"position_embedding_type='relative_key' is not supported; edjax implements 'absolute'"),
])
def test_unsupported_architecture_settings(override, message):
  cfg = edjax.EncoderDecoderConfig.from_encoder_decoder_configs(_bert(**override), _gpt2())
  with pytest.raises(ValueError, match=message):
    model = edjax.EncoderDecoderModel(cfg)
    model.param_shapes()


# ----------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
  """HF-saved dirs: a bert->gpt2 EncoderDecoderModel and single BertModel / GPT2LMHeadModel."""
  root = tmp_path_factory.mktemp("ckpts")
  hf_utils.hf_encoder_decoder("bert", "gpt2").save_pretrained(root / "ed")
  torch.manual_seed(0)
  transformers.BertModel(hf_utils.tiny_hf_config("bert")).save_pretrained(root / "bert")
  transformers.GPT2LMHeadModel(hf_utils.tiny_hf_config("gpt2", vocab=101)).save_pretrained(
      root / "gpt2")
  return root


def _variant(ckpts, name, state=None, config=None, remove=()):
  """A copy of the bert->gpt2 checkpoint with its tensors / config.json edited."""
  path = ckpts / name
  shutil.copytree(ckpts / "ed", path)
  if state is not None:
    tensors = load_file(str(path / "model.safetensors"))
    state(tensors)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
  if config is not None:
    cfg = json.loads((path / "config.json").read_text())
    config(cfg)
    (path / "config.json").write_text(json.dumps(cfg))
  for fname in remove:
    os.remove(path / fname)
  return str(path)


MISSING = "encoder.encoder.layer.1.attention.self.key.weight"
EXTRA = "encoder.extra_head.weight"


def test_missing_tensor(ckpts):
  path = _variant(ckpts, "missing", state=lambda s: s.pop(MISSING))
  with pytest.raises(edjax.CheckpointError, match=rf"missing 1: {MISSING}\. Pass strict=False"):
    edjax.from_pretrained(path)


def test_unexpected_tensor(ckpts):
  path = _variant(ckpts, "unexpected",
                  state=lambda s: s.update({EXTRA: np.ones((3, 3), np.float32)}))
  with pytest.raises(edjax.CheckpointError, match=rf"unexpected 1: {EXTRA}\. Pass strict=False"):
    edjax.from_pretrained(path)


def test_not_strict_loads_with_warning(ckpts, caplog):
  def edit(s):
    s.pop(MISSING)
    s[EXTRA] = np.ones((3, 3), np.float32)
  path = _variant(ckpts, "missing_and_unexpected", state=edit)
  with pytest.raises(edjax.CheckpointError, match=rf"missing 1: {MISSING}; unexpected 1: {EXTRA}"):
    edjax.from_pretrained(path)
  with caplog.at_level(logging.WARNING, logger="edjax"):
    model, params, report = edjax.from_pretrained(path, strict=False, output_loading_info=True)
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert any(MISSING in w and EXTRA in w for w in warnings), warnings
  assert report.missing == [MISSING] and report.unexpected == [EXTRA]
  assert report.initialized == ["encoder/encoder/layers_1/self_attn/key/kernel"]
  state = load_file(os.path.join(path, "model.safetensors"))
  np.testing.assert_array_equal(params["encoder"]["embeddings"]["word_embeddings"]["embedding"],
                                state["encoder.embeddings.word_embeddings.weight"])
  fresh = params["encoder"]["encoder"]["layers_1"]["self_attn"]["key"]["kernel"]
  assert fresh.shape == (32, 4, 8) and np.all(np.isfinite(fresh)) and np.std(fresh) > 0


def test_tensor_shape_mismatch(ckpts):
  name = "encoder.encoder.layer.0.intermediate.dense.weight"
  path = _variant(ckpts, "bad_shape",
                  state=lambda s: s.update({name: np.zeros((36, 32), np.float32)}))
  with pytest.raises(edjax.CheckpointError,
                     match=rf"shape mismatch 1: {name}: checkpoint \(36, 32\), model expects "
                           r"\(37, 32\)\. The weights do not match config.json"):
    edjax.from_pretrained(path)


def test_config_hidden_size_mismatch(ckpts):
  path = _variant(ckpts, "bad_config", config=lambda c: c["encoder"].update(hidden_size=48))
  with pytest.raises(edjax.CheckpointError,
                     match=r"encoder.embeddings.word_embeddings.weight: checkpoint \(99, 32\), "
                           r"model expects \(99, 48\).*do not match config.json"):
    edjax.from_pretrained(path)


def test_unknown_model_type_in_config_json(ckpts):
  path = _variant(ckpts, "llama", config=lambda c: c["decoder"].update(model_type="llama"))
  with pytest.raises(edjax.ConfigError, match=r"unknown model_type 'llama': edjax supports"):
    edjax.from_pretrained(path)


def test_invalid_json(ckpts):
  path = _variant(ckpts, "bad_json")
  with open(os.path.join(path, "config.json"), "w") as f:
    f.write('{"model_type": "encoder-decoder",')
  with pytest.raises(edjax.ConfigError, match=r"config.json is not valid JSON .*re-export"):
    edjax.from_pretrained(path)


def test_missing_weights_file(ckpts):
  path = _variant(ckpts, "no_weights", remove=["model.safetensors"])
  with pytest.raises(FileNotFoundError, match=r"no weights in .*no_weights: expected one of "
                                              r"\['model.safetensors'"):
    edjax.from_pretrained(path)


def test_missing_config_json(ckpts):
  path = _variant(ckpts, "no_config", remove=["config.json"])
  with pytest.raises(FileNotFoundError, match=r"no config.json at .*pass an HF-format model dir"):
    edjax.from_pretrained(path)


def test_corrupt_weights_file(ckpts):
  path = _variant(ckpts, "truncated")
  weights = os.path.join(path, "model.safetensors")
  with open(weights, "rb") as f:
    head = f.read(1000)
  with open(weights, "wb") as f:
    f.write(head)
  with pytest.raises(edjax.CheckpointError, match=r"cannot read weights file .*model.safetensors "
                                                  r".*corrupt, truncated.*re-download"):
    edjax.from_pretrained(path)


def test_missing_shard(ckpts):
  path = _variant(ckpts, "sharded", remove=["model.safetensors"])
  index = {"metadata": {}, "weight_map": {MISSING: "model-00001-of-00002.safetensors"}}
  with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
    json.dump(index, f)
  with pytest.raises(FileNotFoundError, match=r"lists shard model-00001-of-00002.safetensors but "
                                              r".* does not exist; download every shard"):
    edjax.from_pretrained(path)


def test_nonexistent_local_path(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"checkpoint directory .*nope does not exist"):
    edjax.from_pretrained(str(tmp_path / "nope"))


def test_file_instead_of_directory(ckpts):
  with pytest.raises(FileNotFoundError, match=r"is a file; pass the checkpoint directory"):
    edjax.from_pretrained(str(ckpts / "ed" / "config.json"))


def test_unknown_hub_id_offline_fails_fast(monkeypatch):
  import huggingface_hub.constants
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
  start = time.monotonic()
  with pytest.raises(FileNotFoundError, match=r"'edjax-tests/no-such-model' is not a local "
                                              r"directory and could not be fetched"
                                              r".*pass its local directory"):
    edjax.from_pretrained("edjax-tests/no-such-model")
  assert time.monotonic() - start < 30


def test_single_model_dir_to_from_pretrained(ckpts):
  with pytest.raises(edjax.ConfigError, match=r"holds a single bert model, not an encoder-decoder; "
                                              r"use edjax.from_encoder_decoder_pretrained"):
    edjax.from_pretrained(str(ckpts / "bert"))


def test_from_pretrained_override_typo(ckpts):
  with pytest.raises(edjax.ConfigError, match=r"\['decoder_start_token_idd'\]"):
    edjax.from_pretrained(str(ckpts / "ed"), decoder_start_token_idd=3)


def test_export_that_does_not_fit_its_config(tmp_path):
  cfg = edjax.EncoderDecoderConfig.from_encoder_decoder_configs(_bert(), _gpt2())
  model = edjax.EncoderDecoderModel(cfg)
  edjax.export_params(model, _zeros(model), str(tmp_path / "export"))
  config_path = tmp_path / "export" / "config.json"
  d = json.loads(config_path.read_text())
  d["decoder"]["n_layer"] = 3
  config_path.write_text(json.dumps(d))
  with pytest.raises(edjax.CheckpointError, match=r"flax_params.msgpack does not fit its "
                                                  r"config.json: missing \['decoder/transformer/h/"
                                                  r"layers_2"):
    edjax.from_pretrained(str(tmp_path / "export"))


def test_save_params_of_another_model(tmp_path):
  small = edjax.EncoderDecoderModel(
      edjax.EncoderDecoderConfig.from_encoder_decoder_configs(_bert(), _gpt2()))
  wide = edjax.EncoderDecoderModel(
      edjax.EncoderDecoderConfig.from_encoder_decoder_configs(_bert(hidden_size=48), _gpt2()))
  with pytest.raises(edjax.CheckpointError, match=r"params does not fit its config.json: "
                                                  r"missing \['enc_to_dec_proj/bias'"):
    edjax.save_pretrained(wide, _zeros(small), str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- warm start


def test_warm_start_override_typo(ckpts):
  with pytest.raises(edjax.ConfigError, match=r"decoder_ overrides: unknown GPT2Config key\(s\) "
                                              r"\['hiden_size'\]; valid keys are: .*n_embd"):
    edjax.from_encoder_decoder_pretrained(str(ckpts / "bert"), str(ckpts / "gpt2"),
                                          decoder_hiden_size=64)
  with pytest.raises(edjax.ConfigError, match=r"encoder_ overrides: unknown BertConfig key\(s\) "
                                              r"\['n_embd'\]"):
    edjax.from_encoder_decoder_pretrained(str(ckpts / "bert"), str(ckpts / "gpt2"),
                                          encoder_n_embd=64)


def test_warm_start_unknown_kwarg(ckpts):
  with pytest.raises(edjax.ConfigError, match=r"unknown argument\(s\) \['hidden_dropout_prob'\]: "
                                              r"prefix model config overrides with encoder_ or "
                                              r"decoder_"):
    edjax.from_encoder_decoder_pretrained(str(ckpts / "bert"), str(ckpts / "gpt2"),
                                          hidden_dropout_prob=0.0)


def test_warm_start_tie_bert_gpt2(ckpts):
  with pytest.raises(edjax.ConfigError, match=r"share no weight names"):
    edjax.from_encoder_decoder_pretrained(str(ckpts / "bert"), str(ckpts / "gpt2"),
                                          tie_encoder_decoder=True)


def test_warm_start_cross_attention_hidden_size(ckpts):
  with pytest.raises(edjax.ConfigError, match=r"cross_attention_hidden_size=16 but the encoder "
                                              r"is 32 wide"):
    edjax.from_encoder_decoder_pretrained(str(ckpts / "bert"), str(ckpts / "gpt2"),
                                          decoder_cross_attention_hidden_size=16)


def test_warm_start_from_composite_dir(ckpts):
  with pytest.raises(edjax.ConfigError, match=r"encoder path holds an encoder-decoder checkpoint; "
                                              r"use from_pretrained"):
    edjax.from_encoder_decoder_pretrained(str(ckpts / "ed"), str(ckpts / "gpt2"))


def test_warm_start_gpt2_encoder(ckpts):
  with pytest.raises(edjax.ConfigError, match=r"'gpt2' cannot be an encoder"):
    edjax.from_encoder_decoder_pretrained(str(ckpts / "gpt2"), str(ckpts / "gpt2"))


def test_warm_start_weights_of_another_model(ckpts):
  path = ckpts / "bert_config_gpt2_weights"
  shutil.copytree(ckpts / "bert", path)
  shutil.copy(ckpts / "gpt2" / "model.safetensors", path / "model.safetensors")
  with pytest.raises(edjax.CheckpointError, match=r"encoder checkpoint .* lacks 37 tensors a bert "
                                                  r"encoder needs .*is it a bert checkpoint\?"):
    edjax.from_encoder_decoder_pretrained(str(path), str(ckpts / "gpt2"))


def test_warm_start_override_that_breaks_shapes(ckpts):
  with pytest.raises(edjax.CheckpointError, match=r"encoder checkpoint .* does not fit the bert "
                                                  r"config: shape mismatch .*Check that "
                                                  r"config.json matches the weights"):
    edjax.from_encoder_decoder_pretrained(str(ckpts / "bert"), str(ckpts / "gpt2"),
                                          encoder_intermediate_size=64)


def test_warm_start_missing_dir(ckpts, tmp_path):
  with pytest.raises(FileNotFoundError, match=r"checkpoint directory .*missing_dir does not exist"):
    edjax.from_encoder_decoder_pretrained(str(ckpts / "bert"), str(tmp_path / "missing_dir"))
