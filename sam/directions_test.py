"""sam/directions.py and sam/history.py against closed forms and independent recursions on
quadratics, and SAM-ON / RWP on small models."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import models
from sam import interface
from sam import methods

RHO = 0.3


def ravel(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def quadratic(seed=0):
  """(A, b, grad_fn) of L(w) = 0.5 w^T A w + b^T w on {'x': w[:2], 'y': w[2:]}."""
  rng = np.random.default_rng(seed)
  m = rng.normal(size=(4, 4))
  a, b = m @ m.T + np.eye(4), rng.normal(size=4)

  def loss(params):
    w = jnp.concatenate([params['x'], params['y']])
    return 0.5 * w @ jnp.array(a) @ w + jnp.array(b) @ w, None

  return a, b, jax.value_and_grad(loss, has_aux=True)


def tree(w):
  return {
      'x': jnp.array(w[:2], jnp.float32),
      'y': jnp.array(w[2:], jnp.float32),
  }


def unit(v):
  norm = np.linalg.norm(v)
  return v / norm if norm > 0 else 0 * v


def recording(grad_fn):
  """grad_fn, and the list of the params it is called with."""
  calls = []

  def fn(params):
    calls.append(params)
    return grad_fn(params)

  return fn, calls


def constant(lr=0.1):
  return optax.constant_schedule(lr)


# GSAM.


def test_gsam_reduces_to_sam():
  _, _, grad_fn = quadratic(1)
  params = tree(np.random.default_rng(1).normal(size=4))
  method = methods.build(
      'gsam',
      rho=RHO,
      gsam_rho_min=RHO,
      gsam_alpha=0.0,
      learning_rate=optax.cosine_decay_schedule(0.1, 100),
      num_steps=100,
  )
  objective = interface.objective(grad_fn, step=jnp.array(37))
  result = method.gradient(objective, params, method.init(params))
  expected = methods.sam_gradient(objective, params, RHO)
  np.testing.assert_allclose(ravel(result.grads), ravel(expected.grads))
  assert method.init(params) == ()


@pytest.mark.parametrize('alpha', [0.3, 1.0])
def test_gsam_quadratic_closed_form(alpha):
  a, b, grad_fn = quadratic(2)
  w = np.random.default_rng(2).normal(size=4)
  g = a @ w + b
  g_p = a @ (w + RHO * unit(g)) + b
  g_orth = g - (g @ g_p) / (g_p @ g_p) * g_p
  method = methods.build(
      'gsam',
      rho=RHO,
      gsam_alpha=alpha,
      learning_rate=constant(),
      num_steps=10,
  )
  result = method.gradient(
      interface.objective(grad_fn, step=jnp.array(3)), tree(w), ()
  )
  np.testing.assert_allclose(
      ravel(result.grads), g_p - alpha * g_orth, rtol=1e-5, atol=1e-6
  )
  assert abs(g_orth @ g_p) < 1e-6 * np.linalg.norm(g) * np.linalg.norm(g_p)
  assert float(result.extras['gsam_rho']) == pytest.approx(RHO)  # lr constant


def test_gsam_rho_follows_a_linear_decay():
  _, _, grad_fn = quadratic(3)
  params = tree(np.random.default_rng(3).normal(size=4))
  num_steps, rho_min = 10, 0.1
  method = methods.build(
      'gsam',
      rho=0.5,
      gsam_rho_min=rho_min,
      gsam_alpha=0.0,
      learning_rate=optax.linear_schedule(1.0, 0.0, num_steps),
      num_steps=num_steps,
  )
  for step in (0, 4, 10):
    objective = interface.objective(grad_fn, step=jnp.array(step))
    result = method.gradient(objective, params, ())
    rho_t = rho_min + (0.5 - rho_min) * (1 - step / num_steps)
    assert float(result.extras['gsam_rho']) == pytest.approx(rho_t, rel=1e-6)
    np.testing.assert_allclose(
        ravel(result.grads),
        ravel(methods.sam_gradient(objective, params, rho_t).grads),
        rtol=1e-6,
    )
    assert method.metrics(result.grads, result.extras)['gsam_rho'] == (
        result.extras['gsam_rho']
    )


def test_gsam_rho_zero_is_the_plain_gradient_and_rho_min_is_checked():
  _, _, grad_fn = quadratic(4)
  params = tree(np.ones(4))
  method = methods.build(
      'gsam',
      rho=0.0,
      gsam_rho_min=0.0,
      learning_rate=constant(),
      num_steps=5,
  )
  result = method.gradient(interface.objective(grad_fn, step=0), params, ())
  np.testing.assert_array_equal(ravel(result.grads), ravel(grad_fn(params)[1]))
  with pytest.raises(
      ValueError, match=r'gsam_rho_min = 0.1: must be <= sam.rho \(0.05\)'
  ):
    methods.build(
        'gsam',
        rho=0.05,
        gsam_rho_min=0.1,
        learning_rate=constant(),
        num_steps=5,
    )


# Momentum-SAM.


def test_msam_three_steps_closed_form():
  a, b, grad_fn = quadratic(5)
  rho, mu = 2.0, 0.9
  points = np.random.default_rng(5).normal(size=(3, 4))
  method = methods.build('msam', rho=rho, msam_momentum=mu)
  state = method.init(tree(points[0]))
  for leaf in jax.tree.leaves(state):
    assert leaf.shape == (2,) and leaf.dtype == jnp.float32
    np.testing.assert_array_equal(leaf, 0.0)
  v = np.zeros(4)
  for t, w in enumerate(points):
    perturbed = w - rho * unit(v)
    g = a @ perturbed + b
    result = method.gradient(interface.objective(grad_fn), tree(w), state)
    np.testing.assert_allclose(ravel(result.grads), g, rtol=1e-5, atol=1e-6)
    loss = 0.5 * perturbed @ a @ perturbed + b @ perturbed
    np.testing.assert_allclose(result.loss, loss, rtol=1e-5)
    if t == 0:  # v = 0: plain SGD.
      np.testing.assert_allclose(
          ravel(result.grads), a @ w + b, rtol=1e-5, atol=1e-6
      )
    v = mu * v + g
    state = result.state
    np.testing.assert_allclose(ravel(state), v, rtol=1e-5, atol=1e-6)


def test_msam_rho_zero_is_the_plain_gradient():
  _, _, grad_fn = quadratic(6)
  params = tree(np.arange(4.0))
  state = tree(np.ones(4))
  result = methods.build('msam', rho=0.0).gradient(
      interface.objective(grad_fn), params, state
  )
  np.testing.assert_array_equal(ravel(result.grads), ravel(grad_fn(params)[1]))


# Friendly SAM.


def test_fsam_three_steps_closed_form():
  """The official code's order: d_t = g_t - sigma m_{t-1}, then the EMA;
  m starts at the first gradient, whose step is SAM's."""
  a, b, grad_fn = quadratic(7)
  sigma, decay = 0.8, 0.6
  points = np.random.default_rng(7).normal(size=(3, 4))
  method = methods.build('fsam', rho=RHO, fsam_sigma=sigma, fsam_lambda=decay)
  state = method.init(tree(points[0]))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state))
  m = None
  for step, w in enumerate(points):
    g = a @ w + b
    direction = g if m is None else g - sigma * m
    m = g if m is None else decay * m + (1 - decay) * g
    expected = a @ (w + RHO * unit(direction)) + b
    objective = interface.objective(grad_fn, step=step)
    result = method.gradient(objective, tree(w), state)
    # Float32: a small element of a sum of a few O(1) products is off by a
    # few ulp of the largest one (|g| ~ 3, ulp ~ 2.4e-7).
    atol = 1e-5 * np.max(np.abs(expected))
    np.testing.assert_allclose(
        ravel(result.grads), expected, rtol=1e-5, atol=atol
    )
    np.testing.assert_allclose(result.loss, 0.5 * w @ a @ w + b @ w, rtol=1e-5)
    state = result.state
    np.testing.assert_allclose(ravel(state), m, rtol=1e-5, atol=1e-6)
    if step == 0:
      sam = a @ (w + RHO * unit(g)) + b
      np.testing.assert_allclose(ravel(result.grads), sam, rtol=1e-5)
  # The last step's direction is not g's: the EMA moved it.
  assert np.max(np.abs(expected - (a @ (w + RHO * unit(g)) + b))) > 1e-4


