"""The SAM family's gradient functions against closed forms and independent
computations on toy problems."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import base
from sam import ablations
from sam import interface
from sam import methods
from sam import perturbation as ball

RHO = 0.2


def ravel(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def quadratic_grad_fn(a, b):
  """L(w) = 0.5 w^T A w + b^T w on a two-leaf pytree {'x': w[:2], 'y': w[2:]}."""

  def loss(params):
    w = jnp.concatenate([params['x'], params['y']])
    return 0.5 * w @ a @ w + b @ w, None

  return jax.value_and_grad(loss, has_aux=True)


def sam(grad_fn, params, rho, *, ascent_grad_fn=None, sync=None, **options):
  """methods.sam_gradient on plain gradient functions."""
  return methods.sam_gradient(
      interface.objective(grad_fn, ascent_grad_fn, sync), params, rho, **options
  )


def test_rho_zero_is_the_plain_gradient():
  rng = np.random.default_rng(0)
  m = rng.normal(size=(4, 4))
  a, b = jnp.array(m @ m.T), jnp.array(rng.normal(size=4))
  grad_fn = quadratic_grad_fn(a, b)
  params = {'x': jnp.array([1.0, -2.0]), 'y': jnp.array([0.5, 3.0])}
  g2 = sam(grad_fn, params, 0.0).grads
  _, g1 = grad_fn(params)
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
  g2 = sam(quadratic_grad_fn(jnp.array(a), jnp.array(b)), params, rho).grads
  np.testing.assert_allclose(
      np.concatenate([g2['x'], g2['y']]), expected, rtol=1e-5, atol=1e-6
  )


def test_sync_sets_the_ascent_direction():
  # A transform that flips the first gradient moves eps to -rho g/||g||.
  a, b = jnp.eye(4) * 2.0, jnp.ones(4)
  params = {'x': jnp.array([1.0, 0.0]), 'y': jnp.array([0.0, 1.0])}
  grad_fn = quadratic_grad_fn(a, b)
  g2 = sam(
      grad_fn, params, 0.5, sync=lambda g: jax.tree.map(jnp.negative, g)
  ).grads
  _, g1 = grad_fn(params)
  g = np.concatenate([g1['x'], g1['y']])
  np.testing.assert_allclose(
      np.concatenate([g2['x'], g2['y']]),
      g - 0.5 * 2.0 * g / np.linalg.norm(g),
      rtol=1e-6,
  )


def test_ascent_grad_fn_gives_the_direction_and_the_kept_aux():
  a = jnp.eye(4)

  def aux_grad_fn(tag, scale):
    def loss(params):
      w = jnp.concatenate([params['x'], params['y']])
      return scale * 0.5 * w @ a @ w, tag

    return jax.value_and_grad(loss, has_aux=True)

  params = {'x': jnp.array([1.0, 0.0]), 'y': jnp.array([0.0, 0.0])}
  result = sam(
      aux_grad_fn('descent', 1.0),
      params,
      0.5,
      ascent_grad_fn=aux_grad_fn('ascent', 3.0),
  )
  g2 = result.grads
  _, g1 = aux_grad_fn('ascent', 3.0)(params)
  # Loss and outputs of the first (unperturbed) pass.
  assert result.outputs == 'ascent'
  np.testing.assert_allclose(g1['x'], [3.0, 0.0])
  # eps = 0.5 * e1; descent gradient of 0.5||w||^2 at w + eps.
  np.testing.assert_allclose(g2['x'], [1.5, 0.0], rtol=1e-6)


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
  params = {
      'w': jnp.array(np.random.default_rng(seed).normal(size=3)),
      'b': jnp.array(0.1),
  }
  grad_fn = jax.value_and_grad(lambda p: (loss(p), None), has_aux=True)
  return loss, grad_fn, params


def test_random_sam_gradient_is_the_gradient_at_the_random_point():
  loss, grad_fn, params = toy_problem()
  key = jax.random.key(3)
  result = ablations.random_sam_gradient(
      interface.objective(grad_fn, key=key), params, RHO
  )
  eps = ball.random_perturbation(key, params, RHO)
  np.testing.assert_allclose(
      ravel(result.grads),
      ravel(jax.grad(loss)(ball.perturb(params, eps))),
      rtol=1e-6,
  )
  np.testing.assert_allclose(result.loss, loss(params))


@pytest.mark.parametrize('p', [2.0, math.inf])
def test_one_ascent_step_is_plain_sam(p):
  _, grad_fn, params = toy_problem()
  multi = sam(grad_fn, params, RHO, ascent_steps=1, p=p).grads
  plain = sam(grad_fn, params, RHO, p=p).grads
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
  g2 = sam(grad_fn, params, rho, ascent_steps=2).grads
  np.testing.assert_allclose(ravel(g2), grad(w + eps), rtol=1e-5)
  # The second step moved eps: this differs from one step.
  g2_one = sam(grad_fn, params, rho).grads
  assert np.max(np.abs(ravel(g2) - ravel(g2_one))) > 1e-4


@pytest.mark.parametrize(
    'p,adaptive', [(2.0, False), (math.inf, False), (3.0, False), (2.0, True)]
)
def test_second_order_equals_grad_of_the_composed_function(p, adaptive):
  loss, grad_fn, params = toy_problem(2)

  def composed(w):
    eps = ball.perturbation(jax.grad(loss)(w), w, RHO, p=p, adaptive=adaptive)
    return loss(ball.perturb(w, eps))

  result = ablations.second_order_sam_gradient(
      interface.objective(grad_fn), params, RHO, p=p, adaptive=adaptive
  )
  grads, value = result.grads, result.loss
  first_order = result.extras['first_order']
  np.testing.assert_allclose(
      ravel(grads), ravel(jax.grad(composed)(params)), rtol=1e-5, atol=1e-7
  )
  plain = sam(grad_fn, params, RHO, p=p, adaptive=adaptive).grads
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
    mean_grad = jax.tree.map(
        lambda *g: sum(g) / 2, *[jax.grad(toy_loss)(w, data) for data in shards]
    )
    eps = ball.l2_perturbation(mean_grad, RHO)
    return sum(toy_loss(ball.perturb(w, eps), d) for d in shards) / 2

  def shard(data):
    grad_fn = jax.value_and_grad(
        lambda p: (toy_loss(p, data), None), has_aux=True
    )
    return ablations.second_order_sam_gradient(
        interface.objective(grad_fn, sync=lambda g: jax.lax.pmean(g, 'shards')),
        params,
        RHO,
    ).grads

  per_shard = jax.jit(jax.vmap(shard, axis_name='shards'))(stacked)
  np.testing.assert_allclose(
      ravel(jax.tree.map(lambda x: x.mean(0), per_shard)),
      ravel(jax.grad(objective)(params)),
      rtol=1e-5,
      atol=1e-7,
  )


def sam_config(**fields):
  """configs/base.py's sam section with `fields` set."""
  config = base.sam_section()
  config.update(fields)
  return config


