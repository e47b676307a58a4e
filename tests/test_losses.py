"""edjax.shift_tokens_right / edjax.seq2seq_loss against their PyTorch / transformers references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers.models.encoder_decoder.modeling_encoder_decoder import (
    shift_tokens_right as hf_shift_tokens_right)

import edjax

VOCAB = 13


def _labels(seed: int, batch: int = 3, length: int = 7, ignore_frac: float = 0.3) -> np.ndarray:
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, VOCAB, (batch, length)).astype(np.int32)
  labels[rng.random((batch, length)) < ignore_frac] = -100
  labels[0, -2:] = -100  # a right-padded row
  labels[1, 0] = -100  # an ignored first label (it moves to position 1 when shifted)
  return labels


def _logits(seed: int, shape) -> np.ndarray:
  return (3.0 * np.random.default_rng(seed).standard_normal((*shape, VOCAB))).astype(np.float32)


def _torch_loss(logits: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0):
  """(loss, d loss / d logits) of torch's CrossEntropyLoss(ignore_index=-100), fp32."""
  t_logits = torch.tensor(logits, requires_grad=True)
  loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100, label_smoothing=label_smoothing)
  loss = loss_fn(t_logits.reshape(-1, VOCAB), torch.tensor(labels, dtype=torch.long).reshape(-1))
  loss.backward()
  return float(loss.detach()), t_logits.grad.numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("pad,start", [(0, 2), (1, 0), (5, 5)])
def test_shift_tokens_right_matches_transformers(seed, pad, start):
  labels = _labels(seed)
  want = hf_shift_tokens_right(torch.tensor(labels, dtype=torch.long), pad, start).numpy()
  got = edjax.shift_tokens_right(jnp.asarray(labels), pad, start)
  assert got.dtype == jnp.int32 and got.shape == labels.shape
  np.testing.assert_array_equal(np.asarray(got), want)
  assert np.all(np.asarray(got)[:, 0] == start) and not np.any(np.asarray(got) == -100)
  jitted = jax.jit(edjax.shift_tokens_right, static_argnums=(1, 2))
  np.testing.assert_array_equal(np.asarray(jitted(labels, pad, start)), want)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.25, 0.9])
def test_seq2seq_loss_matches_torch(label_smoothing):
  labels = _labels(3)
  logits = _logits(4, labels.shape)
  want, want_grad = _torch_loss(logits, labels, label_smoothing)
  loss_fn = lambda x: edjax.seq2seq_loss(x, jnp.asarray(labels), label_smoothing)  # noqa: E731
  got, grad = jax.value_and_grad(loss_fn)(jnp.asarray(logits))
  assert got.dtype == jnp.float32 and got.shape == ()
  np.testing.assert_allclose(float(got), want, atol=1e-6, rtol=0)
  np.testing.assert_allclose(np.asarray(grad), want_grad, atol=1e-6, rtol=0)
  assert np.all(np.asarray(grad)[labels == -100] == 0)  # ignored positions get no gradient
  np.testing.assert_allclose(float(jax.jit(loss_fn)(jnp.asarray(logits))), want, atol=1e-6, rtol=0)


def test_label_smoothing_changes_the_loss():
  labels = _labels(5)
  logits = _logits(6, labels.shape)
  plain = float(edjax.seq2seq_loss(jnp.asarray(logits), jnp.asarray(labels)))
  smoothed = float(edjax.seq2seq_loss(jnp.asarray(logits), jnp.asarray(labels), 0.1))
  assert abs(plain - smoothed) > 1e-3
  np.testing.assert_allclose(plain, _torch_loss(logits, labels)[0], atol=1e-6, rtol=0)


def test_loss_counts_for_exact_micro_batch_averaging():
  labels = _labels(7, batch=4)
  logits = _logits(8, labels.shape)
  full = float(edjax.seq2seq_loss(jnp.asarray(logits), jnp.asarray(labels)))
  total, count = 0.0, 0
  for rows in (slice(0, 1), slice(1, 4)):  # unequal token counts per micro-batch
    s, c = edjax.seq2seq_loss(jnp.asarray(logits[rows]), jnp.asarray(labels[rows]),
                              return_count=True)
    total, count = total + float(s), count + int(c)
  assert count == int((labels != -100).sum())
  np.testing.assert_allclose(total / count, full, atol=1e-6, rtol=0)
  np.testing.assert_allclose(full, _torch_loss(logits, labels)[0], atol=1e-6, rtol=0)


def test_all_ignored_batch_gives_zero_loss_and_gradient():
  labels = np.full((2, 4), -100, np.int32)
  logits = _logits(9, labels.shape)
  loss, grad = jax.value_and_grad(
      lambda x: edjax.seq2seq_loss(x, jnp.asarray(labels), 0.1))(jnp.asarray(logits))
  assert float(loss) == 0.0 and np.all(np.asarray(grad) == 0)
  total, count = edjax.seq2seq_loss(jnp.asarray(logits), jnp.asarray(labels), return_count=True)
  assert float(total) == 0.0 and int(count) == 0


def test_bfloat16_logits_are_reduced_in_float32():
  labels = _labels(10)
  logits = jnp.asarray(_logits(11, labels.shape), jnp.bfloat16)
  got = edjax.seq2seq_loss(logits, jnp.asarray(labels), 0.1)
  assert got.dtype == jnp.float32
  want, _ = _torch_loss(np.asarray(logits.astype(jnp.float32)), labels, 0.1)
  np.testing.assert_allclose(float(got), want, atol=1e-6, rtol=0)
