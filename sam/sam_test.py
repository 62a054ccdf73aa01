"""The SAM gradient against closed forms on toy problems."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sam import sam as sam_lib


def quadratic_grad_fn(a, b):
  """L(w) = 0.5 w^T A w + b^T w on a two-leaf pytree {'x': w[:2], 'y': w[2:]}."""

  def loss(params):
    w = jnp.concatenate([params['x'], params['y']])
    return 0.5 * w @ a @ w + b @ w, None

  return jax.value_and_grad(loss, has_aux=True)


def test_perturbation_has_norm_rho_over_all_leaves():
  grads = {'x': jnp.array([3.0, 0.0]), 'y': jnp.array([[4.0]])}
  eps = sam_lib.l2_perturbation(grads, 0.1)
  np.testing.assert_allclose(sam_lib.global_norm(eps), 0.1, rtol=1e-6)
  # Direction of the whole gradient, not per leaf: 3-4-5 triangle.
  np.testing.assert_allclose(eps['x'], [0.06, 0.0], rtol=1e-6)
  np.testing.assert_allclose(eps['y'], [[0.08]], rtol=1e-6)


def test_zero_gradient_gives_zero_perturbation_not_nan():
  grads = {'x': jnp.zeros(3), 'y': jnp.zeros((2, 2))}
  eps = sam_lib.l2_perturbation(grads, 0.05)
  for leaf in jax.tree.leaves(eps):
    assert np.all(np.asarray(leaf) == 0.0)
  # The gradient of the perturbation at 0 is finite too (safe-where).
  jac = jax.jacobian(lambda g: sam_lib.l2_perturbation({'g': g}, 0.05)['g'])(
      jnp.zeros(3))
  assert np.all(np.isfinite(jac))


def test_rho_zero_is_the_plain_gradient():
  rng = np.random.default_rng(0)
  m = rng.normal(size=(4, 4))
  a, b = jnp.array(m @ m.T), jnp.array(rng.normal(size=4))
  grad_fn = quadratic_grad_fn(a, b)
  params = {'x': jnp.array([1.0, -2.0]), 'y': jnp.array([0.5, 3.0])}
  _, g2, g1 = sam_lib.sam_gradient(grad_fn, params, 0.0)
  for leaf2, leaf1 in zip(jax.tree.leaves(g2), jax.tree.leaves(g1)):
    np.testing.assert_array_equal(leaf2, leaf1)


@pytest.mark.parametrize('rho', [0.01, 0.3, 2.0])
def test_quadratic_closed_form(rho):
  # grad L(w) = A w + b, so grad L(w + eps) = A w + b + rho A g / ||g||.
  rng = np.random.default_rng(1)
  m = rng.normal(size=(4, 4))
  a, b = m @ m.T, rng.normal(size=4)
  w = rng.normal(size=4)
  g = a @ w + b
  expected = g + rho * a @ g / np.linalg.norm(g)
  params = {'x': jnp.array(w[:2]), 'y': jnp.array(w[2:])}
  _, g2, _ = sam_lib.sam_gradient(
      quadratic_grad_fn(jnp.array(a), jnp.array(b)), params, rho)
  np.testing.assert_allclose(
      np.concatenate([g2['x'], g2['y']]), expected, rtol=1e-5, atol=1e-6)


def test_first_grad_transform_sets_the_ascent_direction():
  # A transform that flips the first gradient moves eps to -rho g/||g||.
  a, b = jnp.eye(4) * 2.0, jnp.ones(4)
  params = {'x': jnp.array([1.0, 0.0]), 'y': jnp.array([0.0, 1.0])}
  grad_fn = quadratic_grad_fn(a, b)
  _, g2, g1 = sam_lib.sam_gradient(
      grad_fn, params, 0.5,
      first_grad_transform=lambda g: jax.tree.map(jnp.negative, g))
  g = np.concatenate([g1['x'], g1['y']])
  np.testing.assert_allclose(np.concatenate([g2['x'], g2['y']]),
                             g - 0.5 * 2.0 * g / np.linalg.norm(g), rtol=1e-6)


def test_ascent_grad_fn_gives_the_direction_and_the_kept_aux():
  a, b = jnp.eye(4), jnp.zeros(4)

  def aux_grad_fn(tag, scale):
    def loss(params):
      w = jnp.concatenate([params['x'], params['y']])
      return scale * 0.5 * w @ a @ w, tag
    return jax.value_and_grad(loss, has_aux=True)

  params = {'x': jnp.array([1.0, 0.0]), 'y': jnp.array([0.0, 0.0])}
  (_, aux), g2, g1 = sam_lib.sam_gradient(
      aux_grad_fn('descent', 1.0), params, 0.5,
      ascent_grad_fn=aux_grad_fn('ascent', 3.0))
  assert aux == 'ascent'  # Loss and aux of the first (unperturbed) pass.
  np.testing.assert_allclose(g1['x'], [3.0, 0.0])
  # eps = 0.5 * e1; descent gradient of 0.5||w||^2 at w + eps.
  np.testing.assert_allclose(g2['x'], [1.5, 0.0], rtol=1e-6)
