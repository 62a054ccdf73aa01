"""Tests for data/mixup.py."""

import jax
import numpy as np
import pytest

from data import mixup


@jax.jit
def _mixup_and_params(key, images, labels):
  """One compilation (Beta sampling compiles slowly) for the tests below."""
  return (
      mixup.mixup(key, images, labels, 0.2),
      mixup.mixup_params(key, images.shape[0], 0.2),
  )


def _batch(batch=8, classes=5):
  rng = np.random.default_rng(0)
  images = rng.normal(size=(batch, 4, 4, 3)).astype(np.float32)
  labels = np.eye(classes, dtype=np.float32)[np.arange(batch) % classes]
  return images, labels


def test_matches_independent_numpy_mixing():
  images, labels = _batch()
  key = jax.random.PRNGKey(3)
  (out_images, out_labels), params = _mixup_and_params(key, images, labels)
  lam, perm = map(np.asarray, params)
  assert 0.0 <= lam <= 1.0 and sorted(perm) == list(range(8))
  np.testing.assert_allclose(
      out_images, lam * images + (1 - lam) * images[perm], rtol=1e-6, atol=1e-6
  )
  np.testing.assert_allclose(
      out_labels, lam * labels + (1 - lam) * labels[perm], rtol=1e-6, atol=1e-6
  )
  np.testing.assert_allclose(np.asarray(out_labels).sum(1), 1.0, rtol=1e-6)
  assert out_images.dtype == np.float32 and out_images.shape == images.shape


def test_deterministic_per_key():
  images, labels = _batch()
  key = jax.random.PRNGKey(0)
  a, _ = _mixup_and_params(key, images, labels)
  b, _ = _mixup_and_params(key, images, labels)
  c, _ = _mixup_and_params(jax.random.PRNGKey(1), images, labels)
  np.testing.assert_array_equal(a[0], b[0])
  assert not np.allclose(a[0], c[0])


def test_lambda_follows_beta_moments():
  # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)) = 0.1786 for a = 0.2.
  keys = jax.random.split(jax.random.PRNGKey(0), 4000)
  lams = np.asarray(
      jax.jit(jax.vmap(lambda k: mixup.mixup_params(k, 4, 0.2)[0]))(keys)
  )
  assert abs(lams.mean() - 0.5) < 0.02
  assert abs(lams.var() - 1 / (4 * 1.4)) < 0.01


def test_alpha_zero_is_identity_and_bad_input():
  images, labels = _batch()
  out = mixup.mixup(jax.random.PRNGKey(0), images, labels, 0.0)
  np.testing.assert_array_equal(out[0], images)
  np.testing.assert_array_equal(out[1], labels)
  with pytest.raises(ValueError, match='alpha'):
    mixup.mixup(jax.random.PRNGKey(0), images, labels, -1.0)
  with pytest.raises(ValueError, match='labels'):
    mixup.mixup(jax.random.PRNGKey(0), images, labels.argmax(1), 1.0)


def test_partners_are_a_random_permutation_not_the_reversed_batch():
  # The official code mixes each example with the reversed batch; ours
  # draws a permutation for each batch, as Zhang et al. (2018).
  images, labels = _batch()
  perms = {
      np.asarray(
          _mixup_and_params(jax.random.PRNGKey(i), images, labels)[1][1]
      ).tobytes()
      for i in range(4)
  }
  assert len(perms) == 4
