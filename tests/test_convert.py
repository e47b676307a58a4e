"""Warm starts from single-model HF checkpoints: where every tensor lands, what is fresh, formats.

Tiny random checkpoints of each class transformers saves (BertModel, BertLMHeadModel,
RobertaModel, RobertaForCausalLM, GPT2Model, GPT2LMHeadModel; with and without their base-model
prefix) are composed with `edjax.from_encoder_decoder_pretrained(..., output_loading_info=True)`
and checked against the files, against transformers' own `from_encoder_decoder_pretrained`, and
through logits. Also: sharded safetensors and pytorch_model.bin, prefixed overrides, and the
scripts/convert_checkpoint.py CLI.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import subprocess
import sys

import chex
import flax.traverse_util as traverse_util
import numpy as np
import pytest
import torch
import transformers

import edjax
from edjax import convert
from edjax.models import registry
from edjax.testing.hf_utils import randomize_, tiny_hf_config, to_np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# class -> (model_type, hidden size, has an LM head, seed). GPT2LMHeadModel is wider than the
# encoders so that its warm start adds a fresh enc_to_dec_proj; GPT2Model is as wide (no proj).
CLASSES = {
    "BertModel": ("bert", 32, False, 1),
    "BertLMHeadModel": ("bert", 32, True, 2),
    "RobertaModel": ("roberta", 32, False, 3),
    "RobertaForCausalLM": ("roberta", 32, True, 4),
    "GPT2Model": ("gpt2", 32, False, 5),
    "GPT2LMHeadModel": ("gpt2", 48, True, 6),
}
BASE_PREFIX = {"bert": "bert.", "roberta": "roberta.", "gpt2": "transformer."}
HEAD_PREFIXES = ("cls.", "lm_head.")
# HF buffers / derived tensors of every family: never converted, never reported unexpected.
IGNORED = convert.ignored_hf_keys(*(registry.get(t).config_class() for t in registry.model_types()))

# Every class is a decoder once and every encoder-capable class an encoder at least once.
PAIRS = [
    ("BertModel", "BertLMHeadModel"),
    ("BertLMHeadModel", "BertModel"),
    ("RobertaModel", "RobertaForCausalLM"),
    ("RobertaForCausalLM", "RobertaModel"),
    ("BertModel", "GPT2LMHeadModel"),
    ("RobertaModel", "GPT2Model"),
]
PAIR_IDS = [f"{e}-{d}" for e, d in PAIRS]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
  """{name: dir}: every class as model.safetensors, plus a sharded BertModel and a .bin
  BertLMHeadModel (same weights as their safetensors twins)."""
  root = tmp_path_factory.mktemp("single")
  dirs = {}
  for name, (model_type, hidden, lm, seed) in CLASSES.items():
    overrides = dict(is_decoder=True) if lm and model_type != "gpt2" else {}
    cfg = tiny_hf_config(model_type, hidden, vocab=101 if model_type == "gpt2" else 99, **overrides)
    torch.manual_seed(seed)
    model = getattr(transformers, name)(cfg)
    randomize_(model, seed)
    model.eval()
    dirs[name] = str(root / name)
    model.save_pretrained(dirs[name])
    if name == "BertModel":
      dirs["BertModel-sharded"] = str(root / "BertModel-sharded")
      model.save_pretrained(dirs["BertModel-sharded"], max_shard_size="20KB")
    if name == "BertLMHeadModel":
      dirs["BertLMHeadModel-bin"] = str(root / "BertLMHeadModel-bin")
      model.save_pretrained(dirs["BertLMHeadModel-bin"], safe_serialization=False)
  return dirs


@pytest.fixture(scope="module")
def warm(ckpts):
  """Cached `from_encoder_decoder_pretrained(enc, dec, output_loading_info=True, **kw)`."""
  @functools.lru_cache(maxsize=None)
  def load(enc: str, dec: str, **kwargs):
    return edjax.from_encoder_decoder_pretrained(ckpts[enc], ckpts[dec], rng=0,
                                                 output_loading_info=True, **kwargs)
  return load


def _flat(model, params) -> dict[str, np.ndarray]:
  full = model.untie_params(params)
  return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(full, sep="/").items()}


def _file_keys(directory: str) -> set[str]:
  return {k for k in convert.read_state_dict(directory) if not convert.is_ignored(k, IGNORED)}


def _fresh_paths(flat: dict, enc: str, dec: str) -> set[str]:
  """The edjax paths a warm start must initialise (what transformers initialises too)."""
  want = {p for p in flat if "/cross_attn" in p or p.startswith("enc_to_dec_proj/")}
  if CLASSES[enc][2]:  # an LM checkpoint has no pooler
    want |= {p for p in flat if p.startswith("encoder/pooler/")}
  if CLASSES[dec][0] != "gpt2" and not CLASSES[dec][2]:  # a base model has no LM head
    want |= {p for p in flat if p.startswith("decoder/lm_head/")}
  return want


def _inputs(model, seed: int = 0):
  """A padded batch: encoder ids with the encoder's pad, decoder ids with the decoder's pad."""
  enc, dec = model.config.encoder, model.config.decoder
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, enc.vocab_size, (2, 7)).astype(np.int64)
  mask = np.ones_like(ids)
  ids[1, 5:], mask[1, 5:] = enc.pad_token_id, 0
  dec_ids = rng.integers(3, dec.vocab_size, (2, 5)).astype(np.int64)
  dec_mask = np.ones_like(dec_ids)
  dec_pad = dec.pad_token_id if dec.pad_token_id is not None else 0
  dec_ids[1, 4:], dec_mask[1, 4:] = dec_pad, 0
  return ids, mask, dec_ids, dec_mask


# ----------------------------------------------------------------------------- the loading report


@pytest.mark.parametrize("enc,dec", PAIRS, ids=PAIR_IDS)
def test_warm_start_report_and_placement(ckpts, warm, enc, dec):
  """Every checkpoint tensor is used (and lands where the rules put it) or reported unexpected;
  cross-attention, enc_to_dec_proj and absent heads/poolers are fresh and reported."""
  model, params, info = warm(enc, dec)
  cfg = model.config
  flat = _flat(model, params)
  enc_type, dec_type = CLASSES[enc][0], CLASSES[dec][0]
  prefix = BASE_PREFIX[dec_type]

  # Encoder: the base-model prefix of an LM checkpoint is stripped; its head is unexpected.
  enc_state = convert.with_prefix(convert.read_state_dict(ckpts[enc]), BASE_PREFIX[enc_type], False)
  enc_keys = {k for k in enc_state if not convert.is_ignored(k, IGNORED)}
  enc_head = {k for k in enc_keys if k.startswith(HEAD_PREFIXES)}
  assert set(info["encoder"].used) == enc_keys - enc_head
  assert sorted(info["encoder"].unexpected) == sorted(enc_head)
  assert bool(enc_head) == CLASSES[enc][2]
  assert info["encoder"].missing == (["pooler.dense.weight", "pooler.dense.bias"] if enc_head else [])
  assert not info["encoder"].mismatched

  # Decoder: a base checkpoint gets the prefix added; its pooler has no place in a causal LM.
  dec_state = convert.with_prefix(convert.read_state_dict(ckpts[dec]), prefix, True)
  dec_keys = {k for k in dec_state if not convert.is_ignored(k, IGNORED)}
  pooler = {k for k in dec_keys if ".pooler." in k}
  assert set(info["decoder"].used) == dec_keys - pooler
  assert sorted(info["decoder"].unexpected) == sorted(pooler)
  assert bool(pooler) == (dec_type != "gpt2" and not CLASSES[dec][2])
  missing = set(info["decoder"].missing)
  cross = {m for m in missing if ".crossattention." in m or ".ln_cross_attn." in m}
  per_layer = 10 if dec_type != "gpt2" else 8  # q/k/v/out (+LN) vs q_attn/c_attn/c_proj/ln
  assert len(cross) == per_layer * cfg.decoder.num_layers
  head_missing = missing - cross
  if dec_type == "gpt2" or CLASSES[dec][2]:
    assert head_missing == set()
  else:
    assert head_missing and all(k.startswith(HEAD_PREFIXES) for k in head_missing)

  # Fresh: exactly cross-attention (+ enc_to_dec_proj, + absent pooler / LM head), at HF's init.
  want_fresh = _fresh_paths(flat, enc, dec)
  assert any("/cross_attn/" in p for p in want_fresh)
  assert ("enc_to_dec_proj/kernel" in flat) == (CLASSES[enc][1] != CLASSES[dec][1])
  got_fresh = set(info["encoder"].initialized) | set(info["decoder"].initialized)
  assert got_fresh == want_fresh
  assert {p for p in want_fresh if p.startswith("decoder/")} <= set(info["decoder"].initialized)
  for p in want_fresh:
    leaf = p.rsplit("/", 1)[-1]
    if leaf == "bias":
      np.testing.assert_array_equal(flat[p], 0.0, err_msg=p)
    elif leaf == "scale":
      np.testing.assert_array_equal(flat[p], 1.0, err_msg=p)
    else:  # normal(initializer_range=0.02); the checkpoint tensors have std 0.2
      assert 0.004 < flat[p].std() < 0.04, (p, flat[p].std())

  # Placement: every used tensor comes back bit-exactly through its rule's inverse hook.
  checked = 0
  for rules, state, report in (
      (registry.encoder_rules(cfg.encoder, "", "encoder/"), enc_state, info["encoder"]),
      (registry.decoder_rules(cfg.decoder, "", "decoder/"), dec_state, info["decoder"])):
    used = set(report.used)
    for rule in rules:
      name = next((n for n in (rule.hf, *rule.aliases) if n in used), None)
      if name is None:
        continue
      back = rule.to_hf(tuple(flat[p] for p in rule.flax))
      np.testing.assert_array_equal(back, state[name], err_msg=name)
      assert not any(p in want_fresh for p in rule.flax), name
      checked += 1
  assert checked == len(info["encoder"].used) + len(info["decoder"].used)
  # The composite's configs are what transformers builds: encoder not causal, decoder crossed.
  assert not cfg.encoder.is_decoder and not cfg.encoder.add_cross_attention
  assert cfg.decoder.is_decoder and cfg.decoder.add_cross_attention


def test_documented_layouts(ckpts, warm):
  """Hand-written transposes / reshapes (no convert rules): BERT Linear (out, in) -> kernel
  (in, heads, head_dim); GPT-2 Conv1D (in, 3E) split into q/k/v without a transpose."""
  model, params, _ = warm("BertModel", "GPT2LMHeadModel")
  bert = convert.read_state_dict(ckpts["BertModel"])
  gpt2 = convert.read_state_dict(ckpts["GPT2LMHeadModel"])
  enc = params["encoder"]
  lay = enc["encoder"]["layers_1"]
  np.testing.assert_array_equal(enc["embeddings"]["word_embeddings"]["embedding"],
                                bert["embeddings.word_embeddings.weight"])
  np.testing.assert_array_equal(enc["embeddings"]["LayerNorm"]["scale"],
                                bert["embeddings.LayerNorm.weight"])
  for proj in ("query", "key", "value"):
    w = bert[f"encoder.layer.1.attention.self.{proj}.weight"]  # (out, in)
    np.testing.assert_array_equal(lay["self_attn"][proj]["kernel"], w.T.reshape(32, 4, 8))
    np.testing.assert_array_equal(lay["self_attn"][proj]["bias"],
                                  bert[f"encoder.layer.1.attention.self.{proj}.bias"].reshape(4, 8))
  w_out = bert["encoder.layer.1.attention.output.dense.weight"]  # (out, in = heads * head_dim)
  np.testing.assert_array_equal(lay["self_attn"]["out"]["kernel"], w_out.T.reshape(4, 8, 32))
  np.testing.assert_array_equal(lay["self_attn_norm"]["scale"],
                                bert["encoder.layer.1.attention.output.LayerNorm.weight"])
  np.testing.assert_array_equal(lay["mlp"]["fc_in"]["kernel"],
                                bert["encoder.layer.1.intermediate.dense.weight"].T)
  np.testing.assert_array_equal(lay["mlp"]["fc_out"]["kernel"],
                                bert["encoder.layer.1.output.dense.weight"].T)
  np.testing.assert_array_equal(lay["mlp_norm"]["bias"], bert["encoder.layer.1.output.LayerNorm.bias"])
  np.testing.assert_array_equal(enc["pooler"]["kernel"], bert["pooler.dense.weight"].T)

  g = params["decoder"]["transformer"]
  h = g["h"]["layers_1"]
  c_attn = gpt2["transformer.h.1.attn.c_attn.weight"]  # Conv1D: (in, 3 * E)
  c_attn_b = gpt2["transformer.h.1.attn.c_attn.bias"]
  assert c_attn.shape == (48, 144)
  for i, proj in enumerate(("query", "key", "value")):
    np.testing.assert_array_equal(h["self_attn"][proj]["kernel"],
                                  c_attn[:, 48 * i:48 * (i + 1)].reshape(48, 4, 12))
    np.testing.assert_array_equal(h["self_attn"][proj]["bias"],
                                  c_attn_b[48 * i:48 * (i + 1)].reshape(4, 12))
  np.testing.assert_array_equal(h["self_attn"]["out"]["kernel"],
                                gpt2["transformer.h.1.attn.c_proj.weight"].reshape(4, 12, 48))
  np.testing.assert_array_equal(h["mlp"]["fc_in"]["kernel"], gpt2["transformer.h.1.mlp.c_fc.weight"])
  np.testing.assert_array_equal(h["mlp"]["fc_out"]["kernel"],
                                gpt2["transformer.h.1.mlp.c_proj.weight"])
  np.testing.assert_array_equal(h["self_attn_norm"]["scale"], gpt2["transformer.h.1.ln_1.weight"])
  np.testing.assert_array_equal(h["mlp_norm"]["scale"], gpt2["transformer.h.1.ln_2.weight"])
  np.testing.assert_array_equal(g["ln_f"]["bias"], gpt2["transformer.ln_f.bias"])
  np.testing.assert_array_equal(g["wte"]["embedding"], gpt2["transformer.wte.weight"])
  np.testing.assert_array_equal(g["wpe"]["embedding"], gpt2["transformer.wpe.weight"])
  assert "lm_head" not in params["decoder"]  # tied to wte, as in GPT2LMHeadModel
  assert params["enc_to_dec_proj"]["kernel"].shape == (32, 48)


@pytest.mark.parametrize("enc", ["BertModel", "RobertaModel"])
def test_encoder_matches_the_checkpoint_model(ckpts, warm, enc):
  """The warm-started encoder computes what the saved single model computes (hidden + pooler)."""
  dec = "BertLMHeadModel" if enc == "BertModel" else "GPT2Model"
  model, params, _ = warm(enc, dec)
  hf = getattr(transformers, enc).from_pretrained(ckpts[enc]).eval()
  ids, mask, _, _ = _inputs(model)
  out = model.apply({"params": params}, input_ids=ids, attention_mask=mask, method="encode")
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
  np.testing.assert_allclose(np.asarray(out.last_hidden_state), to_np(ref.last_hidden_state),
                             atol=1e-4, rtol=0)
  np.testing.assert_allclose(np.asarray(out.pooler_output), to_np(ref.pooler_output), atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- against transformers


@pytest.mark.parametrize("enc,dec", PAIRS, ids=PAIR_IDS)
def test_same_tensors_and_logits_as_transformers_warm_start(ckpts, warm, enc, dec):
  """transformers' EncoderDecoderModel.from_encoder_decoder_pretrained loads the same tensors;
  with our fresh tensors copied into it, it computes our logits."""
  model, params, info = warm(enc, dec)
  torch.manual_seed(0)
  hf = transformers.EncoderDecoderModel.from_encoder_decoder_pretrained(ckpts[enc], ckpts[dec]).eval()
  hf_state = {k: to_np(v) for k, v in hf.state_dict().items()}
  rules = convert.encoder_decoder_rules(model.config)
  ours = convert.flax_to_hf(_flat(model, params), rules)
  fresh_paths = set(info["encoder"].initialized) | set(info["decoder"].initialized)
  fresh = {r.hf for r in rules if all(p in fresh_paths for p in r.flax)}
  assert fresh and not {r.hf for r in rules if any(p in fresh_paths for p in r.flax)} - fresh

  # Same names: transformers' extra entries are only buffers and tied output embeddings.
  assert set(ours) <= set(hf_state)
  extra = set(hf_state) - set(ours)
  assert all(convert.is_ignored(k, IGNORED) or k.endswith("decoder.bias") for k in extra), sorted(extra)
  for k in sorted(set(ours) - fresh):
    np.testing.assert_array_equal(ours[k], hf_state[k], err_msg=k)
  # transformers initialises the same tensors freshly (they differ from ours: other RNG).
  assert all(not np.array_equal(ours[k], hf_state[k]) for k in fresh if not k.endswith("bias")
             and "LayerNorm" not in k and "layer_norm" not in k and "ln_cross" not in k)
  for part in ("encoder", "decoder"):
    for key in ("is_decoder", "add_cross_attention"):
      assert getattr(getattr(model.config, part), key) == getattr(getattr(hf.config, part), key)

  result = hf.load_state_dict({k: torch.tensor(ours[k]) for k in fresh}, strict=False)
  assert not result.unexpected_keys
  ids, mask, dec_ids, dec_mask = _inputs(model)
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
             decoder_input_ids=torch.tensor(dec_ids), decoder_attention_mask=torch.tensor(dec_mask))
  out = model.apply({"params": params}, input_ids=ids, attention_mask=mask,
                    decoder_input_ids=dec_ids, decoder_attention_mask=dec_mask)
  np.testing.assert_allclose(np.asarray(out.logits), to_np(ref.logits), atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- formats, overrides

OVERRIDES = dict(decoder_hidden_dropout_prob=0.0, encoder_attention_probs_dropout_prob=0.0,
                 decoder_start_token_id=2, pad_token_id=0, eos_token_id=3)


def test_checkpoint_formats_read_the_same_tensors(ckpts):
  sharded, binary = ckpts["BertModel-sharded"], ckpts["BertLMHeadModel-bin"]
  with open(os.path.join(sharded, "model.safetensors.index.json")) as f:
    shards = set(json.load(f)["weight_map"].values())
  assert len(shards) > 1 and not os.path.exists(os.path.join(sharded, "model.safetensors"))
  assert sorted(os.listdir(binary)) == ["config.json", "generation_config.json", "pytorch_model.bin"]
  tied = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}  # .bin keeps copies
  for a, b, extra in ((ckpts["BertModel"], sharded, set()),
                      (ckpts["BertLMHeadModel"], binary, tied)):
    sa, sb = convert.read_state_dict(a), convert.read_state_dict(b)
    assert set(sb) - set(sa) == extra and set(sa) <= set(sb)
    for k in sa:
      np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


def test_sharded_and_bin_warm_start_identical_params(warm):
  """Sharded safetensors (encoder) + pytorch_model.bin (decoder) load what model.safetensors loads."""
  model, params, info = warm("BertModel", "BertLMHeadModel")
  model2, params2, info2 = warm("BertModel-sharded", "BertLMHeadModel-bin", **OVERRIDES)
  chex.assert_trees_all_equal(params, params2)
  for part in ("encoder", "decoder"):
    assert sorted(info[part].used) == sorted(info2[part].used)
    assert info[part].missing == info2[part].missing
    assert info2[part].unexpected == info[part].unexpected == []  # tied copies in .bin ignored


def test_prefixed_overrides_land_in_their_config(ckpts, warm):
  model, _, _ = warm("BertModel-sharded", "BertLMHeadModel-bin", **OVERRIDES)
  base, _, _ = warm("BertModel", "BertLMHeadModel")
  cfg = model.config
  assert cfg.decoder.hidden_dropout_prob == 0.0 and base.config.decoder.hidden_dropout_prob == 0.1
  assert cfg.encoder.hidden_dropout_prob == 0.1  # not overridden
  assert cfg.encoder.attention_probs_dropout_prob == 0.0
  assert cfg.decoder.attention_probs_dropout_prob == 0.1
  assert (cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id) == (2, 0, 3)
  with pytest.raises(edjax.ConfigError, match="no_such_field"):  # before any weights are read
    edjax.from_encoder_decoder_pretrained(ckpts["BertModel"], ckpts["GPT2Model"],
                                          decoder_no_such_field=1)


# ----------------------------------------------------------------------------- the CLI


def _cli_module():
  spec = importlib.util.spec_from_file_location(
      "convert_checkpoint", os.path.join(REPO, "scripts", "convert_checkpoint.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_convert_checkpoint_cli(ckpts, tmp_path, capsys):
  """Warm start -> HF dir (subprocess), HF -> edjax export, edjax export -> HF (in process)."""
  hf_out, ej_out, hf_again = (str(tmp_path / n) for n in ("hf", "edjax", "hf_again"))
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", USE_TF="0", TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "convert_checkpoint.py"),
       f"--encoder={ckpts['BertModel']}", f"--decoder={ckpts['BertLMHeadModel']}",
       "--tie_encoder_decoder", "--decoder_start_token_id=2", "--pad_token_id=0",
       "--eos_token_id=3", f"--out={hf_out}", "--to=hf"],
      env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert "encoder: used 39, missing 0, unexpected 0" in proc.stdout, proc.stdout
  assert "decoder: used 42, missing 20, unexpected 0" in proc.stdout, proc.stdout
  assert re.search(r"initialized 20 params freshly: decoder/bert/encoder/layers_0/cross_attn/",
                   proc.stdout), proc.stdout

  # transformers reads it without missing / unexpected keys, and ties like its own warm start.
  hf, loading = transformers.EncoderDecoderModel.from_pretrained(hf_out, output_loading_info=True)
  assert not loading["missing_keys"] and not loading["unexpected_keys"]
  assert hf.config.tie_encoder_decoder and hf.config.decoder_start_token_id == 2
  assert hf.generation_config.eos_token_id == 3 and hf.generation_config.pad_token_id == 0
  torch.manual_seed(0)
  hf_warm = transformers.EncoderDecoderModel.from_encoder_decoder_pretrained(
      ckpts["BertModel"], ckpts["BertLMHeadModel"], tie_encoder_decoder=True)
  for name in ("encoder.embeddings.word_embeddings.weight",
               "encoder.encoder.layer.1.attention.self.query.weight",
               "decoder.bert.encoder.layer.0.output.dense.weight"):
    np.testing.assert_array_equal(to_np(hf.state_dict()[name]), to_np(hf_warm.state_dict()[name]))

  cli = _cli_module()
  capsys.readouterr()
  cli.main([f"--hf_dir={hf_out}", f"--out={ej_out}", "--to=edjax"])
  assert "all tensors matched" in capsys.readouterr().out
  assert {"config.json", edjax.pretrained.FLAX_PARAMS_FILE} <= set(os.listdir(ej_out))
  model, params = edjax.from_pretrained(hf_out)
  model2, params2 = edjax.from_pretrained(ej_out)
  chex.assert_trees_all_equal(params, params2)
  assert model2.config == model.config and model.config.tie_encoder_decoder

  cli.main([f"--in_dir={ej_out}", f"--out={hf_again}", "--to=hf"])
  model3, params3 = edjax.from_pretrained(hf_again)
  chex.assert_trees_all_equal(params, params3)
  with pytest.raises(SystemExit):
    cli.main([f"--hf_dir={hf_out}", f"--encoder={ckpts['BertModel']}", f"--out={ej_out}", "--to=hf"])
