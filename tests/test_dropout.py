"""edjax.models.dropout: the hashed keep masks every family's dropout draws from."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from edjax.models import dropout as D


def test_keep_rate_is_exact_and_masks_differ_by_key():
  shape = (8, 12, 64, 64)  # an attention-probability mask: 393,216 draws
  a, keep_prob = D.keep_mask(jax.random.key(0), 0.1, shape)
  b, _ = D.keep_mask(jax.random.key(1), 0.1, shape)
  a, b = np.asarray(a), np.asarray(b)
  assert a.shape == shape and a.dtype == bool
  assert keep_prob == pytest.approx(0.9, abs=1e-9)
  sigma = np.sqrt(0.9 * 0.1 / a.size)
  assert abs(a.mean() - 0.9) < 5 * sigma, a.mean()
  # Independent keys: agreement is p^2 + (1 - p)^2 = 0.82, not 1 (same mask) or shifted copies.
  assert abs((a == b).mean() - 0.82) < 5 * np.sqrt(0.82 * 0.18 / a.size), (a == b).mean()
  np.testing.assert_array_equal(a, np.asarray(D.keep_mask(jax.random.key(0), 0.1, shape)[0]))


def test_neighbouring_elements_are_independent():
  keep = np.asarray(D.keep_mask(jax.random.key(3), 0.5, (1 << 18,))[0]).astype(np.int64)
  pairs = keep[:-1] * 2 + keep[1:]  # each of the 4 (left, right) outcomes has probability 1/4
  counts = np.bincount(pairs, minlength=4)
  expected = len(pairs) / 4
  chi2 = ((counts - expected) ** 2 / expected).sum()
  assert chi2 < 16.3, counts  # 3 degrees of freedom, p = 0.001
  # Rows of a [rows, 64] mask vary as independent binomials do (no periodic structure by row).
  rows = np.asarray(D.keep_mask(jax.random.key(4), 0.1, (4096, 64))[0])
  assert abs(rows.mean(axis=1).std() - np.sqrt(0.09 / 64)) < 0.01


def test_dropout_keeps_the_expectation_and_broadcasts():
  x = jnp.ones((4, 256, 512), jnp.float32)
  y = D.dropout(x, 0.25, jax.random.key(5))
  chex.assert_shape(y, x.shape)
  assert y.dtype == x.dtype
  values = np.unique(np.asarray(y))
  np.testing.assert_allclose(values, [0.0, 1.0 / 0.75], rtol=1e-6)
  assert abs(float(y.mean()) - 1.0) < 0.01
  rows = D.dropout(x, 0.5, jax.random.key(6), broadcast_dims=(1, 2))  # one draw per example
  per_example = np.asarray(rows).reshape(4, -1)
  assert (per_example == per_example[:, :1]).all()
  half = D.dropout(x.astype(jnp.bfloat16), 0.1, jax.random.key(7))
  assert half.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(D.dropout(x, 1.0, jax.random.key(0))), 0.0)
  assert D.dropout(x, 0.0, jax.random.key(0)) is x
  with pytest.raises(ValueError, match=r"dropout rate must be in \[0, 1\)"):
    D.keep_mask(jax.random.key(0), 1.5, (3,))


def test_module_matches_flax_interface_and_is_deterministic_when_asked():
  layer = D.Dropout(0.3)
  x = jnp.arange(1.0, 1001.0)
  assert layer.apply({}, x, deterministic=True) is x
  a = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(8)})
  b = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(8)})
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  dropped = np.asarray(a) == 0
  assert 0.2 < dropped.mean() < 0.4
  np.testing.assert_allclose(np.asarray(a)[~dropped], np.asarray(x)[~dropped] / 0.7, rtol=1e-6)
  with pytest.raises(Exception, match="dropout"):  # no rng given: flax names the collection
    layer.apply({}, x, deterministic=False)


def test_arrays_past_the_uint32_counter_fall_back_to_threefry(monkeypatch):
  monkeypatch.setattr(D, "_MAX_HASHED_SIZE", 100)
  keep, keep_prob = D.keep_mask(jax.random.key(9), 0.2, (10, 10))
  expected = jax.random.bernoulli(jax.random.key(9), 0.8, (10, 10))
  np.testing.assert_array_equal(np.asarray(keep), np.asarray(expected))
  assert keep_prob == pytest.approx(0.8)
