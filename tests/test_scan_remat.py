"""scan_layers=True and remat against the plain model: same numbers, same checkpoints.

Tiny random pairs (edjax.from_config on transformers config dicts, every param then seeded
noise). A scanned model's params are the unscanned ones stacked (`edjax.models.stacking`);
logits, loss and gradients agree to 1e-5 / 1e-6, decoding with the scanned cache gives the
same sequences, an HF checkpoint loads into and exports from the scanned layout exactly, and
the trainer's losses are the same with scan on or off.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import os

import flax.traverse_util as traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

import edjax
from edjax import losses
from edjax.model_configs import ConfigError, with_runtime_options
from edjax.models import stacking
from edjax.models.encoder_decoder import model_for_config
from edjax.testing.hf_utils import tiny_hf_config, to_np
from edjax.train import trainer as train_lib

EOS, START, PAD = 3, 2, 1
VIT = dict(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
           num_attention_heads=4, intermediate_size=37)
SWIN = dict(image_size=32, patch_size=4, num_channels=3, embed_dim=16, depths=[2, 2],
            num_heads=[2, 4], window_size=4, mlp_ratio=2.0)
TROCR = dict(vocab_size=99, d_model=32, decoder_layers=2, decoder_attention_heads=4,
             decoder_ffn_dim=37, max_position_embeddings=64, pad_token_id=PAD,
             bos_token_id=START, eos_token_id=EOS, decoder_start_token_id=START, is_decoder=True,
             add_cross_attention=True)
PAIRS = {
    "bert2bert": (lambda: tiny_hf_config("bert"), lambda: tiny_hf_config("bert", decoder=True)),
    "roberta2gpt2-proj": (lambda: tiny_hf_config("roberta"),
                          lambda: tiny_hf_config("gpt2", 48, vocab=101, decoder=True)),
    "vit2trocr": (lambda: transformers.ViTConfig(**VIT), lambda: transformers.TrOCRConfig(**TROCR)),
    "swin2bert": (lambda: transformers.SwinConfig(**SWIN),
                  lambda: tiny_hf_config("bert", 32, decoder=True)),
    "beit2bert": (lambda: transformers.BeitConfig(**VIT, use_relative_position_bias=True,
                                                  layer_scale_init_value=0.5),
                  lambda: tiny_hf_config("bert", decoder=True)),
}
SCANNABLE = ("bert2bert", "roberta2gpt2-proj", "vit2trocr", "swin2bert")
VISION = ("vit2trocr", "swin2bert", "beit2bert")


def _hf_config(name: str) -> dict:
  enc, dec = PAIRS[name][0](), PAIRS[name][1]()
  vision = isinstance(enc, (transformers.ViTConfig, transformers.SwinConfig,
                            transformers.BeitConfig))
  cls = transformers.VisionEncoderDecoderConfig if vision else transformers.EncoderDecoderConfig
  cfg = cls.from_encoder_decoder_configs(enc, dec).to_dict()
  cfg.update(decoder_start_token_id=START, eos_token_id=EOS, pad_token_id=PAD)
  return cfg


@functools.lru_cache(maxsize=None)
def built(name: str):
  """(unscanned model, params): random init, then every param seeded noise."""
  model, params = edjax.from_config(_hf_config(name), rng=0)
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(len(name)), len(leaves))
  params = jax.tree_util.tree_unflatten(
      tree, [p + 0.2 * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)])
  return model, params


def variant(name: str, **options):
  """(model with runtime `options`, its params: the noisy params in its layout)."""
  model, params = built(name)
  other = model_for_config(with_runtime_options(model.config, **options))
  return other, stacking.to_scanned(other, params)


def batch(model, rows: int = 3):
  """Encoder inputs (padded ids + mask, or pixels), labels and a padded decoder mask."""
  rng = np.random.default_rng(0)
  if isinstance(model, edjax.VisionEncoderDecoderModel):
    enc = {"pixel_values": rng.normal(size=(rows, 3, 32, 32)).astype(np.float32)}
  else:
    ids = rng.integers(4, model.config.encoder.vocab_size, (rows, 9)).astype(np.int32)
    mask = (np.arange(9)[None] < np.array([9, 6, 3][:rows])[:, None]).astype(np.int32)
    enc = {"input_ids": ids, "attention_mask": mask}
  labels = rng.integers(4, model.config.decoder.vocab_size, (rows, 7)).astype(np.int32)
  labels[1, 5:] = -100
  return enc, labels


def loss_fn(model, params, enc, labels):
  out = model.apply({"params": params}, **enc, labels=labels)
  return out.loss, out.logits


def value_and_grad(model, params, name):
  enc, labels = batch(model)
  fn = jax.jit(jax.value_and_grad(functools.partial(loss_fn, model), has_aux=True))
  (loss, logits), grads = fn(params, enc, labels)
  return float(loss), np.asarray(logits), grads


def max_tree_diff(a, b) -> float:
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.mark.parametrize("name", SCANNABLE)
def test_scanned_equals_unscanned_logits_loss_and_per_layer_outputs(name):
  model, params = built(name)
  scanned, stacked = variant(name, scan_layers=True)
  flat = traverse_util.flatten_dict(stacked, sep="/")
  assert any("/layers/" in k for k in flat)
  if name == "swin2bert":  # stages stay layers_i; their blocks are stacked in (even, odd) pairs
    assert any("/block_pairs/odd/" in k for k in flat) and not any("/blocks_" in k for k in flat)
    assert not any("/layers_0/" in k for k in flat if k.startswith("decoder/"))
  else:
    assert not any("/layers_0/" in k for k in flat)
  enc, labels = batch(model)
  outs = [m.apply({"params": p}, **enc, labels=labels, output_hidden_states=True,
                  output_attentions=True) for m, p in ((model, params), (scanned, stacked))]
  np.testing.assert_allclose(outs[1].logits, outs[0].logits, atol=1e-5, rtol=0)
  assert abs(float(outs[1].loss) - float(outs[0].loss)) <= 1e-5
  for key in ("decoder_hidden_states", "decoder_attentions", "cross_attentions",
              "encoder_hidden_states"):
    a, b = getattr(outs[0], key), getattr(outs[1], key)
    assert len(a) == len(b), key  # per-layer tuples, scanned or not
    assert max_tree_diff(a, b) <= 1e-5, key
  assert stacking.to_unscanned(scanned, stacked).keys() == params.keys()
  assert max_tree_diff(stacking.to_unscanned(scanned, stacked), params) == 0.0


@pytest.mark.parametrize("name", ["bert2bert", "roberta2gpt2-proj", "swin2bert"])
def test_scanned_bfloat16_compute_equals_unscanned(name):
  """bf16 compute, fp32 params: a post-LN stack's layers return fp32 (LayerNorm), a pre-LN
  one's keep the input's dtype; the scan carry must take the dtype the layers return."""
  model, params = built(name)
  scanned, stacked = variant(name, scan_layers=True)
  enc, labels = batch(model)
  fp32 = np.asarray(model.apply({"params": params}, **enc, labels=labels).logits)
  errors = []
  for m, p in ((model, params), (scanned, stacked)):
    logits = model_for_config(m.config, dtype=jnp.bfloat16).apply({"params": p}, **enc,
                                                                  labels=labels).logits
    assert logits.dtype == jnp.float32
    errors.append(float(np.max(np.abs(np.asarray(logits) - fp32))))
  # Not bit-identical (the first layer's residual add rounds differently, fusions differ): the
  # scanned stack must be as close to the fp32 logits as the unscanned one (bf16's own error,
  # ~1.5 % of the largest logit for these noisy tiny weights), and that error must be bf16-sized.
  assert errors[1] <= 1.25 * errors[0], errors
  assert errors[0] <= 0.03 * float(np.max(np.abs(fp32))), errors


@pytest.mark.parametrize("name", ["bert2bert", "roberta2gpt2-proj", "swin2bert", "beit2bert"])
def test_remat_gradients_equal_no_remat(name, full_xla_optimization):
  if full_xla_optimization:  # 1e-6 on gradients: -O0's rounding is not that tight
    return
  model, params = built(name)
  loss, logits, grads = value_and_grad(model, params, name)
  policies = ("full", "dots") if name == "bert2bert" else ("full",)
  for policy in policies:
    other, same = variant(name, remat=policy)
    assert other.config.encoder.remat == other.config.decoder.remat == policy
    got_loss, got_logits, got_grads = value_and_grad(other, same, name)
    assert abs(got_loss - loss) <= 1e-6
    assert max_tree_diff(got_grads, grads) <= 1e-6, policy
  if name in SCANNABLE:  # remat inside scan
    other, stacked = variant(name, remat="full", scan_layers=True)
    _, _, got = value_and_grad(other, stacked, name)
    assert max_tree_diff(stacking.to_unscanned(other, got), grads) <= 1e-6


def test_remat_really_recomputes():
  """The remat'ed backward pass holds a checkpoint (remat) primitive; the plain one has none."""
  model, _ = built("bert2bert")
  enc, labels = batch(model)
  for policy, want in (("none", False), ("full", True)):
    other, same = variant("bert2bert", remat=policy)
    grad_fn = jax.grad(lambda p, m=other: loss_fn(m, p, enc, labels)[0])
    jaxpr = jax.make_jaxpr(grad_fn)(same)
    assert ("remat" in str(jaxpr) or "checkpoint" in str(jaxpr)) == want, policy


