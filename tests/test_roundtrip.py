"""edjax.save_pretrained -> transformers, export_params -> from_pretrained, and atomic saving.

Models made by transformers (bert2bert, roberta2gpt2 with enc_to_dec_proj, tied bert2bert) go
HF dir -> edjax.from_pretrained -> edjax.save_pretrained -> transformers.EncoderDecoderModel
.from_pretrained and must come back tensor for tensor, without missing or unexpected keys; models
made by edjax (from_config, then perturbed) must give transformers the logits edjax computes.
"""

from __future__ import annotations

import json
import os

import chex
import flax.traverse_util as traverse_util
import jax
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

import edjax
from edjax import model_configs as configs
from edjax.testing.hf_utils import hf_encoder_decoder, to_np

IDS = dict(decoder_start_token_id=2, pad_token_id=0, eos_token_id=3)


def _inputs(config, seed: int = 0):
  """A padded batch for `config` (edjax EncoderDecoderConfig)."""
  enc, dec = config.encoder, config.decoder
  rng = np.random.default_rng(seed)
  ids = rng.integers(4, enc.vocab_size, (2, 7)).astype(np.int64)
  mask = np.ones_like(ids)
  ids[1, 5:], mask[1, 5:] = enc.pad_token_id, 0
  dec_ids = rng.integers(4, dec.vocab_size, (2, 6)).astype(np.int64)
  dec_ids[:, 0] = config.decoder_start_token_id
  dec_mask = np.ones_like(dec_ids)
  dec_ids[1, 5:], dec_mask[1, 5:] = config.pad_token_id, 0
  return ids, mask, dec_ids, dec_mask


def _hf_logits(hf, batch) -> np.ndarray:
  ids, mask, dec_ids, dec_mask = (torch.tensor(x) for x in batch)
  with torch.no_grad():
    return to_np(hf.eval()(input_ids=ids, attention_mask=mask, decoder_input_ids=dec_ids,
                           decoder_attention_mask=dec_mask).logits)


def _edjax_logits(model, params, batch) -> np.ndarray:
  ids, mask, dec_ids, dec_mask = batch
  return np.asarray(model.apply({"params": params}, input_ids=ids, attention_mask=mask,
                                decoder_input_ids=dec_ids, decoder_attention_mask=dec_mask).logits)


def _reload_in_transformers(path: str):
  hf, info = transformers.EncoderDecoderModel.from_pretrained(path, output_loading_info=True)
  assert info["missing_keys"] == [] and info["unexpected_keys"] == [], info
  assert info["mismatched_keys"] == [] and info["error_msgs"] == [], info
  return hf.eval()


# ----------------------------------------------------------------------------- HF-made models

HF_CASES = {
    "bert2bert": dict(enc_type="bert", dec_type="bert"),
    "roberta2gpt2_proj": dict(enc_type="roberta", dec_type="gpt2", enc_hidden=32, dec_hidden=48),
    "bert2bert_tied": dict(enc_type="bert", dec_type="bert", tie=True),
}


@pytest.fixture(scope="module")
def hf_made(tmp_path_factory):
  """{case: (transformers model, its save dir, edjax model, edjax params)}, built lazily."""
  cache = {}

  def get(case):
    if case not in cache:
      kw = HF_CASES[case]
      hf = hf_encoder_decoder(kw["enc_type"], kw["dec_type"], kw.get("enc_hidden", 32),
                              kw.get("dec_hidden", 32), tie=kw.get("tie", False), seed=7)
      path = str(tmp_path_factory.mktemp("hf") / case)
      hf.save_pretrained(path)
      model, params = edjax.from_pretrained(path)
      cache[case] = (hf, path, model, params)
    return cache[case]
  return get


