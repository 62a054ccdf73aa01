"""Tests for sam/analysis/landscape.py (end to end: inputs_test.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sam.analysis import landscape


def _params():
  rng = np.random.default_rng(0)
  return {
      'conv': {
          'kernel': jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)
      },
      'dense': {
          'kernel': jnp.asarray(rng.normal(size=(5, 3)) * 0.1, jnp.float32),
          'bias': jnp.ones(3),
      },
  }


def test_direction_filters_have_the_weight_filter_norms():
  params = _params()
  direction = landscape.filter_normalized_direction(jax.random.key(0), params)
  for name, axes in (('conv', (0, 1, 2)), ('dense', (0,))):
    w, d = params[name]['kernel'], direction[name]['kernel']
    np.testing.assert_allclose(
        np.sqrt((np.asarray(d) ** 2).sum(axes)),
        np.sqrt((np.asarray(w) ** 2).sum(axes)),
        rtol=1e-5,
    )
  np.testing.assert_array_equal(direction['dense']['bias'], np.zeros(3))
  with_vectors = landscape.filter_normalized_direction(
      jax.random.key(0), params, include_vectors=True
  )
  assert float(jnp.linalg.norm(with_vectors['dense']['bias'])) == (
      pytest.approx(np.sqrt(3), rel=1e-5)
  )
  # Not a rescaled copy of w: the direction is random.
  assert not np.allclose(direction['conv']['kernel'], params['conv']['kernel'])


def test_loss_surface_on_a_quadratic():
  # L(w) = ||w||^2 / 2 at w = 0 with orthonormal directions: a^2/2 + b^2/2.
  d1 = {'w': jnp.array([1.0, 0.0, 0.0])}
  d2 = {'w': jnp.array([0.0, 1.0, 0.0])}
  a, b = np.linspace(-1, 1, 5), np.linspace(-2, 2, 3)
  loss_fn = lambda p: 0.5 * jnp.sum(p['w'] ** 2)
  surface = landscape.loss_surface(
      loss_fn, {'w': jnp.zeros(3)}, [d1, d2], [a, b]
  )
  np.testing.assert_allclose(
      surface, 0.5 * a[:, None] ** 2 + 0.5 * b[None, :] ** 2, rtol=1e-6
  )
  line = landscape.loss_surface(loss_fn, {'w': jnp.ones(3)}, [d1], [a])
  np.testing.assert_allclose(line, 0.5 * ((1 + a) ** 2 + 2), rtol=1e-6)
  with pytest.raises(ValueError, match='length 1 or 2'):
    landscape.loss_surface(loss_fn, {'w': jnp.zeros(3)}, [d1], [a, b])
