"""SAM's perturbation eps and its balls against closed forms."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sam import perturbation as ball

RHO = 0.2
GRADS = {'a': jnp.array([3.0, -1.0, 0.0]), 'b': jnp.array([[0.5, -2.0]])}


def ravel(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def test_perturbation_has_norm_rho_over_all_leaves():
  grads = {'x': jnp.array([3.0, 0.0]), 'y': jnp.array([[4.0]])}
  eps = ball.l2_perturbation(grads, 0.1)
  np.testing.assert_allclose(ball.global_norm(eps), 0.1, rtol=1e-6)
  # Direction of the whole gradient, not per leaf: 3-4-5 triangle.
  np.testing.assert_allclose(eps['x'], [0.06, 0.0], rtol=1e-6)
  np.testing.assert_allclose(eps['y'], [[0.08]], rtol=1e-6)


def test_zero_gradient_gives_zero_perturbation_not_nan():
  grads = {'x': jnp.zeros(3), 'y': jnp.zeros((2, 2))}
  eps = ball.l2_perturbation(grads, 0.05)
  for leaf in jax.tree.leaves(eps):
    assert np.all(np.asarray(leaf) == 0.0)
  # The gradient of the perturbation at 0 is finite too (safe-where).
  jac = jax.jacobian(lambda g: ball.l2_perturbation({'g': g}, 0.05)['g'])(
      jnp.zeros(3)
  )
  assert np.all(np.isfinite(jac))


def test_p_inf_is_rho_sign():
  eps = ball.lp_perturbation(GRADS, RHO, math.inf)
  np.testing.assert_array_equal(
      ravel(eps), RHO * np.sign(ravel(GRADS)).astype(np.float32)
  )


@pytest.mark.parametrize('p', [1.0, 1.5, 2.0, 3.0, 7.0, math.inf])
def test_lp_perturbation_has_norm_rho_and_maximises_the_linearisation(p):
  eps = ravel(ball.lp_perturbation(GRADS, RHO, p))
  g = ravel(GRADS)
  np.testing.assert_allclose(np.linalg.norm(eps, p), RHO, rtol=1e-5)
  # max_{||eps||_p <= rho} eps.g = rho ||g||_q (Hoelder), attained by eq. (2).
  q = 1.0 if p == math.inf else (math.inf if p == 1 else p / (p - 1))
  np.testing.assert_allclose(eps @ g, RHO * np.linalg.norm(g, q), rtol=1e-5)
  # No point of the p-sphere does better.
  rng = np.random.default_rng(0)
  others = rng.normal(size=(2000, g.size))
  others *= RHO / np.linalg.norm(others, p, axis=1, keepdims=True)
  assert np.max(others @ g) <= eps @ g + 1e-6


def test_p2_is_the_closed_form_and_p_near_2_is_close():
  g = ravel(GRADS)
  expected = RHO * g / np.linalg.norm(g)
  np.testing.assert_allclose(
      ravel(ball.lp_perturbation(GRADS, RHO, 2.0)), expected, rtol=1e-6
  )
  # The general-p formula is continuous in p through 2.
  np.testing.assert_allclose(
      ravel(ball.lp_perturbation(GRADS, RHO, 2.0001)), expected, atol=1e-4
  )


def test_p1_puts_rho_on_the_largest_gradient():
  np.testing.assert_allclose(
      ravel(ball.lp_perturbation(GRADS, RHO, 1.0)), [RHO, 0, 0, 0, 0], atol=1e-7
  )


@pytest.mark.parametrize('p', [1.0, 3.0, math.inf])
def test_zero_gradient_gives_zero_perturbation_for_any_p(p):
  eps = ball.lp_perturbation({'x': jnp.zeros(4)}, RHO, p)
  np.testing.assert_array_equal(eps['x'], np.zeros(4))


def test_bad_p_is_refused():
  with pytest.raises(ValueError, match='p must be in'):
    ball.lp_perturbation(GRADS, RHO, 0.5)


def test_asam_perturbation_is_the_closed_form():
  params = {'a': jnp.array([0.5, -2.0, 1.0]), 'b': jnp.array([[0.0, 3.0]])}
  eta = 0.01
  t, g = np.abs(ravel(params)) + eta, ravel(GRADS)
  expected = RHO * t**2 * g / np.linalg.norm(t * g)
  eps = ball.perturbation(GRADS, params, RHO, adaptive=True, adaptive_eta=eta)
  np.testing.assert_allclose(ravel(eps), expected, rtol=1e-6)
  # Its ball is ||eps / T_w|| <= rho.
  np.testing.assert_allclose(np.linalg.norm(ravel(eps) / t), RHO, rtol=1e-6)
  # Scale invariance: scaling w and 1/scaling g (a rescaled layer) scales eps
  # like w (with eta = 0).
  scaled = ball.perturbation(
      jax.tree.map(lambda x: x / 10, GRADS),
      jax.tree.map(lambda x: x * 10, params),
      RHO,
      adaptive=True,
      adaptive_eta=0.0,
  )
  base = ball.perturbation(GRADS, params, RHO, adaptive=True, adaptive_eta=0.0)
  np.testing.assert_allclose(ravel(scaled), 10 * ravel(base), rtol=1e-5)


def test_random_perturbation_has_norm_rho_and_follows_its_key():
  params = {'w': jnp.zeros((5, 4)), 'b': jnp.zeros(4)}
  eps = [
      ball.random_perturbation(jax.random.key(i), params, RHO)
      for i in (0, 0, 1)
  ]
  np.testing.assert_allclose(np.linalg.norm(ravel(eps[0])), RHO, rtol=1e-6)
  np.testing.assert_array_equal(ravel(eps[0]), ravel(eps[1]))
  assert np.max(np.abs(ravel(eps[0]) - ravel(eps[2]))) > 1e-3
  # Random direction: not aligned with any axis.
  assert np.count_nonzero(ravel(eps[0])) == 24


def test_projection_onto_the_balls():
  eps = {'x': jnp.array([3.0, -4.0])}
  np.testing.assert_allclose(
      ball.project(eps, eps, 1.0, p=2)['x'], [0.6, -0.8], rtol=1e-6
  )
  np.testing.assert_allclose(
      ball.project(eps, eps, 1.0, p=math.inf)['x'], [1.0, -1.0]
  )
  inside = {'x': jnp.array([0.3, 0.1])}
  np.testing.assert_allclose(ball.project(inside, inside, 1.0)['x'], [0.3, 0.1])


def test_cosine_similarity():
  a = {'x': jnp.array([1.0, 0.0]), 'y': jnp.array([1.0])}
  b = {'x': jnp.array([1.0, 1.0]), 'y': jnp.array([0.0])}
  np.testing.assert_allclose(ball.cosine_similarity(a, b), 0.5, rtol=1e-6)
  np.testing.assert_allclose(ball.cosine_similarity(a, a), 1.0, rtol=1e-6)
  zero = jax.tree.map(jnp.zeros_like, a)
  assert float(ball.cosine_similarity(a, zero)) == 0.0