@pytest.mark.parametrize("case", sorted(HF_CASES))
def test_hf_made_model_survives_edjax_save(hf_made, tmp_path, case):
  hf, _, model, params = hf_made(case)
  out = str(tmp_path / "out")
  edjax.save_pretrained(model, params, out)
  assert sorted(os.listdir(out)) == ["config.json", "generation_config.json", "model.safetensors"]
  hf2 = _reload_in_transformers(out)
  state, state2 = hf.state_dict(), hf2.state_dict()
  assert set(state) == set(state2)
  for k in state:
    np.testing.assert_array_equal(to_np(state2[k]), to_np(state[k]), err_msg=k)
  batch = _inputs(model.config)
  ref = _hf_logits(hf, batch)
  np.testing.assert_allclose(_hf_logits(hf2, batch), ref, atol=1e-4, rtol=0)
  np.testing.assert_allclose(_edjax_logits(model, params, batch), ref, atol=1e-4, rtol=0)
  tied = case == "bert2bert_tied"
  assert hf2.config.tie_encoder_decoder == model.config.tie_encoder_decoder == tied
  if tied:  # transformers re-ties: one storage for encoder and decoder
    for enc_name, dec_name in (("encoder.embeddings.word_embeddings.weight",
                                "decoder.bert.embeddings.word_embeddings.weight"),
                               ("encoder.encoder.layer.1.output.dense.weight",
                                "decoder.bert.encoder.layer.1.output.dense.weight")):
      assert state2[enc_name].data_ptr() == state2[dec_name].data_ptr()
  if case == "roberta2gpt2_proj":
    assert tuple(state2["enc_to_dec_proj.weight"].shape) == (48, 32)


def test_generation_config_holds_the_special_ids(hf_made, tmp_path):
  _, _, model, params = hf_made("roberta2gpt2_proj")
  model = edjax.EncoderDecoderModel(model.config.replace(decoder_start_token_id=5, eos_token_id=6,
                                                         pad_token_id=7, bos_token_id=8))
  out = str(tmp_path / "out")
  edjax.save_pretrained(model, params, out)
  with open(os.path.join(out, "generation_config.json")) as f:
    gen = json.load(f)
  assert {k: gen[k] for k in ("decoder_start_token_id", "eos_token_id", "pad_token_id",
                              "bos_token_id")} == dict(decoder_start_token_id=5, eos_token_id=6,
                                                       pad_token_id=7, bos_token_id=8)
  hf_gen = transformers.GenerationConfig.from_pretrained(out)
  assert (hf_gen.decoder_start_token_id, hf_gen.eos_token_id, hf_gen.pad_token_id,
          hf_gen.bos_token_id) == (5, 6, 7, 8)
  hf = _reload_in_transformers(out)
  assert (hf.config.decoder_start_token_id, hf.config.pad_token_id) == (5, 7)
  assert hf.generation_config.eos_token_id == 6
  # ... and edjax reads them back from the same files.
  reloaded, _ = edjax.from_pretrained(out)
  assert (reloaded.config.decoder_start_token_id, reloaded.config.eos_token_id,
          reloaded.config.pad_token_id, reloaded.config.bos_token_id) == (5, 6, 7, 8)


# ----------------------------------------------------------------------------- edjax-made models


def _perturb(params, seed: int):
  """Random init has zero biases and unit LayerNorms; noise makes every tensor count."""
  leaves, treedef = jax.tree_util.tree_flatten(params)
  rng = np.random.default_rng(seed)
  noisy = [np.asarray(x) + 0.05 * rng.standard_normal(np.shape(x)).astype(np.float32)
           for x in leaves]
  return jax.tree_util.tree_unflatten(treedef, noisy)


RANDOM_CASES = {
    "bert2gpt2_proj": lambda: configs.EncoderDecoderConfig.from_encoder_decoder_configs(
        edjax.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=37, max_position_embeddings=64),
        edjax.GPT2Config(vocab_size=101, n_embd=48, n_layer=2, n_head=4, n_positions=64,
                           bos_token_id=100, eos_token_id=100, pad_token_id=0),
        **IDS),
    "roberta_share": lambda: configs.EncoderDecoderConfig.from_encoder_decoder_configs(
        edjax.RobertaConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=4, intermediate_size=37,
                              max_position_embeddings=66),
        edjax.RobertaConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=4, intermediate_size=37,
                              max_position_embeddings=66),
        tie_encoder_decoder=True, decoder_start_token_id=0, pad_token_id=1, eos_token_id=2),
}