def test_fsam_rho_zero_is_the_plain_gradient():
  _, _, grad_fn = quadratic(8)
  params = tree(np.arange(4.0))
  result = methods.build('fsam', rho=0.0).gradient(
      interface.objective(grad_fn, step=3), params, tree(np.ones(4))
  )
  np.testing.assert_array_equal(ravel(result.grads), ravel(grad_fn(params)[1]))


# SAM-ON.


class TwoLayer(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.BatchNorm(use_running_average=False)(nn.Dense(5)(x)))
    return nn.Dense(3)(nn.LayerNorm()(x))


def two_layer_problem():
  model = TwoLayer()
  x = jax.random.normal(jax.random.key(0), (8, 4))
  variables = model.init(jax.random.key(1), x)

  def loss(params):
    out, _ = model.apply(
        {'params': params, 'batch_stats': variables['batch_stats']},
        x,
        mutable=['batch_stats'],
    )
    return jnp.mean(jnp.sin(out) ** 2), None

  return variables['params'], jax.value_and_grad(loss, has_aux=True)


def is_norm(path):
  return 'Norm' in jax.tree_util.keystr(path)


@pytest.mark.parametrize('adaptive', [False, True])
def test_samon_perturbs_only_the_normalisation_layers(adaptive):
  """SAM-ON: eps = rho g_N / ||g_N||; ASAM-ON: rho T^2 g_N / ||T g_N||,
  T = |w| + eta, on the normalisation leaves; 0 elsewhere."""
  eta = 0.01
  params, grad_fn = two_layer_problem()
  fn, calls = recording(grad_fn)
  result = methods.build(
      'samon', rho=RHO, samon_adaptive=adaptive, adaptive_eta=eta
  ).gradient(interface.objective(fn), params, ())
  assert len(calls) == 2
  eps = jax.tree.map(jnp.subtract, calls[1], params)
  _, g = grad_fn(params)
  flat_g = jax.tree_util.tree_flatten_with_path(g)[0]
  flat_w = [np.asarray(w) for w in jax.tree.leaves(params)]
  scale = [np.abs(w) + eta if adaptive else 1.0 for w in flat_w]
  norm_g = np.sqrt(
      sum(
          np.sum((t * x) ** 2) for (p, x), t in zip(flat_g, scale) if is_norm(p)
      )
  )
  kinds = set()
  for (path, e), (_, x), t in zip(
      jax.tree_util.tree_flatten_with_path(eps)[0], flat_g, scale
  ):
    kinds.add(is_norm(path))
    if is_norm(path):
      np.testing.assert_allclose(
          e, RHO * t**2 * x / norm_g, rtol=1e-4, atol=1e-7
      )
    else:
      np.testing.assert_array_equal(e, 0.0)
  assert kinds == {True, False}
  np.testing.assert_allclose(
      ravel(result.grads), ravel(grad_fn(calls[1])[1]), rtol=1e-6
  )


