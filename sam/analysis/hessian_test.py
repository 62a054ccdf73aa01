"""Tests for sam/analysis/hessian.py on quadratics with a known spectrum."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sam.analysis import hessian

DIM = 300
# Five separated outliers above a bulk in [-0.2, 1], like a trained network's
# Hessian (Ghorbani et al., 2019): the outliers are what Lanczos must recover.
TOP = np.array([20.0, 12.0, 8.0, 5.0, 3.0])


def _spectrum():
  bulk = np.linspace(-0.2, 1.0, DIM - TOP.size)
  return np.concatenate([TOP, bulk])


def _quadratic():
  """0.5 w^T H w on a {'a': [200], 'b': [10, 10]} pytree, H = Q diag Q^T."""
  eigenvalues = _spectrum()
  rotation, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(DIM, DIM)))
  matrix = jnp.asarray((rotation * eigenvalues) @ rotation.T, jnp.float32)

  def loss_fn(params):
    flat = jnp.concatenate([params['a'], params['b'].reshape(-1)])
    return 0.5 * flat @ matrix @ flat

  params = {'a': jnp.ones(200), 'b': jnp.full((10, 10), 0.5)}
  return loss_fn, params, eigenvalues, np.asarray(matrix)


def test_flat_hvp_matches_dense_hessian():
  loss_fn, params, _, matrix = _quadratic()
  matvec, dim = hessian.flat_hvp(loss_fn, params)
  v = np.random.default_rng(1).normal(size=dim).astype(np.float32)
  np.testing.assert_allclose(matvec(v), matrix @ v, rtol=1e-4, atol=1e-4)


def test_dataset_hvp_is_example_weighted_mean_of_batches():
  # loss(w, batch) = mean_i 0.5 * (x_i . w)^2, so H = X^T X / n overall.
  x = np.random.default_rng(2).normal(size=(10, 4)).astype(np.float32)
  batches = [{'x': x[:6]}, {'x': x[6:]}]  # Unequal sizes.

  def loss_fn(params, batch):
    return 0.5 * jnp.mean((batch['x'] @ params['w']) ** 2)

  matvec, _ = hessian.dataset_hvp(loss_fn, {'w': jnp.zeros(4)}, batches)
  v = np.arange(4, dtype=np.float32)
  np.testing.assert_allclose(matvec(v), x.T @ x @ v / 10, rtol=1e-5)


def test_lanczos_recovers_top_eigenvalues_to_1e_3():
  loss_fn, params, eigenvalues, _ = _quadratic()
  matvec, dim = hessian.flat_hvp(loss_fn, params)
  estimate = hessian.stochastic_lanczos_quadrature(
      matvec, dim, jax.random.key(0), order=60, num_draws=3
  )
  top = hessian.top_eigenvalues(estimate, 5)
  np.testing.assert_allclose(top, TOP, rtol=1e-3)
  summary = hessian.spectrum_summary(estimate)
  assert summary['lambda_max'] == pytest.approx(20.0, rel=1e-3)
  assert summary['lambda_max_over_lambda_5'] == pytest.approx(20 / 3, rel=2e-3)
  # The smallest eigenvalue is an extreme one too, so it converges as well.
  assert summary['lambda_min'] == pytest.approx(-0.2, abs=2e-3)


def test_density_has_unit_mass_and_the_spectrum_mean():
  loss_fn, params, eigenvalues, _ = _quadratic()
  matvec, dim = hessian.flat_hvp(loss_fn, params)
  num_draws = 30
  estimate = hessian.stochastic_lanczos_quadrature(
      matvec, dim, jax.random.key(1), order=20, num_draws=num_draws
  )
  for weights in estimate.weights:
    assert weights.sum() == pytest.approx(1.0, abs=1e-6)
  grid, sigma = hessian.density_grid(estimate, num_points=4000)
  density = hessian.spectral_density(estimate, grid, sigma)
  assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=1e-4)
  # Each draw's mean is v^T H v for a random unit v, an unbiased estimate of
  # trace(H) / dim with standard deviation std(eigenvalues) * sqrt(2 / (dim +
  # 2)); allow four standard errors of the average over the draws.
  tolerance = 4 * eigenvalues.std() * np.sqrt(2 / (dim + 2) / num_draws)
  mean = eigenvalues.mean()
  summary = hessian.spectrum_summary(estimate)
  assert summary['mean_eigenvalue'] == pytest.approx(mean, abs=tolerance)
  first_moment = np.trapezoid(grid * density, grid)
  assert first_moment == pytest.approx(summary['mean_eigenvalue'], abs=1e-4)


def test_full_order_lanczos_reproduces_exact_spectrum():
  # With order = dim the quadrature nodes are exactly the eigenvalues.
  eigenvalues = np.array([4.0, 2.5, 1.0, 0.5, -1.0, 3.0])
  matrix = jnp.diag(jnp.asarray(eigenvalues, jnp.float32))
  v0 = jnp.ones(6)
  nodes, weights = hessian.gauss_quadrature(
      *hessian.lanczos(lambda v: matrix @ v, v0, order=6)
  )
  np.testing.assert_allclose(nodes, np.sort(eigenvalues), atol=1e-5)
  np.testing.assert_allclose(weights, np.full(6, 1 / 6), atol=1e-5)


def test_lanczos_stops_on_invariant_subspace():
  # A start vector in a 2-dimensional eigenspace exhausts it after 2 steps.
  matrix = jnp.diag(jnp.array([1.0, 2.0, 3.0, 4.0]))
  alphas, betas = hessian.lanczos(
      lambda v: matrix @ v, jnp.array([1.0, 1.0, 0.0, 0.0]), order=4
  )
  assert alphas.size == 2 and betas.size == 1
  nodes, weights = hessian.gauss_quadrature(alphas, betas)
  np.testing.assert_allclose(nodes, [1.0, 2.0], atol=1e-5)
  np.testing.assert_allclose(weights, [0.5, 0.5], atol=1e-5)


def test_json_round_trip_and_bad_order():
  estimate = hessian.SpectrumEstimate(
      [np.array([1.0, 2.0])], [np.array([0.25, 0.75])]
  )
  back = hessian.estimate_from_json(hessian.estimate_to_json(estimate))
  np.testing.assert_array_equal(back.nodes[0], estimate.nodes[0])
  with pytest.raises(ValueError, match='order'):
    hessian.lanczos(lambda v: v, jnp.ones(3), order=4)
