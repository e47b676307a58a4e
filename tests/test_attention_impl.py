"""attention_impl='xla' (jax.nn.dot_product_attention) against the einsum oracle, every family.

Each family is a tiny random edjax model (edjax.from_config on a transformers config dict, every
param then seeded noise so the attention is far from uniform). Forward logits, the training loss
and its gradients agree to 1e-5 in fp32; decoding (the static cache, grouped beam queries on the
shared cross-attention K/V) gives the same sequences. 'cudnn' on a CPU process is a ConfigError.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers

import edjax
from edjax import losses
from edjax.model_configs import ConfigError, with_runtime_options
from edjax.models import attention, layers
from edjax.models.encoder_decoder import model_for_config
from edjax.testing.hf_utils import tiny_hf_config

TOL = 1e-5
EOS, START = 3, 2
VIT = dict(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
           num_attention_heads=4, intermediate_size=37)
SWIN = dict(image_size=32, patch_size=4, num_channels=3, embed_dim=16, depths=[2, 2],
            num_heads=[2, 4], window_size=4, mlp_ratio=2.0)
TROCR = dict(vocab_size=99, d_model=32, decoder_layers=2, decoder_attention_heads=4,
             decoder_ffn_dim=37, max_position_embeddings=64, pad_token_id=1, bos_token_id=START,
             eos_token_id=EOS, decoder_start_token_id=START, is_decoder=True,
             add_cross_attention=True)

# name: (encoder config, decoder config); every encoder and decoder family at least once.
FAMILIES = {
    "bert2bert": (lambda: tiny_hf_config("bert"), lambda: tiny_hf_config("bert", decoder=True)),
    "roberta2gpt2": (lambda: tiny_hf_config("roberta"),
                     lambda: tiny_hf_config("gpt2", 48, vocab=101, decoder=True)),
    "electra2bert-generation": (lambda: tiny_hf_config("electra"),
                                lambda: tiny_hf_config("bert-generation", decoder=True)),
    "bert2electra": (lambda: tiny_hf_config("bert"),
                     lambda: tiny_hf_config("electra", decoder=True)),
    "bert2bart": (lambda: tiny_hf_config("bert"), lambda: tiny_hf_config("bart", decoder=True)),
    "vit2mbart": (lambda: transformers.ViTConfig(**VIT),
                  lambda: tiny_hf_config("mbart", decoder=True)),
    "deit2trocr": (lambda: transformers.DeiTConfig(**VIT), lambda: transformers.TrOCRConfig(**TROCR)),
    "beit2roberta": (lambda: transformers.BeitConfig(**VIT, use_relative_position_bias=True),
                     lambda: tiny_hf_config("roberta", decoder=True)),
    "swin2bert": (lambda: transformers.SwinConfig(**SWIN),
                  lambda: tiny_hf_config("bert", 32, decoder=True)),
}


@functools.lru_cache(maxsize=None)
def built(name: str):
  """(einsum model, xla model, params): random init, then every param seeded noise."""
  enc_fn, dec_fn = FAMILIES[name]
  enc, dec = enc_fn(), dec_fn()
  vision = not hasattr(enc, "vocab_size") or isinstance(enc, (transformers.ViTConfig,
                                                                transformers.BeitConfig))
  cls = transformers.VisionEncoderDecoderConfig if vision else transformers.EncoderDecoderConfig
  cfg = cls.from_encoder_decoder_configs(enc, dec).to_dict()
  cfg.update(decoder_start_token_id=START, eos_token_id=EOS, pad_token_id=1)
  model, params = edjax.from_config(cfg, rng=0)
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(len(name)), len(leaves))
  params = jax.tree_util.tree_unflatten(
      tree, [p + 0.2 * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)])
  assert model.config.decoder.attention_impl == "einsum"
  xla = model_for_config(with_runtime_options(model.config, attention_impl="xla"))
  assert xla.config.encoder.attention_impl == xla.config.decoder.attention_impl == "xla"
  return model, xla, params


def batch(model, rows: int = 3):
  """Encoder inputs (right-padded ids + mask, or pixels), labels and a padded decoder mask."""
  rng = np.random.default_rng(0)
  if isinstance(model, edjax.VisionEncoderDecoderModel):
    size = model.config.encoder.image_size
    size = size if isinstance(size, int) else size[0]
    enc = {"pixel_values": rng.normal(size=(rows, 3, size, size)).astype(np.float32)}
  else:
    ids = rng.integers(4, model.config.encoder.vocab_size, (rows, 9)).astype(np.int32)
    mask = (np.arange(9)[None] < np.array([9, 6, 3][:rows])[:, None]).astype(np.int32)
    enc = {"input_ids": ids, "attention_mask": mask}
  labels = rng.integers(4, model.config.decoder.vocab_size, (rows, 7)).astype(np.int32)
  dec_mask = (np.arange(7)[None] < np.array([7, 5, 2][:rows])[:, None]).astype(np.int32)
  dec_in = np.concatenate([np.full((rows, 1), START, np.int32), labels[:, :-1]], axis=1)
  return enc, labels, dec_in, dec_mask


def loss_fn(model, params, enc, labels, dec_in, dec_mask):
  out = model.apply({"params": params}, **enc, decoder_input_ids=dec_in,
                    decoder_attention_mask=dec_mask)
  labels = jnp.where(dec_mask > 0, labels, -100)
  loss, count = losses.seq2seq_loss(out.logits, labels, 0.0, return_count=True)
  return loss / count, out.logits


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_xla_matches_einsum_logits_loss_and_grads(name):
  model, xla, params = built(name)
  enc, labels, dec_in, dec_mask = batch(model)
  results = []
  for m in (model, xla):
    grad_fn = jax.jit(jax.value_and_grad(functools.partial(loss_fn, m), has_aux=True))
    (loss, logits), grads = grad_fn(params, enc, labels, dec_in, dec_mask)
    results.append((loss, logits, grads))
  (loss_e, logits_e, grads_e), (loss_x, logits_x, grads_x) = results
  real = dec_mask > 0  # padded query rows are not part of the contract
  np.testing.assert_allclose(np.asarray(logits_x)[real], np.asarray(logits_e)[real], atol=TOL,
                             rtol=0)
  np.testing.assert_allclose(loss_x, loss_e, atol=TOL, rtol=0)
  chex.assert_trees_all_close(grads_x, grads_e, atol=TOL, rtol=0)
  assert float(np.abs(np.asarray(loss_e))) > 0.0


@pytest.mark.parametrize("name,settings", [
    ("bert2bert", dict(num_beams=3, max_length=8)),
    ("roberta2gpt2", dict(num_beams=4, max_length=8, num_return_sequences=2)),
    ("bert2bart", dict(num_beams=2, max_length=8)),
    ("deit2trocr", dict(num_beams=3, max_length=8)),
    ("swin2bert", dict(max_length=8)),
    ("electra2bert-generation", dict(max_length=8)),
])
def test_xla_generate_matches_einsum(name, settings):
  model, _, params = built(name)
  enc, *_ = batch(model, rows=2)
  ours = edjax.generate(model, params, **enc, **settings)
  theirs = edjax.generate(model, params, **enc, attention_impl="xla", **settings)
  np.testing.assert_array_equal(np.asarray(theirs.sequences), np.asarray(ours.sequences))
  if ours.scores is not None:
    np.testing.assert_allclose(theirs.scores, ours.scores, atol=TOL, rtol=0)
  assert (np.asarray(ours.sequences)[:, 1:] != 1).any()  # something was generated


def test_generate_keyword_reuses_one_variant_and_rejects_unknown():
  model, _, params = built("bert2bert")
  a = edjax.generation.with_attention_impl(model, "xla")
  assert a is edjax.generation.with_attention_impl(model, "xla")
  assert a.config.decoder.attention_impl == "xla" and model.config.decoder.attention_impl == "einsum"
  assert edjax.generation.with_attention_impl(model, "einsum") is model
  enc, *_ = batch(model, rows=1)
  with pytest.raises(ConfigError, match="attention_impl='flash'"):
    edjax.generate(model, params, **enc, max_length=4, attention_impl="flash")


def _qkv(q_batch=6, k_batch=2, q_len=5, k_len=7, heads=4, head_dim=8):
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  q = jax.random.normal(keys[0], (q_batch, q_len, heads, head_dim))
  k = jax.random.normal(keys[1], (k_batch, k_len, heads, head_dim))
  v = jax.random.normal(keys[2], (k_batch, k_len, heads, head_dim))
  bias = jax.random.normal(keys[3], (heads, q_len, k_len))  # 3-D, as BEiT's relative bias
  return q, k, v, bias


@pytest.mark.parametrize("grouped", [False, True])
def test_kernel_xla_matches_einsum_with_mask_bias_and_groups(grouped):
  q, k, v, bias = _qkv(q_batch=6 if grouped else 2, q_len=1 if grouped else 5)
  lengths = np.array([7, 4])
  mask = jnp.asarray(np.arange(7)[None] < lengths[:, None])[:, None, None, :]  # [b, 1, 1, k]
  if not grouped:
    mask = jnp.logical_and(mask, layers.causal_mask(5, 7, offset=2))
    bias_used = bias
  else:
    bias_used = None  # beam steps: a padding mask only
  outs = [attention.dot_product_attention(q, k, v, bias_used, 0.3, None, 0.0, jnp.float32,
                                          mask=mask, impl=impl) for impl in ("einsum", "xla")]
  (out_e, probs_e), (out_x, probs_x) = outs
  chex.assert_shape(out_x, q.shape)
  np.testing.assert_allclose(out_x, out_e, atol=TOL, rtol=0)
  np.testing.assert_allclose(probs_x, probs_e, atol=TOL, rtol=0)
  if grouped:  # row r of the queries attends to K/V row r // 3: masked keys get no weight
    np.testing.assert_array_equal(np.asarray(probs_e)[3:, :, :, 4:], 0.0)


def test_dropout_falls_back_to_einsum_bit_for_bit():
  q, k, v, bias = _qkv(q_batch=2)
  rng = jax.random.PRNGKey(3)
  out_e, _ = attention.dot_product_attention(q, k, v, bias, 0.3, rng, 0.5, jnp.float32)
  out_x, _ = attention.dot_product_attention(q, k, v, bias, 0.3, rng, 0.5, jnp.float32,
                                             impl="xla")
  np.testing.assert_array_equal(out_x, out_e)
  no_drop, _ = attention.dot_product_attention(q, k, v, bias, 0.3, None, 0.0, jnp.float32)
  assert float(jnp.max(jnp.abs(no_drop - out_e))) > 1e-3  # dropout did change the output


def test_cudnn_without_gpu_is_a_config_error_naming_the_device():
  q, k, v, _ = _qkv(q_batch=2)
  with pytest.raises(ConfigError, match="needs a CUDA GPU.*runs on cpu"):
    attention.dot_product_attention(q, k, v, None, 0.3, None, 0.0, jnp.float32, impl="cudnn")
  assert layers.dot_product_attention is attention.dot_product_attention  # the re-export


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_train_loss_fused_cross_entropy_equals_seq2seq_loss(smoothing):
  """edjax.train.loss.summed_token_loss (optax's fused cross-entropy, the train step's loss)
  against losses.seq2seq_loss: value, count and gradient, ignored labels included."""
  from edjax.train.loss import summed_token_loss
  logits = 3.0 * jax.random.normal(jax.random.PRNGKey(1), (3, 5, 11))
  labels = jax.random.randint(jax.random.PRNGKey(2), (3, 5), 0, 11).at[1, 3:].set(-100)
  ours = jax.value_and_grad(lambda x: summed_token_loss(x, labels, smoothing)[0])(logits)
  ref = jax.value_and_grad(
      lambda x: losses.seq2seq_loss(x, labels, smoothing, return_count=True)[0])(logits)
  np.testing.assert_allclose(ours[0], ref[0], atol=TOL, rtol=0)
  np.testing.assert_allclose(ours[1], ref[1], atol=TOL, rtol=0)
  assert int(summed_token_loss(logits, labels)[1]) == 13
  np.testing.assert_array_equal(np.asarray(ours[1])[1, 3:], 0.0)  # ignored rows: no gradient