@pytest.mark.parametrize("name", ["bert2bert", "roberta2gpt2-proj"])
def test_decode_with_the_scanned_cache_generates_the_same(name):
  model, params = built(name)
  scanned, stacked = variant(name, scan_layers=True)
  enc, _ = batch(model)
  cache = scanned.init_cache(6, 8)
  key = next(v for k, v in traverse_util.flatten_dict(cache, sep="/").items()
             if k.endswith("cached_key"))
  assert (key.shape[0], key.shape[-1]) == (6, 8)  # batch-major, max_len last, as unscanned
  for settings in (dict(num_beams=1), dict(num_beams=3, length_penalty=0.7),
                   dict(num_beams=2, num_return_sequences=2)):
    want = edjax.generate(model, params, **enc, max_length=8, **settings)
    got = edjax.generate(scanned, stacked, **enc, max_length=8, **settings)
    np.testing.assert_array_equal(np.asarray(got.sequences), np.asarray(want.sequences))


def _hf_model(name: str):
  """The noisy params as a transformers model (through the unscanned export)."""
  cfg = _hf_config(name)
  cls = (transformers.VisionEncoderDecoderConfig if name in VISION
         else transformers.EncoderDecoderConfig)
  model_cls = (transformers.VisionEncoderDecoderModel if name in VISION
               else transformers.EncoderDecoderModel)
  return cls.from_dict(cfg), model_cls