def test_table_builds_every_method_from_its_config_fields():
  stateful = {'looksam', 'aesam', 'msam', 'fsam', 'sampa'}
  for name in methods.METHODS:
    configured, taken = methods.fields(
        sam_config(method=name, rho=0.1),
        learning_rate=optax.constant_schedule(0.1),
        num_steps=10,
        seed=0,
    )
    state = configured.method.init({'w': jnp.zeros(2)})
    assert (state != ()) == (name in stateful), name
    assert taken <= set(base.sam_section()), name
  fields = lambda name: methods.fields(
      sam_config(method=name),
      learning_rate=optax.constant_schedule(0.1),
      num_steps=10,
      seed=0,
  )[1]
  assert fields('sam') == {'p', 'ascent_steps', 'adaptive', 'adaptive_eta'}
  assert fields('sgd') == set()
  assert fields('gsam') == {'gsam_rho_min', 'gsam_alpha'}
  with pytest.raises(ValueError, match="sam.method = 'adam': valid"):
    methods.create(sam_config(method='adam'))
  with pytest.raises(ValueError, match="gsam needs the run's learning_rate"):
    methods.create(sam_config(method='gsam'), num_steps=10)


def test_configs_base_and_the_methods_agree():
  """configs/base.py holds the defaults; every field it lists in its sam
  section is read by some method's METHODS line or by `create`, and every
  method builds from those defaults alone."""
  defaults = base.sam_section()
  read = set(methods.SHARED_FIELDS)
  for name in methods.METHODS:
    _, taken = methods.fields(
        sam_config(method=name),
        learning_rate=optax.constant_schedule(0.1),
        num_steps=10,
        seed=0,
    )
    read |= taken
  assert read == set(defaults)
  # The ball's own default (for direct callers of sam/perturbation.py).
  assert defaults.adaptive_eta == ball.DEFAULT_ADAPTIVE_ETA
  # A field the config lacks is named, not a KeyError from deep inside.
  partial = sam_config(method='looksam').to_dict()
  del partial['looksam_alpha']
  with pytest.raises(
      interface.FieldError, match='looksam_alpha = None: required by'
  ):
    methods.fields(ml_collections.ConfigDict(partial))


def test_create_reads_the_groups_and_sync_once():
  sam = methods.create(sam_config(m=4, m_groups='vmap'))
  assert (sam.m, sam.m_groups, sam.sync_perturbation) == (4, 'vmap', False)
  # SGD has no ascent: no m-sharpness groups and nothing to share.
  sgd = methods.create(sam_config(method='sgd', m=4))
  assert (sgd.m, sgd.sync_perturbation) == (0, False)
  synced = methods.create(sam_config(sync_perturbation=True))
  assert synced.sync_perturbation
  with pytest.raises(interface.FieldError, match='must be 0 with sam.sync'):
    methods.create(sam_config(m=4, sync_perturbation=True))


def test_sgd_entry_is_the_plain_gradient_and_sam_entry_is_sam_gradient():
  loss, grad_fn, params = toy_problem(5)
  objective = interface.objective(grad_fn)
  sgd = methods.create(sam_config(method='sgd')).method.gradient(
      objective, params, ()
  )
  np.testing.assert_allclose(ravel(sgd.grads), ravel(jax.grad(loss)(params)))
  entry = methods.create(sam_config(method='sam', rho=RHO)).method.gradient(
      objective, params, ()
  )
  np.testing.assert_array_equal(
      ravel(entry.grads), ravel(sam(grad_fn, params, RHO).grads)
  )


def test_reads_rho_tells_which_methods_a_rho_grid_means_something_for():
  assert methods.reads_rho('sam') and methods.reads_rho('msam')
  assert methods.reads_rho('gsam') and methods.reads_rho('looksam')
  assert not methods.reads_rho('rwp') and not methods.reads_rho('sgd')


def test_configured_records_the_fields_its_method_read():
  configured = methods.create(
      sam_config(method='looksam', looksam_alpha=0.3, rho=0.1)
  )
  assert configured.name == 'looksam'
  assert configured.fields == {
      'looksam_alpha': 0.3,
      'looksam_every': 5,
      'rho': 0.1,
  }
  assert methods.create(sam_config(method='sgd')).fields == {}
