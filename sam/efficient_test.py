"""The efficient SAM variants (sam/efficient.py, sam/esam.py) against SAM, SGD, closed forms and independent
computations on a small regression problem."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sam import efficient
from sam import esam
from sam import interface
from sam import methods
from sam import perturbation as ball

RHO = 0.3


def ravel(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def data(seed=0, n=8, d=3):
  rng = np.random.default_rng(seed)
  return jnp.array(rng.normal(size=(n, d))), jnp.array(rng.normal(size=n))


def initial_params(seed=0, d=3):
  rng = np.random.default_rng(seed + 100)
  return {'w': jnp.array(rng.normal(size=d)), 'b': jnp.array(0.3)}


def per_example_losses(params, x, y):
  """A non-quadratic loss (its Hessian changes with w), one per example."""
  prediction = jnp.tanh(x @ params['w'] + params['b'])
  return (prediction - y) ** 2 + 0.05 * jnp.sum(params['w'] ** 4)


def regression(x, y, counter=None, ascent_scale=None, key=None, step=None):
  """An Objective over the examples (x, y), with `losses` and `subset`.

  counter: a dict whose 'grads' and 'forwards' count the passes that run
  (jax.debug.callback: a pass in an untaken cond branch does not count).
  ascent_scale: if set, the ascent pass differs (its loss is scaled).
  """

  def value(params, scale=1.0):
    losses = per_example_losses(params, x, y)
    aux = interface.Outputs(
        {}, {'loss': losses, 'error': (losses > 0.5).astype(jnp.float32)}
    )
    return scale * jnp.mean(losses), aux

  def counted(name, result):
    if counter is not None:
      jax.debug.callback(lambda: counter.__setitem__(name, counter[name] + 1))
    return result

  def grad_fn(params):
    return counted('grads', jax.value_and_grad(value, has_aux=True)(params))

  ascent_grad_fn = None
  if ascent_scale is not None:
    ascent_grad_fn = jax.value_and_grad(
        lambda p: value(p, ascent_scale), has_aux=True
    )
  objective = interface.objective(grad_fn, ascent_grad_fn, key=key, step=step)
  return objective._replace(
      losses=lambda p: counted('forwards', per_example_losses(p, x, y)),
      subset=lambda i: regression(x[i], y[i], counter, ascent_scale, key, step),
  )


def sam_reference(objective, params, rho=RHO):
  return methods.sam_gradient(objective, params, rho)


def sgd_reference(objective, params):
  return methods.sgd_gradient(objective, params)


def new_counter():
  return {'grads': 0, 'forwards': 0}


def run_counted(fn):
  """fn() under jit, and the passes it ran: (result, counter)."""
  counter = new_counter()
  result = jax.jit(lambda: fn(counter))()
  jax.block_until_ready(result)
  jax.effects_barrier()
  return result, counter


def assert_trees_close(a, b, rtol=1e-6, atol=1e-7):
  """Equal up to rounding: a branch of jax.lax.cond is compiled, and XLA's
  fusions may round differently from eager SAM (about 1 ulp)."""
  np.testing.assert_allclose(ravel(a), ravel(b), rtol=rtol, atol=atol)


# ESAM.


def test_esam_with_all_weights_and_examples_is_sam():
  x, y = data()
  params = initial_params()
  objective = regression(x, y, key=jax.random.key(0))
  result = esam.esam_gradient(objective, params, RHO, 1.0, 1.0)
  reference = sam_reference(objective, params)
  np.testing.assert_array_equal(ravel(result.grads), ravel(reference.grads))
  np.testing.assert_array_equal(result.loss, reference.loss)
  assert result.extras.keys() == reference.extras.keys()


def test_esam_selects_the_examples_whose_loss_rose_most():
  x, y = data(1, n=10)
  params = initial_params(1)
  objective = regression(x, y, key=jax.random.key(1))
  gamma = 0.4
  result = esam.esam_gradient(objective, params, RHO, 1.0, gamma)
  # Independently: SAM's eps, the loss increase per example, the top 4.
  g = jax.grad(lambda p: jnp.mean(per_example_losses(p, x, y)))(params)
  eps = ball.l2_perturbation(g, RHO)
  moved = ball.perturb(params, eps)
  rise = per_example_losses(moved, x, y) - per_example_losses(params, x, y)
  chosen = np.argsort(-np.asarray(rise))[: round(gamma * 10)]
  expected = jax.grad(
      lambda p: jnp.mean(per_example_losses(p, x[chosen], y[chosen]))
  )(moved)
  assert_trees_close(result.grads, expected)
  # It is not SAM's gradient over all the examples.
  full = sam_reference(objective, params).grads
  assert np.max(np.abs(ravel(result.grads) - ravel(full))) > 1e-3
  np.testing.assert_allclose(
      result.extras['perturbed_loss'],
      np.mean(np.asarray(per_example_losses(moved, x, y))[chosen]),
      rtol=1e-6,
  )


def test_esam_weight_perturbation_is_masked_and_rescaled():
  # On a quadratic-free check: eps = (rho / beta) m g / ||g||, so the second
  # gradient is the gradient at w + that eps.
  x, y = data(2)
  params = initial_params(2)
  key = jax.random.key(7)
  beta = 0.5
  objective = regression(x, y, key=key)
  result = esam.esam_gradient(objective, params, RHO, beta, 1.0)
  loss = lambda p: jnp.mean(per_example_losses(p, x, y))
  g = jax.grad(loss)(params)
  mask = esam.swp_mask(key, params, beta)
  eps = jax.tree.map(
      lambda e, m: e * m, ball.l2_perturbation(g, RHO / beta), mask
  )
  expected = jax.grad(loss)(ball.perturb(params, eps))
  assert_trees_close(result.grads, expected)


def test_swp_mask_fraction_is_beta():
  params = {'a': jnp.zeros((200, 100)), 'b': jnp.zeros(1000)}
  beta = 0.3
  mask = ravel(esam.swp_mask(jax.random.key(3), params, beta))
  assert set(np.unique(mask)) <= {0.0, 1.0}
  n = mask.size
  assert abs(mask.mean() - beta) < 4 * math.sqrt(beta * (1 - beta) / n)
  # Another key, another mask.
  other = ravel(esam.swp_mask(jax.random.key(4), params, beta))
  assert np.any(mask != other)


def test_esam_passes():
  x, y = data(3)
  params = initial_params(3)
  key = jax.random.key(0)
  _, counter = run_counted(
      lambda c: esam.esam_gradient(
          regression(x, y, c, key=key), params, RHO, 0.5, 0.5
      )
  )
  # Two gradients (the second on half the examples) and one forward pass.
  assert counter == {'grads': 2, 'forwards': 1}
  _, counter = run_counted(
      lambda c: esam.esam_gradient(
          regression(x, y, c, key=key), params, RHO, 0.5, 1.0
      )
  )
  assert counter == {'grads': 2, 'forwards': 0}


def test_esam_without_subsets_raises():
  x, y = data()
  objective = regression(x, y, key=jax.random.key(0))._replace(
      losses=None, subset=None
  )
  with pytest.raises(ValueError, match='accumulation_steps = 1'):
    esam.esam_gradient(objective, initial_params(), RHO, 1.0, 0.5)
  # gamma = 1 needs neither.
  esam.esam_gradient(objective, initial_params(), RHO, 0.5, 1.0)


# LookSAM.


def looksam_step(objective, params, state, every=5, alpha=0.7):
  method = methods.build(
      'looksam', rho=RHO, looksam_every=every, looksam_alpha=alpha
  )
  return interface.lone_replica_update(method, objective, params, state)


def test_looksam_sam_step_is_sam_and_keeps_the_orthogonal_component():
  x, y = data(4)
  params = initial_params(4)
  method = methods.build('looksam', rho=RHO)
  state = method.init(params)
  objective = regression(x, y, step=10)
  result = interface.lone_replica_update(method, objective, params, state)
  reference = sam_reference(objective, params)
  assert_trees_close(result.grads, reference.grads)
  assert result.extras['sam_fraction'] == 1.0
  # g_v = g_s - (g_s . g / ||g||^2) g, orthogonal to g.
  g = ravel(jax.grad(lambda p: jnp.mean(per_example_losses(p, x, y)))(params))
  g_s = ravel(reference.grads)
  g_v = ravel(result.state)
  np.testing.assert_allclose(
      g_v, g_s - (g_s @ g) / (g @ g) * g, rtol=1e-6, atol=1e-7
  )
  # Float32 cancellation: g_s . g ~ 5 leaves |g_v . g| ~ 1e-6.
  assert abs(g_v @ g) < 1e-5 * np.linalg.norm(g_v) * np.linalg.norm(g)
  assert np.linalg.norm(g_v) > 1e-4


@pytest.mark.parametrize('step', [1, 3, 4, 11])
def test_looksam_reuse_step_closed_form(step):
  x, y = data(5)
  params = initial_params(5)
  alpha = 0.7
  rng = np.random.default_rng(step)
  g_v = {'b': jnp.array(rng.normal()), 'w': jnp.array(rng.normal(size=3))}
  result = looksam_step(regression(x, y, step=step), params, g_v, 5, alpha)
  g = ravel(jax.grad(lambda p: jnp.mean(per_example_losses(p, x, y)))(params))
  v = ravel(g_v)
  expected = g + alpha * np.linalg.norm(g) / np.linalg.norm(v) * v
  np.testing.assert_allclose(ravel(result.grads), expected, rtol=1e-6)
  assert_trees_close(result.state, g_v, rtol=0, atol=0)
  assert result.extras['sam_fraction'] == 0.0
  # The perturbed-pass metrics of a reuse step hold the loss at w.
  np.testing.assert_allclose(result.extras['perturbed_loss'], result.loss)


def test_looksam_reuse_with_no_kept_component_is_sgd():
  x, y = data(5)
  params = initial_params(5)
  objective = regression(x, y, step=2)
  zeros = jax.tree.map(jnp.zeros_like, params)
  result = looksam_step(objective, params, zeros)
  assert_trees_close(result.grads, sgd_reference(objective, params).grads)


def test_looksam_every_step_when_k_is_one():
  x, y = data(6)
  params = initial_params(6)
  method = methods.build('looksam', rho=RHO, looksam_every=1)
  state = method.init(params)
  for step in range(4):
    objective = regression(x, y, step=step)
    result = interface.lone_replica_update(method, objective, params, state)
    reference = sam_reference(objective, params)
    assert_trees_close(result.grads, reference.grads)
    state = result.state


def test_looksam_decomposes_the_mean_over_replicas():
  """Two replicas: g_v is the orthogonal part of the mean g_s against the
  mean g, and a reuse step adds alpha ||mean g|| along it; per-replica
  decompositions averaged afterwards differ (checked, so the test can
  fail)."""
  alpha = 0.7
  method = methods.build('looksam', rho=RHO, looksam_alpha=alpha)
  halves = [data(20)[0][:4], data(20)[0][4:]], [
      data(20)[1][:4],
      data(20)[1][4:],
  ]
  params = initial_params(20)
  state = method.init(params)

  def mean_of_replicas(step, state):
    results = [
        method.gradient(regression(x, y, step=step), params, state)
        for x, y in zip(*halves)
    ]
    mean = lambda *trees: jax.tree.map(lambda *x: sum(x) / len(x), *trees)
    return results, method.combine(
        mean(*[r.grads for r in results]),
        mean(*[r.state for r in results]),
        mean(*[r.extras for r in results]),
        step,
    )

  results, (update, g_v) = mean_of_replicas(0, state)
  g_s = ravel(update)
  g = (
      ravel(results[0].extras['first_gradient'])
      + ravel(results[1].extras['first_gradient'])
  ) / 2
  np.testing.assert_allclose(
      ravel(g_v), g_s - (g_s @ g) / (g @ g) * g, rtol=1e-5, atol=1e-7
  )
  per_replica = (
      sum(
          ravel(
              efficient.orthogonal_component(
                  r.grads, r.extras['first_gradient']
              )
          )
          for r in results
      )
      / 2
  )
  assert np.linalg.norm(per_replica - ravel(g_v)) > 1e-3 * np.linalg.norm(
      ravel(g_v)
  )
  results, (update, kept) = mean_of_replicas(1, g_v)
  v = ravel(g_v)
  g = (ravel(results[0].grads) + ravel(results[1].grads)) / 2
  np.testing.assert_allclose(
      ravel(update),
      g + alpha * np.linalg.norm(g) / np.linalg.norm(v) * v,
      rtol=1e-5,
  )
  assert_trees_close(kept, g_v, rtol=0, atol=0)


def test_looksam_passes():
  x, y = data(6)
  params = initial_params(6)
  method = methods.build('looksam', rho=RHO, looksam_every=5)
  state = method.init(params)
  counts = []
  for step in range(6):
    _, counter = run_counted(
        lambda c: method.gradient(regression(x, y, c, step=step), params, state)
    )
    counts.append(counter['grads'])
  assert counts == [2, 1, 1, 1, 1, 2]


# AE-SAM.


def aesam_step(
    objective, params, state, start, end, num_steps=100, branch='cond'
):
  method = methods.build(
      'aesam',
      rho=RHO,
      aesam_lambda_start=start,
      aesam_lambda_end=end,
      num_steps=num_steps,
      aesam_branch=branch,
  )
  return method.gradient(objective, params, state)


def zero_state():
  return methods.build('aesam', rho=RHO, num_steps=10).init(None)


def test_aesam_forced_sam_and_sgd():
  x, y = data(7)
  params = initial_params(7)
  objective = regression(x, y, step=3)
  sam = aesam_step(objective, params, zero_state(), -1e6, -1e6)
  assert_trees_close(sam.grads, sam_reference(objective, params).grads)
  assert sam.extras['sam_fraction'] == 1.0
  sgd = aesam_step(objective, params, zero_state(), 1e6, 1e6)
  assert_trees_close(sgd.grads, sgd_reference(objective, params).grads)
  assert sgd.extras['sam_fraction'] == 0.0
  np.testing.assert_allclose(sgd.extras['perturbed_loss'], sgd.loss)
  assert sam.extras.keys() == sgd.extras.keys()


@pytest.mark.parametrize(
    'mean,variance,step', [(0.0, 0.0, 0), (0.5, 0.04, 30), (2.0, 1.0, 90)]
)
def test_aesam_ema_update_and_rule(mean, variance, step):
  x, y = data(8)
  params = initial_params(8)
  delta, start, end, num_steps = 0.9, -1.0, 1.0, 100
  state = {'mean': jnp.float32(mean), 'variance': jnp.float32(variance)}
  objective = regression(x, y, step=step)
  result = efficient.aesam_gradient(
      objective, params, state, RHO, delta, start, end, num_steps
  )
  g = ravel(jax.grad(lambda p: jnp.mean(per_example_losses(p, x, y)))(params))
  s = g @ g
  new_mean = delta * mean + (1 - delta) * s
  new_variance = delta * variance + (1 - delta) * (s - new_mean) ** 2
  np.testing.assert_allclose(result.state['mean'], new_mean, rtol=1e-6)
  np.testing.assert_allclose(result.state['variance'], new_variance, rtol=1e-5)
  c = start + (end - start) * step / num_steps
  use_sam = s >= new_mean + c * math.sqrt(new_variance)
  assert result.extras['sam_fraction'] == float(use_sam)
  reference = (sam_reference if use_sam else sgd_reference)(objective, params)
  assert_trees_close(result.grads, reference.grads)


def test_aesam_both_decisions_occur_in_the_parametrisation():
  # The rule of the test above picks each branch for some state: a low mean
  # gives SAM, a high one SGD.
  x, y = data(8)
  params = initial_params(8)
  objective = regression(x, y, step=50)
  low = {'mean': jnp.float32(0.0), 'variance': jnp.float32(0.0)}
  high = {'mean': jnp.float32(1e3), 'variance': jnp.float32(1.0)}
  assert aesam_step(objective, params, low, -1, 1).extras['sam_fraction'] == 1
  assert aesam_step(objective, params, high, -1, 1).extras['sam_fraction'] == 0


def test_aesam_threshold_scale_schedule():
  scale = lambda t: float(efficient.aesam_threshold_scale(t, -1.0, 1.0, 200))
  assert scale(0) == -1.0
  assert scale(100) == 0.0
  assert scale(200) == 1.0
  assert scale(400) == 1.0


def test_aesam_is_deterministic_given_the_state():
  x, y = data(9)
  params = initial_params(9)
  state = {'mean': jnp.float32(0.3), 'variance': jnp.float32(0.01)}
  objective = regression(x, y, step=5)
  a = aesam_step(objective, params, state, -1, 1)
  b = aesam_step(objective, params, state, -1, 1)
  np.testing.assert_array_equal(ravel(a), ravel(b))


def test_aesam_decides_on_the_synced_direction():
  # A sync that scales the direction by 100 makes ||g||^2 huge against the
  # state: SAM; unsynced, the same state gives SGD.
  x, y = data(9)
  params = initial_params(9)
  state = {'mean': jnp.float32(100.0), 'variance': jnp.float32(1.0)}
  objective = regression(x, y, step=0)
  plain = aesam_step(objective, params, state, 0, 0)
  assert plain.extras['sam_fraction'] == 0.0
  scaled = objective._replace(sync=lambda g: jax.tree.map(lambda v: 100 * v, g))
  assert aesam_step(scaled, params, state, 0, 0).extras['sam_fraction'] == 1


@pytest.mark.parametrize('branch, sgd_passes', [('cond', 1), ('select', 2)])
def test_aesam_passes(branch, sgd_passes):
  # cond runs the chosen branch's passes; select runs both and keeps one.
  x, y = data(7)
  params = initial_params(7)
  for start, grads in [(-1e6, 2), (1e6, sgd_passes)]:
    _, counter = run_counted(
        lambda c: aesam_step(
            regression(x, y, c, step=3),
            params,
            zero_state(),
            start,
            start,
            branch=branch,
        )
    )
    assert counter['grads'] == grads


def test_aesam_cond_and_select_give_the_same_step():
  x, y = data(9)
  params = initial_params(9)
  for mean in (0.0, 100.0):  # SAM, then SGD.
    state = {'mean': jnp.float32(mean), 'variance': jnp.float32(1.0)}
    objective = regression(x, y, step=5)
    cond, select = (
        jax.jit(
            lambda b=b: aesam_step(objective, params, state, 0, 0, branch=b)
        )()
        for b in ('cond', 'select')
    )
    assert cond.extras['sam_fraction'] == select.extras['sam_fraction']
    assert_trees_close((cond.grads, cond.state), (select.grads, select.state))


# RST.


def test_rst_probability_one_is_sam_and_zero_is_sgd():
  # An ascent pass that differs shows each branch makes its own first pass.
  x, y = data(10)
  params = initial_params(10)
  for step in range(5):
    objective = regression(x, y, ascent_scale=3.0, step=step)
    sam = methods.build('rst', rho=RHO, rst_probability=1.0).gradient(
        objective, params, ()
    )
    reference = sam_reference(objective, params)
    assert_trees_close(sam.grads, reference.grads)
    np.testing.assert_allclose(sam.loss, reference.loss, rtol=1e-6)
    assert sam.extras['sam_fraction'] == 1.0
    sgd = methods.build('rst', rho=RHO, rst_probability=0.0).gradient(
        objective, params, ()
    )
    reference = sgd_reference(objective, params)
    assert_trees_close(sgd.grads, reference.grads)
    np.testing.assert_allclose(sgd.loss, reference.loss, rtol=1e-6)
    assert sgd.extras['sam_fraction'] == 0.0


def test_rst_choice_depends_on_the_step_and_the_run_seed_alone():
  x, y = data(11)
  params = initial_params(11)
  schedules = []
  for seed in [0, 1]:
    method = methods.build('rst', rho=RHO, rst_probability=0.5, seed=seed)
    choices = {}
    # Replicas' keys differ; their choices must not.
    for key in [0, 1]:
      for step in range(20):
        objective = regression(x, y, key=jax.random.key(key), step=step)
        fraction = float(
            method.gradient(objective, params, ()).extras['sam_fraction']
        )
        choices.setdefault(step, set()).add(fraction)
        assert fraction == float(efficient.rst_uses_sam(step, 0.5, seed))
    assert all(len(c) == 1 for c in choices.values())
    schedules.append([choices[step].pop() for step in range(20)])
    assert set(schedules[-1]) == {0.0, 1.0}
  # Each seed of a sweep draws its own schedule (20 steps: the two agree
  # by chance with probability 2^-20).
  assert schedules[0] != schedules[1]


@pytest.mark.parametrize('p', [0.2, 0.5, 0.9])
def test_rst_fraction_over_many_steps(p):
  n = 2000
  draws = jax.vmap(lambda t: efficient.rst_uses_sam(t, p, 0))(jnp.arange(n))
  fraction = float(jnp.mean(draws))
  assert abs(fraction - p) < 3 * math.sqrt(p * (1 - p) / n)


def test_rst_passes():
  x, y = data(10)
  params = initial_params(10)
  method = methods.build('rst', rho=RHO, rst_probability=0.5)
  for step in range(8):
    _, counter = run_counted(
        lambda c: method.gradient(regression(x, y, c, step=step), params, ())
    )
    expected = 2 if efficient.rst_uses_sam(step, 0.5, 0) else 1
    assert counter['grads'] == expected


def test_methods_need_the_step():
  x, y = data()
  params = initial_params()
  objective = regression(x, y)
  for method in [
      methods.build('looksam', rho=RHO),
      methods.build('aesam', rho=RHO, num_steps=10),
      methods.build('rst', rho=RHO),
  ]:
    with pytest.raises(ValueError, match='objective.step'):
      method.gradient(objective, params, method.init(params))


def test_metrics_report_sam_fraction():
  x, y = data(12)
  params = initial_params(12)
  objective = regression(x, y, step=1)
  for method in [
      methods.build('looksam', rho=RHO),
      methods.build('aesam', rho=RHO, num_steps=10),
      methods.build('rst', rho=RHO),
  ]:
    result = method.gradient(objective, params, method.init(params))
    metrics = method.metrics(result.grads, result.extras)
    assert metrics['sam_fraction'] == result.extras['sam_fraction']
    assert 'train_loss_perturbed' in metrics


def test_jitted_step_matches_eager():
  x, y = data(13)
  params = initial_params(13)
  method = methods.build('aesam', rho=RHO, num_steps=10)
  state = method.init(params)
  objective = regression(x, y, step=2)
  eager = method.gradient(objective, params, state)
  jitted = jax.jit(lambda p, s: method.gradient(objective, p, s))(params, state)
  assert_trees_close(eager.grads, jitted.grads, rtol=1e-6)


# The host's choice (Method.schedule, Objective.second_pass).


@pytest.mark.parametrize(
    'name, fields',
    [('looksam', {'looksam_every': 3}), ('rst', {'rst_probability': 0.4})],
)
def test_host_schedule_is_the_device_choice_and_gives_the_same_step(
    name, fields
):
  x, y = data(11)
  params = initial_params(11)
  method = methods.build(name, rho=RHO, seed=5, **fields)
  state = method.init(params)
  steps = np.arange(40)
  schedule = method.schedule(steps)
  assert schedule.dtype == bool and 0 < schedule.sum() < len(steps)
  for step in steps[:12]:
    objective = regression(x, y, ascent_scale=2.0, step=step)
    on_device = jax.jit(lambda o=objective: method.gradient(o, params, state))()
    on_host = method.gradient(
        objective._replace(second_pass=bool(schedule[step])), params, state
    )
    assert float(on_device.extras['sam_fraction']) == schedule[step]
    assert_trees_close(
        (on_device.grads, on_device.loss), (on_host.grads, on_host.loss)
    )


def test_rst_schedule_draws_the_device_trials():
  steps = np.arange(200)
  host = efficient.rst_schedule(steps, 0.3, 7)
  device = [bool(efficient.rst_uses_sam(s, 0.3, 7)) for s in steps[:50]]
  np.testing.assert_array_equal(host[:50], device)
  assert abs(host.mean() - 0.3) < 0.1  # 200 trials: sd 0.032.
  assert not np.array_equal(host, efficient.rst_schedule(steps, 0.3, 8))


def test_host_choice_runs_only_the_chosen_passes():
  x, y = data(7)
  params = initial_params(7)
  method = methods.build('looksam', rho=RHO, looksam_every=2)
  state = method.init(params)
  for second_pass, grads in [(True, 2), (False, 1)]:
    _, counter = run_counted(
        lambda c, s=second_pass: method.gradient(
            regression(x, y, c, step=1)._replace(second_pass=s), params, state
        )
    )
    assert counter['grads'] == grads