def test_samon_mask_on_wrn_mini():
  model = models.create_model('wrn_mini', 10)
  shapes = jax.eval_shape(
      lambda: model.init(
          jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False
      )
  )['params']
  params = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), shapes)
  fn, calls = recording(
      jax.value_and_grad(
          lambda p: (sum(jnp.sum(x**2) for x in jax.tree.leaves(p)), None),
          has_aux=True,
      )
  )
  methods.build('samon', rho=RHO, samon_adaptive=False).gradient(
      interface.objective(fn), params, ()
  )
  eps = jax.tree.map(jnp.subtract, calls[1], params)
  flat = jax.tree_util.tree_flatten_with_path(eps)[0]
  norm_leaves = [e for p, e in flat if 'BatchNorm' in jax.tree_util.keystr(p)]
  assert norm_leaves and len(norm_leaves) < len(flat)
  for path, e in flat:
    if 'BatchNorm' not in jax.tree_util.keystr(path):
      np.testing.assert_array_equal(e, 0.0)  # conv kernels and the head.
  # g = 2w = 2 on every norm leaf: eps is uniform there with norm rho.
  np.testing.assert_allclose(
      ravel(norm_leaves),
      RHO / np.sqrt(sum(e.size for e in norm_leaves)),
      rtol=1e-5,
  )


