"""The SAM variants (p-norms, ASAM, random, k-step ascent, second order)
against closed forms and independent computations on toy problems."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from sam import config_checks
from sam import sam as sam_lib

RHO = 0.2


def ravel(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def toy_data(seed):
  rng = np.random.default_rng(seed)
  return jnp.array(rng.normal(size=(6, 3))), jnp.array(rng.normal(size=6))


def toy_loss(params, data):
  """Non-quadratic (its Hessian changes with w), on a two-leaf pytree."""
  x, y = data
  prediction = jnp.tanh(x @ params['w'] + params['b'])
  return jnp.mean((prediction - y) ** 2) + 0.1 * jnp.sum(params['w'] ** 4)


def toy_problem(seed=0):
  """(loss, grad_fn, params) of the toy loss on the data of `seed`."""
  data = toy_data(seed)
  loss = lambda params: toy_loss(params, data)
  params = {'w': jnp.array(np.random.default_rng(seed).normal(size=3)),
            'b': jnp.array(0.1)}
  grad_fn = jax.value_and_grad(lambda p: (loss(p), None), has_aux=True)
  return loss, grad_fn, params


GRADS = {'a': jnp.array([3.0, -1.0, 0.0]), 'b': jnp.array([[0.5, -2.0]])}


def test_p_inf_is_rho_sign():
  eps = sam_lib.lp_perturbation(GRADS, RHO, math.inf)
  np.testing.assert_array_equal(ravel(eps),
                                RHO * np.sign(ravel(GRADS)).astype(np.float32))


@pytest.mark.parametrize('p', [1.0, 1.5, 2.0, 3.0, 7.0, math.inf])
def test_lp_perturbation_has_norm_rho_and_maximises_the_linearisation(p):
  eps = ravel(sam_lib.lp_perturbation(GRADS, RHO, p))
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
  np.testing.assert_allclose(ravel(sam_lib.lp_perturbation(GRADS, RHO, 2.0)),
                             expected, rtol=1e-6)
  # The general-p formula is continuous in p through 2.
  np.testing.assert_allclose(
      ravel(sam_lib.lp_perturbation(GRADS, RHO, 2.0001)), expected, atol=1e-4)


def test_p1_puts_rho_on_the_largest_gradient():
  np.testing.assert_allclose(ravel(sam_lib.lp_perturbation(GRADS, RHO, 1.0)),
                             [RHO, 0, 0, 0, 0], atol=1e-7)


@pytest.mark.parametrize('p', [1.0, 3.0, math.inf])
def test_zero_gradient_gives_zero_perturbation_for_any_p(p):
  eps = sam_lib.lp_perturbation({'x': jnp.zeros(4)}, RHO, p)
  np.testing.assert_array_equal(eps['x'], np.zeros(4))


def test_bad_p_is_refused():
  with pytest.raises(ValueError, match='p must be in'):
    sam_lib.lp_perturbation(GRADS, RHO, 0.5)


def test_asam_perturbation_is_the_closed_form():
  params = {'a': jnp.array([0.5, -2.0, 1.0]), 'b': jnp.array([[0.0, 3.0]])}
  eta = 0.01
  t, g = np.abs(ravel(params)) + eta, ravel(GRADS)
  expected = RHO * t ** 2 * g / np.linalg.norm(t * g)
  eps = sam_lib.perturbation(GRADS, params, RHO, adaptive=True,
                             adaptive_eta=eta)
  np.testing.assert_allclose(ravel(eps), expected, rtol=1e-6)
  # Its ball is ||eps / T_w|| <= rho.
  np.testing.assert_allclose(np.linalg.norm(ravel(eps) / t), RHO, rtol=1e-6)
  # Scale invariance: scaling w and 1/scaling g (a rescaled layer) scales eps
  # like w (with eta = 0).
  scaled = sam_lib.perturbation(
      jax.tree.map(lambda x: x / 10, GRADS),
      jax.tree.map(lambda x: x * 10, params), RHO, adaptive=True,
      adaptive_eta=0.0)
  base = sam_lib.perturbation(GRADS, params, RHO, adaptive=True,
                              adaptive_eta=0.0)
  np.testing.assert_allclose(ravel(scaled), 10 * ravel(base), rtol=1e-5)


def test_random_perturbation_has_norm_rho_and_follows_its_key():
  params = {'w': jnp.zeros((5, 4)), 'b': jnp.zeros(4)}
  eps = [sam_lib.random_perturbation(jax.random.key(i), params, RHO)
         for i in (0, 0, 1)]
  np.testing.assert_allclose(np.linalg.norm(ravel(eps[0])), RHO, rtol=1e-6)
  np.testing.assert_array_equal(ravel(eps[0]), ravel(eps[1]))
  assert np.max(np.abs(ravel(eps[0]) - ravel(eps[2]))) > 1e-3
  # Random direction: not aligned with any axis.
  assert np.count_nonzero(ravel(eps[0])) == 24


def test_random_sam_gradient_is_the_gradient_at_the_random_point():
  loss, grad_fn, params = toy_problem()
  key = jax.random.key(3)
  (value, _), g2, g1 = sam_lib.random_sam_gradient(grad_fn, params, RHO,
                                                   key=key)
  eps = sam_lib.random_perturbation(key, params, RHO)
  np.testing.assert_allclose(
      ravel(g2), ravel(jax.grad(loss)(sam_lib.perturb(params, eps))),
      rtol=1e-6)
  np.testing.assert_allclose(ravel(g1), ravel(jax.grad(loss)(params)))
  np.testing.assert_allclose(value, loss(params))


@pytest.mark.parametrize('p', [2.0, math.inf])
def test_one_ascent_step_is_plain_sam(p):
  _, grad_fn, params = toy_problem()
  _, multi, _ = sam_lib.multistep_sam_gradient(grad_fn, params, RHO,
                                               num_steps=1, p=p)
  _, plain, _ = sam_lib.sam_gradient(grad_fn, params, RHO, p=p)
  np.testing.assert_array_equal(ravel(multi), ravel(plain))


def test_two_ascent_steps_match_a_manual_projected_ascent():
  loss, grad_fn, params = toy_problem(1)
  rho = 0.5
  w = ravel(params)
  unravel = lambda v: {'b': jnp.array(v[0]), 'w': jnp.array(v[1:])}
  grad = lambda v: ravel(jax.grad(loss)(unravel(v)))
  g = grad(w)
  eps = rho * g / np.linalg.norm(g)
  g = grad(w + eps)
  eps = eps + rho * g / np.linalg.norm(g)
  eps *= min(1.0, rho / np.linalg.norm(eps))
  _, g2, _ = sam_lib.multistep_sam_gradient(grad_fn, params, rho,
                                            num_steps=2)
  np.testing.assert_allclose(ravel(g2), grad(w + eps), rtol=1e-5)
  # The second step moved eps: this differs from one step.
  _, g2_one, _ = sam_lib.sam_gradient(grad_fn, params, rho)
  assert np.max(np.abs(ravel(g2) - ravel(g2_one))) > 1e-4


def test_projection_onto_the_balls():
  eps = {'x': jnp.array([3.0, -4.0])}
  np.testing.assert_allclose(sam_lib.project(eps, eps, 1.0, p=2)['x'],
                             [0.6, -0.8], rtol=1e-6)
  np.testing.assert_allclose(sam_lib.project(eps, eps, 1.0, p=math.inf)['x'],
                             [1.0, -1.0])
  inside = {'x': jnp.array([0.3, 0.1])}
  np.testing.assert_allclose(sam_lib.project(inside, inside, 1.0)['x'],
                             [0.3, 0.1])


@pytest.mark.parametrize('p,adaptive', [(2.0, False), (math.inf, False),
                                        (3.0, False), (2.0, True)])
def test_second_order_equals_grad_of_the_composed_function(p, adaptive):
  loss, grad_fn, params = toy_problem(2)

  def composed(w):
    eps = sam_lib.perturbation(jax.grad(loss)(w), w, RHO, p=p,
                               adaptive=adaptive)
    return loss(sam_lib.perturb(w, eps))

  (value, _), grads, g1, first_order = sam_lib.second_order_sam_gradient(
      grad_fn, params, RHO, p=p, adaptive=adaptive)
  np.testing.assert_allclose(ravel(grads), ravel(jax.grad(composed)(params)),
                             rtol=1e-5, atol=1e-7)
  _, plain, _ = sam_lib.sam_gradient(grad_fn, params, RHO, p=p,
                                     adaptive=adaptive)
  np.testing.assert_allclose(ravel(first_order), ravel(plain), rtol=1e-6)
  np.testing.assert_allclose(value, loss(params), rtol=1e-6)
  if p != math.inf:  # sign(g) has no derivative: the orders coincide there.
    assert np.max(np.abs(ravel(grads) - ravel(plain))) > 1e-4


def test_second_order_with_averaged_first_gradient_over_shards():
  # Two shards (devices) with one eps from the averaged gradient: the mean of
  # the per-shard results is the gradient of the mean objective.
  shards = [toy_data(seed) for seed in (3, 4)]
  stacked = jax.tree.map(lambda *x: jnp.stack(x), *shards)
  _, _, params = toy_problem(3)

  def objective(w):
    mean_grad = jax.tree.map(lambda *g: sum(g) / 2, *[
        jax.grad(toy_loss)(w, data) for data in shards])
    eps = sam_lib.l2_perturbation(mean_grad, RHO)
    return sum(toy_loss(sam_lib.perturb(w, eps), d) for d in shards) / 2

  def shard(data):
    grad_fn = jax.value_and_grad(lambda p: (toy_loss(p, data), None),
                                 has_aux=True)
    _, grads, _, _ = sam_lib.second_order_sam_gradient(
        grad_fn, params, RHO,
        first_grad_transform=lambda g: jax.lax.pmean(g, 'shards'))
    return grads

  per_shard = jax.jit(jax.vmap(shard, axis_name='shards'))(stacked)
  np.testing.assert_allclose(
      ravel(jax.tree.map(lambda x: x.mean(0), per_shard)),
      ravel(jax.grad(objective)(params)), rtol=1e-5, atol=1e-7)


def test_cosine_similarity():
  a = {'x': jnp.array([1.0, 0.0]), 'y': jnp.array([1.0])}
  b = {'x': jnp.array([1.0, 1.0]), 'y': jnp.array([0.0])}
  np.testing.assert_allclose(sam_lib.cosine_similarity(a, b), 0.5, rtol=1e-6)
  np.testing.assert_allclose(sam_lib.cosine_similarity(a, a), 1.0, rtol=1e-6)
  zero = jax.tree.map(jnp.zeros_like, a)
  assert float(sam_lib.cosine_similarity(a, zero)) == 0.0


@pytest.mark.parametrize('fields,message', [
    ({'sam.p': 0.5}, r'config.sam.p = 0.5: must be in \[1, inf\]'),
    ({'sam.ascent_steps': 0}, 'config.sam.ascent_steps = 0: must be >= 1'),
    ({'sam.ascent_steps': 2, 'sam.p': 3.0}, 'needs sam.p = 2 or inf'),
    ({'sam.m': 3}, r'config.sam.m = 3: must divide the per-device batch \(8\)'),
    ({'sam.m': 4, 'sam.sync_perturbation': True}, 'must be 0 with sam.sync'),
    ({'accumulation_steps': 3}, r'must be >= 1 and divide the per-device '
     r'batch \(8\)'),
    ({'accumulation_steps': 4, 'sam.m': 4}, r'must divide the micro-batch '
     r'\(2\)'),
    ({'sam.perturbation': 'gaussian'}, r"valid: \['gradient', 'random'\]"),
    ({'sam.perturbation': 'random', 'sam.adaptive': True},
     'random takes no'),
    ({'sam.second_order': True, 'sam.ascent_steps': 2},
     'needs sam.ascent_steps = 1'),
])
def test_bad_sam_family_configs_fail_with_one_line_errors(fields, message):
  config = base.base_config()
  config.batch_size = 16
  for name, value in fields.items():
    *parents, leaf = name.split('.')
    (config.sam if parents else config)[leaf] = value
  with pytest.raises(config_checks.ConfigError, match=message) as error:
    config_checks.validate(config, num_devices=2)
  assert '\n' not in str(error.value)


def test_sam_family_configs_that_pass_validation():
  config = base.base_config()
  config.batch_size = 16
  config.accumulation_steps = 2
  config.sam.m = 4
  config.sam.p = math.inf
  config.sam.ascent_steps = 3
  config_checks.validate(config, num_devices=2)