@pytest.mark.parametrize("name", ["bert2bert", "roberta2gpt2-proj", "vit2trocr", "swin2bert"])
def test_hf_checkpoint_loads_into_and_exports_from_the_scanned_layout(name, tmp_path):
  model, params = built(name)
  plain_dir, scanned_dir = str(tmp_path / "plain"), str(tmp_path / "scanned")
  edjax.save_pretrained(model, params, plain_dir)
  scanned, loaded = edjax.from_pretrained(plain_dir, scan_layers=True)
  assert scanned.config.encoder.scan_layers or name not in VISION
  assert scanned.config.decoder.scan_layers
  assert max_tree_diff(loaded, stacking.to_scanned(scanned, params)) == 0.0
  edjax.save_pretrained(scanned, loaded, scanned_dir)
  with open(os.path.join(scanned_dir, "config.json")) as f:
    assert "scan_layers" not in json.dumps(json.load(f))
  want = edjax.convert.read_state_dict(plain_dir)
  got = edjax.convert.read_state_dict(scanned_dir)
  assert sorted(got) == sorted(want)
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  # transformers loads the scanned run's export, with no missing keys, and agrees on the logits.
  _, model_cls = _hf_model(name)
  hf, info = model_cls.from_pretrained(scanned_dir, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"]
  enc, labels = batch(model)
  dec_in = np.asarray(losses.shift_tokens_right(jnp.asarray(labels), PAD, START))
  ours = scanned.apply({"params": loaded}, **enc, decoder_input_ids=dec_in).logits
  with torch.no_grad():
    theirs = hf.eval()(**{k: torch.from_numpy(v) for k, v in enc.items()},
                       decoder_input_ids=torch.from_numpy(dec_in).long()).logits
  np.testing.assert_allclose(np.asarray(ours), to_np(theirs), atol=1e-4, rtol=0)
  # An edjax export of the scanned model is the unscanned tree: loads plain or scanned.
  export_dir = str(tmp_path / "export")
  edjax.export_params(scanned, loaded, export_dir)
  plain_again, plain_params = edjax.from_pretrained(export_dir)
  assert not plain_again.config.decoder.scan_layers
  assert max_tree_diff(plain_params, params) == 0.0
  _, scanned_params = edjax.from_pretrained(export_dir, scan_layers=True)
  assert max_tree_diff(scanned_params, loaded) == 0.0


def test_warm_start_into_the_scanned_layout(tmp_path):
  """from_encoder_decoder_pretrained of two single-model dirs with scan on == with scan off."""
  torch.manual_seed(0)
  enc_dir, dec_dir = str(tmp_path / "enc"), str(tmp_path / "dec")
  transformers.BertModel(tiny_hf_config("bert")).save_pretrained(enc_dir)
  transformers.BertLMHeadModel(tiny_hf_config("bert", decoder=True)).save_pretrained(dec_dir)
  model, params = edjax.from_encoder_decoder_pretrained(enc_dir, dec_dir, rng=3)
  scanned, stacked = edjax.from_encoder_decoder_pretrained(
      enc_dir, dec_dir, rng=3, encoder_scan_layers=True, decoder_scan_layers=True)
  assert scanned.config.encoder.scan_layers and scanned.config.decoder.scan_layers
  # Checkpoint weights and the fresh cross-attention alike: the unscanned init stacked.
  assert max_tree_diff(stacking.to_unscanned(scanned, stacked), params) == 0.0
  tied, tied_params = edjax.from_encoder_decoder_pretrained(
      enc_dir, dec_dir, tie_encoder_decoder=True, encoder_scan_layers=True,
      decoder_scan_layers=True)
  assert tied.tied_paths and any("/layers/" in d for d, _ in tied.tied_paths)
  plain_tied, plain_tied_params = edjax.from_encoder_decoder_pretrained(
      enc_dir, dec_dir, tie_encoder_decoder=True)
  assert max_tree_diff(stacking.to_unscanned(tied, tied_params), plain_tied_params) == 0.0


def test_unsupported_scan_combinations_are_config_errors():
  gpt2 = tiny_hf_config("gpt2", vocab=101, decoder=True, scale_attn_by_inverse_layer_idx=True)
  cfg = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(
      tiny_hf_config("bert"), gpt2).to_dict()
  cfg.update(decoder_start_token_id=START, eos_token_id=EOS, pad_token_id=PAD)
  model, _ = edjax.from_config(cfg)
  scanned = model_for_config(with_runtime_options(model.config, scan_layers=True))
  with pytest.raises(ConfigError, match="scale_attn_by_inverse_layer_idx"):
    scanned.init(0)
  model, _ = built("beit2bert")
  scanned = model_for_config(with_runtime_options(model.config, scan_layers=True))
  with pytest.raises(ConfigError, match="scan_layers=True is not supported"):
    scanned.init(0)
  # A Swin stage scans (unshifted, shifted) block pairs: an odd depth cannot.
  odd = dict(_hf_config("swin2bert"))
  odd["encoder"] = dict(odd["encoder"], depths=[2, 3])
  model, _ = edjax.from_config(odd)
  scanned = model_for_config(with_runtime_options(model.config, scan_layers=True))
  with pytest.raises(ConfigError, match=r"depths\[1\] = 3 is odd"):
    scanned.init(0)


def _smoke(**model_options):
  config = importlib.import_module("configs.bert2bert").get_config("smoke")
  config.total_steps, config.log_every_steps, config.eval_every_steps = 6, 1, 100
  config.checkpoint_every_steps = 6
  # Dropout off: a scan splits the dropout RNG per layer, so its masks (not their distribution)
  # differ from the unscanned stack's.
  no_dropout = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  config.model.encoder_overrides.update(no_dropout)
  config.model.decoder_overrides.update(no_dropout)
  config.model.update(model_options)
  return config


def _train_losses(workdir: str) -> dict[int, float]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def test_trainer_scanned_run_has_the_unscanned_losses(tmp_path):
  plain, scanned = str(tmp_path / "plain"), str(tmp_path / "scanned")
  train_lib.train_and_evaluate(_smoke(), plain)
  train_lib.train_and_evaluate(_smoke(scan_layers=True, remat="full"), scanned)
  a, b = _train_losses(plain), _train_losses(scanned)
  assert sorted(a) == sorted(b) == list(range(1, 7))
  for step in a:
    assert abs(a[step] - b[step]) <= 1e-5 * abs(a[step]), step
  # The checkpoint holds the stacked params; switching scan off on that workdir is refused.
  with pytest.raises(train_lib.ConfigMismatchError, match="scan_layers"):
    train_lib.train_and_evaluate(_smoke(remat="full"), scanned)


def test_scanned_swin_stage_applies_stochastic_depth_in_training():
  """A scanned Swin stage feeds each block its own drop-path rate (a traced scan input): with
  drop_path_rate 0 a training pass equals the eval pass exactly, with 0.9 it drops branches."""
  model, params = built("swin2bert")
  enc, _ = batch(model)
  for rate in (0.0, 0.9):
    cfg = with_runtime_options(model.config, scan_layers=True)
    cfg = dataclasses.replace(cfg, encoder=cfg.encoder.replace(drop_path_rate=rate))
    scanned = model_for_config(cfg)
    stacked = stacking.to_scanned(scanned, params)
    encode = lambda p, det, m=scanned: m.apply(  # noqa: E731
        {"params": p}, **enc, method="encode", deterministic=det,
        rngs={"dropout": jax.random.PRNGKey(1)}).last_hidden_state
    evaluated, trained = encode(stacked, True), encode(stacked, False)
    assert np.all(np.isfinite(np.asarray(trained)))
    if rate == 0.0:
      np.testing.assert_array_equal(np.asarray(trained), np.asarray(evaluated))
    else:
      assert float(np.max(np.abs(np.asarray(trained) - np.asarray(evaluated)))) > 1e-3


def test_scanned_remat_swin_stage_compiles_to_less_memory():
  """remat inside the scan of a Swin stage's block pairs: the backward pass recomputes one pair
  per loop iteration, so the compiled gradient keeps far fewer activations live than the plain
  stage (the unscanned remat is left to the compiler's scheduler and need not shrink on CPU)."""
  swin = transformers.SwinConfig(image_size=64, patch_size=2, num_channels=3, embed_dim=16,
                                 depths=[8], num_heads=[2], window_size=4, mlp_ratio=4.0)
  cfg = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(
      swin, tiny_hf_config("bert", 16, decoder=True)).to_dict()
  cfg.update(decoder_start_token_id=START, eos_token_id=EOS, pad_token_id=PAD)
  model, _ = edjax.from_config(cfg)
  pixels = jax.ShapeDtypeStruct((4, 3, 64, 64), jnp.float32)
  temporaries = {}
  for options in (dict(), dict(scan_layers=True, remat="full")):
    other = model_for_config(with_runtime_options(model.config, **options))

    def encoder_loss(p, x, m=other):
      return jnp.sum(m.apply({"params": p}, pixel_values=x, method="encode")
                     .last_hidden_state ** 2)
    compiled = jax.jit(jax.grad(encoder_loss)).lower(other.param_shapes(), pixels).compile()
    temporaries[bool(options)] = compiled.memory_analysis().temp_size_in_bytes
  # measured: 75.6 MiB plain, 24.1 MiB scanned + remat (8 blocks of 1024 tokens x 16)
  assert temporaries[True] < 0.5 * temporaries[False], temporaries