@pytest.mark.parametrize("case", sorted(RANDOM_CASES))
def test_random_init_model_loads_in_transformers(tmp_path, case):
  model, params = edjax.from_config(RANDOM_CASES[case](), rng=3)
  params = _perturb(params, seed=4)
  out = str(tmp_path / "out")
  edjax.save_pretrained(model, params, out)
  hf = _reload_in_transformers(out)
  batch = _inputs(model.config)
  np.testing.assert_allclose(_hf_logits(hf, batch), _edjax_logits(model, params, batch),
                             atol=1e-4, rtol=0)
  if case == "roberta_share":
    assert hf.config.tie_encoder_decoder
    # One array per tied weight in edjax's canonical tree; both names in transformers share it.
    assert "roberta" not in params["decoder"] or "embeddings" not in params["decoder"]["roberta"]
    state = hf.state_dict()
    assert (state["encoder.encoder.layer.0.attention.self.query.weight"].data_ptr()
            == state["decoder.roberta.encoder.layer.0.attention.self.query.weight"].data_ptr())
  else:
    assert "enc_to_dec_proj" in params
  # edjax reads its own HF output back to the same params.
  model2, params2 = edjax.from_pretrained(out)
  assert dict(model2.config.extra) == {"architectures": ["EncoderDecoderModel"]}
  assert model2.config.replace(extra=()) == model.config
  chex.assert_trees_all_close(params2, params, atol=0, rtol=0)


# ----------------------------------------------------------------------------- export_params


@pytest.mark.parametrize("case", ["bert2bert", "bert2bert_tied"])
def test_export_params_roundtrip_is_exact(hf_made, tmp_path, case):
  _, _, model, params = hf_made(case)
  out = str(tmp_path / "export")
  edjax.export_params(model, params, out)
  assert {"config.json", edjax.pretrained.FLAX_PARAMS_FILE} <= set(os.listdir(out))
  model2, params2, report = edjax.from_pretrained(out, output_loading_info=True)
  assert model2.config == model.config
  assert jax.tree_util.tree_structure(params2) == jax.tree_util.tree_structure(
      jax.tree_util.tree_map(np.asarray, params))
  chex.assert_trees_all_equal(params2, params)
  assert len(report.used) == len(traverse_util.flatten_dict(params))


# ----------------------------------------------------------------------------- atomic saving


def _snapshot(directory: str) -> dict[str, bytes]:
  out = {}
  for name in sorted(os.listdir(directory)):
    with open(os.path.join(directory, name), "rb") as f:
      out[name] = f.read()
  return out


def test_save_leaves_no_temporary_dirs_and_replaces_files(hf_made, tmp_path):
  _, _, model, params = hf_made("bert2bert")
  parent = tmp_path / "parent"
  target = str(parent / "model")
  edjax.save_pretrained(model, params, target)
  assert os.listdir(parent) == ["model"]
  first = _snapshot(target)

  # Over an existing (stale) directory: weights and configs are replaced.
  with open(os.path.join(target, "model.safetensors"), "wb") as f:
    f.write(b"stale, not a safetensors file")
  with open(os.path.join(target, "config.json"), "w") as f:
    f.write("{}")
  edjax.save_pretrained(model, params, target)
  assert os.listdir(parent) == ["model"]
  assert _snapshot(target) == first
  _, params2 = edjax.from_pretrained(target)
  chex.assert_trees_all_equal(params2, jax.tree_util.tree_map(np.asarray, params))

  # Saving other params over it replaces the weights.
  other = jax.tree_util.tree_map(lambda x: np.asarray(x) + 1.0, params)
  edjax.save_pretrained(model, other, target)
  assert os.listdir(parent) == ["model"]
  _, params3 = edjax.from_pretrained(target)
  chex.assert_trees_all_equal(params3, other)


def test_failure_while_writing_leaves_target_untouched(hf_made, tmp_path, monkeypatch):
  _, _, model, params = hf_made("bert2bert")

  def half_written(tensors, filename, metadata=None):
    with open(filename, "wb") as f:
      f.write(b"\x00" * 100)  # part of a file, then the disk fills up
    raise OSError("No space left on device (simulated)")

  parent = tmp_path / "parent"
  parent.mkdir()
  existing = str(parent / "existing")
  edjax.save_pretrained(model, params, existing)
  before = _snapshot(existing)

  monkeypatch.setattr(safetensors.numpy, "save_file", half_written)
  with pytest.raises(OSError, match="simulated"):
    edjax.save_pretrained(model, params, str(parent / "new"))
  assert os.listdir(parent) == ["existing"]  # no target, no temporary directory

  other = jax.tree_util.tree_map(lambda x: np.asarray(x) * 2.0, params)
  with pytest.raises(OSError, match="simulated"):
    edjax.save_pretrained(model, other, existing)
  assert os.listdir(parent) == ["existing"]
  assert _snapshot(existing) == before
  monkeypatch.undo()
  _, reloaded = edjax.from_pretrained(existing)
  chex.assert_trees_all_equal(reloaded, jax.tree_util.tree_map(np.asarray, params))