def test_samon_rejects_trees_without_normalisation_and_rho_zero():
  _, _, grad_fn = quadratic(9)
  with pytest.raises(ValueError, match='normalisation parameters only'):
    methods.build('samon', rho=RHO).gradient(
        interface.objective(grad_fn), tree(np.ones(4)), ()
    )
  params, grad_fn = two_layer_problem()
  result = methods.build('samon', rho=0.0).gradient(
      interface.objective(grad_fn), params, ()
  )
  np.testing.assert_array_equal(ravel(result.grads), ravel(grad_fn(params)[1]))


# SAMPa.


def test_sampa_matches_a_sequential_recursion_over_three_steps():
  """y_{t+1} is the optimizer's step from x_t with g_y (momentum included,
  as the official code); the run's optimizer then applies the update."""
  a, b, grad_fn = quadratic(10)
  rho, weight, mu = 0.4, 0.3, 0.9
  schedule = optax.linear_schedule(0.2, 0.05, 3)
  tx = optax.sgd(schedule, momentum=mu)
  grad = lambda v: a @ v + b
  x = np.random.default_rng(10).normal(size=4)
  method = methods.build('sampa', rho=rho, sampa_lambda=weight)
  state = method.init(tree(x))
  opt_state = tx.init(tree(x))
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(state))
  np.testing.assert_array_equal(ravel(state), 0.0)
  g_y, buffer = np.zeros(4), np.zeros(4)
  for t in range(3):
    lr = float(schedule(t))
    x_tilde = x + rho * unit(g_y)
    y = x - lr * (mu * buffer + g_y)
    expected = (1 - weight) * grad(x_tilde) + weight * grad(y)
    fn, calls = recording(grad_fn)

    def descend(g, x=x, opt_state=opt_state):
      updates, _ = tx.update(g, opt_state, tree(x))
      return optax.apply_updates(tree(x), updates)

    objective = interface.objective(fn, step=jnp.array(t), descend=descend)
    result = method.gradient(objective, tree(x), state)
    assert len(calls) == 2  # The two points, one after another.
    np.testing.assert_allclose(ravel(result.grads), expected, rtol=1e-5)
    np.testing.assert_allclose(result.loss, 0.5 * y @ a @ y + b @ y, rtol=1e-5)
    if t == 0:  # g_y = 0: both points are x_0, plain SGD.
      np.testing.assert_allclose(ravel(result.grads), grad(x), rtol=1e-5)
    g_y, state = grad(y), result.state
    np.testing.assert_allclose(ravel(state), g_y, rtol=1e-5, atol=1e-6)
    updates, opt_state = tx.update(result.grads, opt_state, tree(x))
    buffer = mu * buffer + expected
    x = x - lr * buffer
    np.testing.assert_allclose(
        ravel(optax.apply_updates(tree(x + lr * buffer), updates)),
        x,
        rtol=1e-5,
    )
  # Momentum moved y: plain x - lr g_y would differ.
  assert np.linalg.norm(buffer) > 0.1


