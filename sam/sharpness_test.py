"""Tests for sam/sharpness.py against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sam import sharpness


def _logistic_problem():
  """Logistic regression on fixed random data; a curved, non-quadratic loss."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(32, 5)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 2, size=32), jnp.float32)

  def loss_fn(params):
    logits = jnp.tanh(x @ params['w1']) @ params['w2'] + params['b']
    return jnp.mean(jnp.logaddexp(0.0, logits) - y * logits)

  params = {
      'w1': jnp.asarray(rng.normal(size=(5, 4)), jnp.float32),
      'w2': jnp.asarray(rng.normal(size=(4,)), jnp.float32),
      'b': jnp.zeros(()),
  }
  return loss_fn, params


def _norm(tree):
  return jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(tree)))


@pytest.mark.parametrize('num_steps', [1, 3])
def test_zero_radius_gives_zero(num_steps):
  loss_fn, params = _logistic_problem()
  result = sharpness.sharpness(loss_fn, params, rho=0.0, num_steps=num_steps)
  assert float(result.sharpness) == 0.0
  assert float(_norm(result.eps)) == 0.0


def test_monotone_in_steps_and_inside_ball():
  loss_fn, params = _logistic_problem()
  rho = 0.5
  values = []
  for num_steps in range(7):
    result = sharpness.sharpness(loss_fn, params, rho, num_steps)
    values.append(float(result.sharpness))
    assert float(_norm(result.eps)) <= rho * (1 + 1e-6)
    # The reported value is the loss at the reported eps.
    shifted = loss_fn(jax.tree.map(jnp.add, params, result.eps))
    assert float(shifted - result.loss) == pytest.approx(values[-1], abs=1e-6)
  assert values[0] == 0.0
  assert values[1] > 0.0
  assert all(b >= a for a, b in zip(values, values[1:])), values
  assert values[-1] > values[1]  # More steps find a higher loss here.


def test_one_step_is_sams_perturbation():
  loss_fn, params = _logistic_problem()
  rho = 0.05
  grads = jax.grad(loss_fn)(params)
  norm = _norm(grads)
  sam_eps = jax.tree.map(lambda g: rho * g / norm, grads)
  expected = loss_fn(jax.tree.map(jnp.add, params, sam_eps)) - loss_fn(params)
  result = sharpness.sharpness(loss_fn, params, rho, 1)
  assert float(result.sharpness) == pytest.approx(float(expected), rel=1e-5)


def test_quadratic_at_minimum_gives_half_rho_squared_lambda_max():
  eigenvalues = np.array([6.0, 3.0, 1.0, 0.5, 0.1])
  rotation, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(5, 5)))
  hessian = jnp.asarray((rotation * eigenvalues) @ rotation.T, jnp.float32)
  center = jnp.asarray([1.0, -2.0, 0.5, 0.0, 3.0])

  def loss_fn(w):
    return 0.5 * (w - center) @ hessian @ (w - center)

  rho = 0.3
  # The gradient vanishes at the minimum, so the ascent needs a random start.
  result = sharpness.sharpness(
      loss_fn, center, rho, num_steps=60, key=jax.random.key(0)
  )
  assert float(result.sharpness) == pytest.approx(rho**2 * 6.0 / 2, rel=1e-4)
  # Without a random start there is no ascent direction: 0, not NaN.
  assert float(sharpness.sharpness(loss_fn, center, rho, 5).sharpness) == 0.0


def test_linear_plus_quadratic_in_one_dimension():
  # L(w) = a w + h w^2 / 2: the max over |e| <= rho is |a| rho + h rho^2 / 2,
  # reached in one step.
  a, h, rho = -1.5, 2.0, 0.2
  result = sharpness.sharpness(
      lambda w: a * w + 0.5 * h * w**2, jnp.zeros(()), rho, 1
  )
  expected = abs(a) * rho + h * rho**2 / 2
  assert float(result.sharpness) == pytest.approx(expected, rel=1e-6)


def _least_squares_sharpness(x, r, rho):
  """max_{||e|| <= rho} g.e + e.H e / 2 for L(w) = mean (x_i.w - y_i)^2 / 2.

  An independent float64 solution of the trust-region problem: the maximiser
  is e = (mu I - H)^-1 g with mu > lambda_max(H) chosen by bisection so that
  ||e|| = rho.
  """
  m = len(r)
  hessian, grad = x.T @ x / m, x.T @ r / m
  top = np.linalg.eigvalsh(hessian)[-1]
  low, high = top, top + np.linalg.norm(grad) / rho + 1.0
  for _ in range(200):
    mu = 0.5 * (low + high)
    e = np.linalg.solve(mu * np.eye(len(grad)) - hessian, grad)
    low, high = (mu, high) if np.linalg.norm(e) > rho else (low, mu)
  return grad @ e + 0.5 * e @ hessian @ e


@pytest.mark.parametrize('m', [1, 4, 12])
def test_m_sharpness_matches_trust_region_solution(m):
  rng = np.random.default_rng(2)
  x = rng.normal(size=(12, 6))
  y = rng.normal(size=12)
  w = rng.normal(size=6) * 0.3
  rho = 0.1

  def loss_fn(params, batch):
    return 0.5 * jnp.mean((batch['x'] @ params - batch['y']) ** 2)

  batch = {'x': jnp.asarray(x, jnp.float32), 'y': jnp.asarray(y, jnp.float32)}
  value = sharpness.m_sharpness(
      loss_fn,
      jnp.asarray(w, jnp.float32),
      batch,
      m,
      rho,
      num_steps=50,
      subsets_per_call=2,
  )
  residual = x @ w - y
  expected = np.mean(
      [
          _least_squares_sharpness(x[i : i + m], residual[i : i + m], rho)
          for i in range(0, 12, m)
      ]
  )
  assert float(value) == pytest.approx(expected, rel=1e-4)
  if m == 1:  # Rank one: |r| rho ||x|| + rho^2 ||x||^2 / 2 per example.
    norms = np.linalg.norm(x, axis=1)
    closed = np.mean(np.abs(residual) * rho * norms + 0.5 * rho**2 * norms**2)
    assert float(value) == pytest.approx(closed, rel=1e-4)


def test_bad_inputs():
  loss_fn, params = _logistic_problem()
  with pytest.raises(ValueError, match='rho'):
    sharpness.sharpness(loss_fn, params, rho=-1.0)
  with pytest.raises(ValueError, match='m must'):
    sharpness.split_into_subsets({'x': jnp.zeros((10, 2))}, 4)