@pytest.mark.parametrize('setting', ['off', 'auto'])
def test_sampa_off_and_cpu_auto_call_grad_twice_beside_grad_pair(setting):
  _, _, grad_fn = quadratic(13)
  x = tree(np.random.default_rng(13).normal(size=4))
  auxiliary = tree(np.random.default_rng(14).normal(size=4))
  method = methods.build('sampa', rho=0.4, sampa_device_groups=setting)

  def no_pair(a, b):
    raise AssertionError('grad_pair called')

  objective = interface.objective(grad_fn, descend=lambda g: x)._replace(
      grad_pair=no_pair
  )
  assert jax.default_backend() == 'cpu'  # 'auto' is off here.
  result = method.gradient(objective, x, auxiliary)
  assert np.all(np.isfinite(ravel(result.grads)))


def test_sampa_takes_both_gradients_from_grad_pair_where_the_step_gives_it():
  """The step's two device groups answer for both points; grad is unused
  (sampa_device_groups 'on'; 'off' and CPU's 'auto' call grad twice)."""
  _, _, grad_fn = quadratic(13)
  x = np.random.default_rng(13).normal(size=4)
  auxiliary = tree(np.random.default_rng(14).normal(size=4))
  descend = lambda g: jax.tree.map(lambda w, d: w - 0.1 * d, tree(x), g)
  method = methods.build(
      'sampa', rho=0.4, sampa_lambda=0.3, sampa_device_groups='on'
  )
  sequential = method.gradient(
      interface.objective(grad_fn, descend=descend), tree(x), auxiliary
  )
  pairs = []

  def grad_pair(a, b):
    pairs.append((a, b))
    return grad_fn(a), grad_fn(b)

  def no_grad(params, ascent=False):
    raise AssertionError('grad called beside grad_pair')

  objective = interface.objective(grad_fn, descend=descend)._replace(
      grad=no_grad, grad_pair=grad_pair
  )
  result = method.gradient(objective, tree(x), auxiliary)
  assert len(pairs) == 1
  np.testing.assert_array_equal(ravel(result.grads), ravel(sequential.grads))
  np.testing.assert_array_equal(ravel(result.state), ravel(sequential.state))
  np.testing.assert_array_equal(result.loss, sequential.loss)
  # (x~, y): x~ = x + rho g_y / ||g_y||, y the optimizer's step with g_y.
  g_y = ravel(auxiliary)
  np.testing.assert_allclose(ravel(pairs[0][0]), x + 0.4 * unit(g_y), rtol=1e-6)
  np.testing.assert_allclose(ravel(pairs[0][1]), x - 0.1 * g_y, rtol=1e-6)


def test_sampa_state_follows_float64_weights():
  """A float64 run keeps g_y in float64 (sam/run/pair_groups_test.py)."""
  method = methods.build('sampa', rho=0.1)
  assert jax.tree.leaves(method.init(tree(np.ones(4))))[0].dtype == jnp.float32
  with jax.enable_x64(True):
    params = {'w': jnp.ones(4, jnp.float64)}
    state = method.init(params)
    assert state['w'].dtype == jnp.float64
    result = method.gradient(
        interface.objective(
            lambda p: ((jnp.sum(p['w'] ** 2), None), {'w': 2 * p['w']}),
            descend=lambda g: params,
        ),
        params,
        state,
    )
    assert result.state['w'].dtype == jnp.float64


def test_sampa_under_jit_and_rho_zero_first_step():
  _, _, grad_fn = quadratic(11)
  params = tree(np.arange(4.0))
  method = methods.build('sampa', rho=0.0)
  step = jax.jit(
      lambda p, s, t: method.gradient(
          interface.objective(grad_fn, step=t, descend=lambda g: p), p, s
      )
  )
  result = step(params, method.init(params), jnp.array(0))
  np.testing.assert_allclose(
      ravel(result.grads), ravel(grad_fn(params)[1]), rtol=1e-6
  )
  with pytest.raises(ValueError, match='objective.descend'):
    method.gradient(interface.objective(grad_fn), params, method.init(params))


# RWP.


def test_rwp_same_key_same_eps_and_grads_at_the_point():
  """alpha = 1: one pass, at w + eps; the same key gives the same eps."""
  _, _, grad_fn = quadratic(12)
  params = tree(np.random.default_rng(12).normal(size=4))
  method = methods.build('rwp', rwp_sigma=0.1, rwp_alpha=1.0)
  assert method.init(params) == ()
  points = []
  for key in (1, 1, 2):
    fn, calls = recording(grad_fn)
    result = method.gradient(
        interface.objective(fn, key=jax.random.key(key)), params, ()
    )
    assert len(calls) == 1
    np.testing.assert_allclose(
        ravel(result.grads), ravel(grad_fn(calls[0])[1]), rtol=1e-6
    )
    points.append(ravel(calls[0]))
  np.testing.assert_array_equal(points[0], points[1])
  assert np.max(np.abs(points[0] - points[2])) > 1e-6
  assert np.max(np.abs(points[0] - ravel(params))) > 1e-6
  with pytest.raises(ValueError, match='objective.key'):
    method.gradient(interface.objective(grad_fn), params, ())


@pytest.mark.parametrize('alpha', [0.5, 0.2])
def test_rwp_mixes_the_noisy_and_the_clean_gradient(alpha):
  """Li et al.'s update: alpha g(w + eps) + (1 - alpha) g(w), with the loss
  and outputs of the pass at w."""
  a, b, grad_fn = quadratic(14)
  w = np.random.default_rng(14).normal(size=4)
  method = methods.build('rwp', rwp_sigma=0.1, rwp_alpha=alpha)
  fn, calls = recording(grad_fn)
  result = method.gradient(
      interface.objective(fn, key=jax.random.key(3)), tree(w), ()
  )
  assert len(calls) == 2
  noisy = ravel(calls[0])
  assert np.max(np.abs(noisy - w)) > 1e-6
  expected = alpha * (a @ noisy + b) + (1 - alpha) * (a @ w + b)
  np.testing.assert_allclose(ravel(result.grads), expected, rtol=1e-5)
  np.testing.assert_allclose(result.loss, 0.5 * w @ a @ w + b @ w, rtol=1e-5)


def test_rwp_noise_std_is_sigma_times_the_filter_norm():
  rng = np.random.default_rng(13)
  sigma = 0.05
  kernel = rng.normal(size=(3, 3, 400, 4)) * np.array([0.1, 1.0, 3.0, 10.0])
  bias = rng.normal(size=20000)
  params = {'kernel': jnp.array(kernel, jnp.float32), 'bias': jnp.array(bias)}
  fn, calls = recording(
      jax.value_and_grad(
          lambda p: (sum(jnp.sum(x) for x in jax.tree.leaves(p)), None),
          has_aux=True,
      )
  )
  methods.build('rwp', rwp_sigma=sigma, rwp_alpha=1.0).gradient(
      interface.objective(fn, key=jax.random.key(0)), params, ()
  )
  eps = jax.tree.map(jnp.subtract, calls[0], params)
  filter_norms = np.linalg.norm(kernel.reshape(-1, 4), axis=0)
  np.testing.assert_allclose(
      np.std(np.asarray(eps['kernel']).reshape(-1, 4), axis=0),
      sigma * filter_norms,
      rtol=0.05,
  )
  np.testing.assert_allclose(
      np.std(eps['bias']), sigma * np.linalg.norm(bias), rtol=0.05
  )
  assert abs(np.mean(eps['bias'])) < 0.05 * sigma * np.linalg.norm(bias)
  np.testing.assert_allclose(
      methods.build('rwp', rwp_sigma=0.0, rwp_alpha=1.0)
      .gradient(interface.objective(fn, key=jax.random.key(0)), params, ())
      .grads['bias'],
      1.0,
  )
