"""The pmapped train step on 2 fake CPU devices against manual computations."""

import functools
import math
from typing import Any

from flax import jax_utils
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import base
import models
from sam import ablations
from sam import interface
from sam import losses
from sam import methods
from sam import optim
from sam import perturbation as ball
from sam.run import checks
from sam.run import state as state_lib
from sam.run import step as step_lib

NUM_DEVICES = 2


class TinyMLP(nn.Module):
  """No BatchNorm, so the full-batch gradient is the mean of device ones."""

  num_classes: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train=True, ascent=False):
    x = x.reshape((x.shape[0], -1))
    x = nn.tanh(nn.Dense(8, dtype=self.dtype)(x))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


def make_config(method='sam', rho=0.5, sync=False):
  c = base.base_config()
  c.sam.method = method
  c.sam.rho = rho
  c.sam.sync_perturbation = sync
  c.optim.weight_decay = 1e-3
  c.optim.learning_rate = 0.1
  return c


def make_batch(seed, n=8, shape=(4, 4, 1), num_classes=3):
  rng = np.random.default_rng(seed)
  return {
      'image': rng.normal(size=(n,) + shape).astype(np.float32),
      'label': rng.integers(0, num_classes, n).astype(np.int32),
  }


def run_pmapped_step(model, config, state, batch):
  return run_steps(model, config, state, [batch])[0]


def init_state(model, config, image_shape):
  tx = optim.create_optimizer(
      config.optim, optax.constant_schedule(config.optim.learning_rate)
  )
  return state_lib.create_train_state(model, image_shape, tx, seed=0), tx


def mlp_grad(model, config, params, batch):
  """Gradient of CE + 0.5 wd ||w||^2, written out independently."""

  def loss(p):
    logits = model.apply({'params': p}, batch['image'])
    onehot = jax.nn.one_hot(batch['label'], logits.shape[-1])
    ce = -jnp.mean(jnp.sum(onehot * jax.nn.log_softmax(logits), -1))
    l2 = sum(jnp.sum(w**2) for w in jax.tree.leaves(p))
    return ce + 0.5 * config.optim.weight_decay * l2

  return jax.grad(loss)(params)


def ravel(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def unravel_like(vector, tree):
  leaves, treedef = jax.tree.flatten(tree)
  sizes = np.cumsum([0] + [x.size for x in leaves])
  return jax.tree.unflatten(
      treedef,
      [
          jnp.asarray(vector[a:b].reshape(x.shape))
          for a, b, x in zip(sizes[:-1], sizes[1:], leaves)
      ],
  )


def manual_update(model, config, state, tx, batch, eps_batches):
  """SAM with one perturbation per batch in `eps_batches`, then the mean
  of the descent gradients of each device's half."""
  w = ravel(state.params)
  halves = [
      jax.tree.map(lambda x, i=i: x[i * 4 : (i + 1) * 4], batch)
      for i in range(NUM_DEVICES)
  ]
  descent = []
  for half, eps_batch in zip(halves, eps_batches):
    g1 = ravel(mlp_grad(model, config, state.params, eps_batch))
    eps = config.sam.rho * g1 / np.linalg.norm(g1)
    perturbed = unravel_like(w + eps, state.params)
    descent.append(ravel(mlp_grad(model, config, perturbed, half)))
  grads = unravel_like(np.mean(descent, axis=0), state.params)
  updates, _ = tx.update(grads, state.opt_state, state.params)
  return optax.apply_updates(state.params, updates)


def test_each_device_perturbs_with_its_own_half_of_the_batch():
  model, config, batch = TinyMLP(), make_config(), make_batch(0)
  state, tx = init_state(model, config, (4, 4, 1))
  halves = [
      jax.tree.map(lambda x, i=i: x[i * 4 : (i + 1) * 4], batch)
      for i in range(NUM_DEVICES)
  ]
  expected = manual_update(model, config, state, tx, batch, halves)
  got = run_pmapped_step(model, config, state, batch).params
  np.testing.assert_allclose(ravel(got), ravel(expected), rtol=1e-5, atol=1e-6)
  # And it is not what one global perturbation would give.
  global_eps = manual_update(model, config, state, tx, batch, [batch] * 2)
  assert np.max(np.abs(ravel(got) - ravel(global_eps))) > 1e-4


def test_sync_mode_perturbs_with_the_full_batch_gradient():
  model, config, batch = TinyMLP(), make_config(sync=True), make_batch(1)
  state, tx = init_state(model, config, (4, 4, 1))
  expected = manual_update(model, config, state, tx, batch, [batch] * 2)
  got = run_pmapped_step(model, config, state, batch).params
  np.testing.assert_allclose(ravel(got), ravel(expected), rtol=1e-5, atol=1e-6)


def test_sgd_step_is_the_plain_averaged_gradient():
  model, config, batch = TinyMLP(), make_config('sgd'), make_batch(2)
  state, tx = init_state(model, config, (4, 4, 1))
  grads = mlp_grad(model, config, state.params, batch)
  updates, _ = tx.update(grads, state.opt_state, state.params)
  expected = optax.apply_updates(state.params, updates)
  got = run_pmapped_step(model, config, state, batch).params
  np.testing.assert_allclose(ravel(got), ravel(expected), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('optimizer', ['sam', 'sgd'])
def test_rho_zero_sam_equals_sgd(optimizer):
  model, batch = TinyMLP(), make_batch(3)
  config = make_config(optimizer, rho=0.0)
  state, _ = init_state(model, config, (4, 4, 1))
  got = run_pmapped_step(model, config, state, batch).params
  reference = run_pmapped_step(model, make_config('sgd'), state, batch).params
  np.testing.assert_allclose(ravel(got), ravel(reference), rtol=1e-6)


def test_batchnorm_statistics_come_from_the_unperturbed_pass():
  model = models.create_model('wrn_mini', num_classes=3)
  config = make_config(rho=1.0)
  batch = make_batch(4, shape=(8, 8, 1))
  state, _ = init_state(model, config, (8, 8, 1))
  got = run_pmapped_step(model, config, state, batch).batch_stats

  def pass_stats(params, half):
    _, new = model.apply(
        {'params': params, 'batch_stats': state.batch_stats},
        half['image'],
        train=True,
        mutable=['batch_stats'],
    )
    return new['batch_stats']

  halves = [
      jax.tree.map(lambda x, i=i: x[i * 4 : (i + 1) * 4], batch)
      for i in range(NUM_DEVICES)
  ]
  unperturbed = [pass_stats(state.params, h) for h in halves]
  expected = jax.tree.map(lambda a, b: (a + b) / 2, *unperturbed)
  np.testing.assert_allclose(ravel(got), ravel(expected), rtol=1e-5, atol=1e-6)

  # The perturbed pass's statistics differ, so the check above has teeth.
  def half_grad(half):
    def loss(p):
      logits, _ = model.apply(
          {'params': p, 'batch_stats': state.batch_stats},
          half['image'],
          train=True,
          mutable=['batch_stats'],
      )
      return jnp.mean(losses.cross_entropy(logits, half['label'])) + (
          losses.l2_penalty(p, config.optim.weight_decay)
      )

    return jax.grad(loss)(state.params)

  g = ravel(half_grad(halves[0]))
  perturbed = unravel_like(
      ravel(state.params) + g / np.linalg.norm(g), state.params
  )
  assert (
      np.max(
          np.abs(
              ravel(pass_stats(perturbed, halves[0])) - ravel(unperturbed[0])
          )
      )
      > 1e-3
  )


# The SAM family in the step. Compiled steps are cached by (model, config,
# devices) so that tests sharing a configuration compile it once.
_COMPILED = {}


def _method(config):
  return methods.create(
      config.sam,
      learning_rate=optax.constant_schedule(config.optim.learning_rate),
      num_steps=1000,
  )


def compiled_step(model, config, num_devices=NUM_DEVICES):
  key = (model, config.to_json(), num_devices)
  if key not in _COMPILED:
    _COMPILED[key] = jax.pmap(
        step_lib.make_train_step(
            config, model, model.num_classes, num_devices, _method(config)
        ),
        axis_name='batch',
        devices=jax.local_devices()[:num_devices],
    )
  return _COMPILED[key]


def run_steps(model, config, state, batches, num_devices=NUM_DEVICES):
  """Runs one step per batch; returns the final state and last metrics."""
  p_step = compiled_step(model, config, num_devices)
  mesh = state_lib.device_mesh(jax.local_devices()[:num_devices])
  replicated = state_lib.replicate(state, mesh)
  for batch in batches:
    replicated, metrics = p_step(
        replicated,
        state_lib.shard(
            jax.tree.map(
                lambda x: x.reshape((num_devices, -1) + x.shape[1:]), batch
            ),
            mesh,
        ),
    )
  return state_lib.unreplicate(replicated), state_lib.unreplicate(metrics)


def variant_config(**fields):
  config = make_config()
  for name, value in fields.items():
    target = config.optim if name == 'accumulation_steps' else config.sam
    target[name] = value
  return config


def part(batch, index, size):
  return jax.tree.map(lambda x: x[index * size : (index + 1) * size], batch)


def mlp_grad_fn(model, config, data):
  """params -> ((loss, None), grads) on `data`, independent of the step."""

  def loss(p):
    logits = model.apply({'params': p}, data['image'])
    onehot = jax.nn.one_hot(data['label'], logits.shape[-1])
    ce = -jnp.mean(jnp.sum(onehot * jax.nn.log_softmax(logits), -1))
    l2 = sum(jnp.sum(w**2) for w in jax.tree.leaves(p))
    return ce + 0.5 * config.optim.weight_decay * l2, None

  return jax.value_and_grad(loss, has_aux=True)


def sam_variant(**options):
  """(grad_fn, params) -> the grads of methods.sam_gradient."""
  return lambda grad_fn, params: methods.sam_gradient(
      interface.objective(grad_fn), params, 0.5, **options
  ).grads


SAM = sam_variant()


def manual_group_update(
    model, config, state, tx, batch, group_size, variant=SAM
):
  """Each group of `group_size` examples: its own eps and descent gradient
  (by the pure `variant`); the update uses the mean over groups."""
  num_groups = len(batch['label']) // group_size
  descent = [
      ravel(
          variant(
              mlp_grad_fn(model, config, part(batch, i, group_size)),
              state.params,
          )
      )
      for i in range(num_groups)
  ]
  grads = unravel_like(np.mean(descent, axis=0), state.params)
  updates, _ = tx.update(grads, state.opt_state, state.params)
  return optax.apply_updates(state.params, updates)


@pytest.mark.parametrize('m_groups', ['vmap', 'unroll'])
def test_m_sharpness_groups_each_perturb_with_their_own_examples(m_groups):
  # m = 2 on 2 devices of 4: four independent perturbations.
  model, batch = TinyMLP(), make_batch(5)
  config = variant_config(m=2, m_groups=m_groups)
  state, tx = init_state(model, config, (4, 4, 1))
  variant = sam_variant()
  expected = manual_group_update(model, config, state, tx, batch, 2, variant)
  got, _ = run_steps(model, config, state, [batch])
  np.testing.assert_allclose(
      ravel(got.params), ravel(expected), rtol=1e-5, atol=1e-6
  )
  # Not the per-device (m = 4) update.
  per_device = manual_group_update(model, config, state, tx, batch, 4, variant)
  assert np.max(np.abs(ravel(got.params) - ravel(per_device))) > 1e-4


def test_m_equal_to_the_device_batch_is_the_default_mode():
  model, batch = TinyMLP(), make_batch(6)
  state, _ = init_state(model, make_config(), (4, 4, 1))
  got, _ = run_steps(model, variant_config(m=4), state, [batch])
  default, _ = run_steps(model, make_config(), state, [batch])
  np.testing.assert_array_equal(ravel(got.params), ravel(default.params))


def test_on_one_device_m_equal_to_the_global_batch_is_sync_mode():
  model, batch = TinyMLP(), make_batch(7)
  state, tx = init_state(model, make_config(), (4, 4, 1))
  got, _ = run_steps(model, variant_config(m=8), state, [batch], 1)
  synced, _ = run_steps(model, make_config(sync=True), state, [batch], 1)
  np.testing.assert_allclose(
      ravel(got.params), ravel(synced.params), rtol=1e-6, atol=1e-7
  )
  # And both are SAM with the full-batch eps.
  expected = manual_update(model, make_config(), state, tx, batch, [batch] * 2)
  np.testing.assert_allclose(
      ravel(got.params), ravel(expected), rtol=1e-5, atol=1e-6
  )


@pytest.mark.parametrize(
    'fields',
    [
        {'accumulation_steps': 2},
        {'accumulation_steps': 2, 'sync_perturbation': True},
    ],
)
def test_accumulation_equals_one_big_batch(fields):
  # No BatchNorm: the mean of micro-batch gradients is the batch gradient,
  # and the first gradient is accumulated before it is normalised.
  model, batches = TinyMLP(), [make_batch(8), make_batch(9)]
  reference_fields = {
      k: v for k, v in fields.items() if k != 'accumulation_steps'
  }
  state, _ = init_state(model, make_config(), (4, 4, 1))
  got, metrics = run_steps(model, variant_config(**fields), state, batches)
  reference, reference_metrics = run_steps(
      model, variant_config(**reference_fields), state, batches
  )
  np.testing.assert_allclose(
      ravel(got.params), ravel(reference.params), rtol=1e-6, atol=1e-7
  )
  np.testing.assert_allclose(
      metrics.compute()['train_loss'],
      reference_metrics.compute()['train_loss'],
      rtol=1e-6,
  )


def test_accumulation_with_m_groups_equals_the_groups_without_it():
  model, batch = TinyMLP(), make_batch(10)
  state, _ = init_state(model, make_config(), (4, 4, 1))
  got, _ = run_steps(
      model, variant_config(m=2, accumulation_steps=2), state, [batch]
  )
  reference, _ = run_steps(model, variant_config(m=2), state, [batch])
  np.testing.assert_allclose(
      ravel(got.params), ravel(reference.params), rtol=1e-6, atol=1e-7
  )


def second_order_variant(grad_fn, params):
  return ablations.second_order_sam_gradient(
      interface.objective(grad_fn), params, 0.5
  ).grads


@pytest.mark.parametrize(
    'fields,variant',
    [
        ({'p': math.inf}, sam_variant(p=math.inf)),
        (
            {'adaptive': True, 'adaptive_eta': 0.1},
            sam_variant(adaptive=True, adaptive_eta=0.1),
        ),
        ({'ascent_steps': 2}, sam_variant(ascent_steps=2)),
        ({'method': 'second_order'}, second_order_variant),
    ],
)
def test_variant_step_is_the_pure_variant_on_each_device(fields, variant):
  model, batch = TinyMLP(), make_batch(11)
  config = variant_config(**fields)
  state, tx = init_state(model, config, (4, 4, 1))
  expected = manual_group_update(model, config, state, tx, batch, 4, variant)
  got, metrics = run_steps(model, config, state, [batch])
  np.testing.assert_allclose(
      ravel(got.params), ravel(expected), rtol=1e-5, atol=1e-6
  )
  if fields.get('method') == 'second_order':
    first_order = np.mean(
        [
            ravel(
                sam_variant()(
                    mlp_grad_fn(model, config, part(batch, i, 4)), state.params
                )
            )
            for i in range(NUM_DEVICES)
        ],
        axis=0,
    )
    second_order = np.mean(
        [
            ravel(
                variant(
                    mlp_grad_fn(model, config, part(batch, i, 4)), state.params
                )
            )
            for i in range(NUM_DEVICES)
        ],
        axis=0,
    )
    cosine = (
        first_order
        @ second_order
        / (np.linalg.norm(first_order) * np.linalg.norm(second_order))
    )
    np.testing.assert_allclose(
        metrics.compute()['second_order_cosine'], cosine, rtol=1e-5
    )
    assert cosine < 1 - 1e-6


def test_random_perturbation_step_uses_a_random_eps_per_device():
  model, batch = TinyMLP(), make_batch(12)
  config = variant_config(method='random')
  state, tx = init_state(model, config, (4, 4, 1))
  got, _ = run_steps(model, config, state, [batch])
  # The step's method stream: (seed, step), then the device index.
  noise_key = jax.random.fold_in(
      jax.random.fold_in(jax.random.key(config.seed), 0),
      step_lib._METHOD_STREAM,
  )
  descent = []
  for device in range(NUM_DEVICES):
    eps = ball.random_perturbation(
        jax.random.fold_in(noise_key, device), state.params, config.sam.rho
    )
    np.testing.assert_allclose(ball.global_norm(eps), config.sam.rho, rtol=1e-6)
    descent.append(
        ravel(
            mlp_grad_fn(model, config, part(batch, device, 4))(
                ball.perturb(state.params, eps)
            )[1]
        )
    )
  grads = unravel_like(np.mean(descent, axis=0), state.params)
  updates, _ = tx.update(grads, state.opt_state, state.params)
  np.testing.assert_allclose(
      ravel(got.params),
      ravel(optax.apply_updates(state.params, updates)),
      rtol=1e-5,
      atol=1e-6,
  )


def test_bfloat16_step_keeps_float32_state_and_stays_close_to_float32():
  batch = make_batch(13)
  config = make_config()
  state, _ = init_state(TinyMLP(), config, (4, 4, 1))
  f32, _ = run_steps(TinyMLP(), config, state, [batch])
  bf16, _ = run_steps(TinyMLP(dtype=jnp.bfloat16), config, state, [batch])
  for leaf in jax.tree.leaves(bf16.params):
    assert leaf.dtype == jnp.float32
  update = ravel(f32.params) - ravel(state.params)
  error = ravel(bf16.params) - ravel(f32.params)
  assert np.linalg.norm(error) < 0.02 * np.linalg.norm(update)


def test_sam_step_matches_optax_contrib_sam_opaque_mode():
  # optax.contrib.sam, opaque mode, sync_period 2: one normalised ascent
  # step of size rho (the inner optimizer), then the outer optimizer on the
  # gradient there; the outer optimizer is the run's. Under pmap with local
  # first gradients and a pmean of the second this is the per-device SAM.
  model, config = TinyMLP(), make_config()
  batches = [make_batch(20 + i) for i in range(3)]
  state, tx = init_state(model, config, (4, 4, 1))
  got, _ = run_steps(model, config, state, batches)

  opt = optax.contrib.sam(
      optimizer=tx,
      adv_optimizer=optax.chain(
          optax.contrib.normalize(), optax.sgd(config.sam.rho)
      ),
      sync_period=2,
      opaque_mode=True,
      batch_axis_name='batch',
  )

  def optax_step(params, opt_state, batch):
    grad = lambda p, _: jax.grad(
        lambda q: mlp_grad_fn(model, config, batch)(q)[0][0]
    )(p)
    updates, opt_state = opt.update(
        grad(params, 0), opt_state, params, grad_fn=grad
    )
    return optax.apply_updates(params, updates), opt_state

  p_optax = jax.pmap(optax_step, axis_name='batch')
  params = jax_utils.replicate(state.params)
  opt_state = jax_utils.replicate(opt.init(state.params))
  for batch in batches:
    params, opt_state = p_optax(
        params,
        opt_state,
        jax.tree.map(
            lambda x: x.reshape((NUM_DEVICES, -1) + x.shape[1:]), batch
        ),
    )
  np.testing.assert_allclose(
      ravel(got.params), ravel(jax_utils.unreplicate(params)), rtol=0, atol=1e-6
  )
  assert np.max(np.abs(ravel(got.params) - ravel(state.params))) > 1e-2


def test_frozen_batch_stats_are_unchanged_by_a_step():
  model = models.create_model('wrn_mini', num_classes=3)
  config = make_config(rho=0.5)
  config.model.freeze_batch_stats = True
  batch = make_batch(5, shape=(8, 8, 1))
  state, _ = init_state(model, config, (8, 8, 1))
  state = state.replace(
      batch_stats=jax.tree.map(lambda x: x + 0.5, state.batch_stats)
  )
  new_state = run_pmapped_step(model, config, state, batch)
  np.testing.assert_array_equal(
      ravel(new_state.batch_stats), ravel(state.batch_stats)
  )
  assert np.max(np.abs(ravel(new_state.params) - ravel(state.params))) > 0


def test_mixup_step_trains_on_mixed_soft_targets():
  model, batch = TinyMLP(), make_batch(6)
  config = make_config('sgd')
  config.data.mixup_alpha = 1.0
  state, _ = init_state(model, config, (4, 4, 1))
  mixed = run_pmapped_step(model, config, state, batch).params
  plain = run_pmapped_step(model, make_config('sgd'), state, batch).params
  assert np.max(np.abs(ravel(mixed) - ravel(plain))) > 1e-6
  again = run_pmapped_step(model, config, state, batch).params
  np.testing.assert_array_equal(ravel(mixed), ravel(again))


def test_a_new_method_is_one_function_and_one_table_line(
    monkeypatch, readme_sam_variant
):
  # The README's "Adding a SAM variant" example as printed: the constructor
  # in sam/methods.py's namespace, its METHODS line, its config field.
  constructor, table_line, _ = readme_sam_variant
  namespace = dict(vars(methods))
  exec(constructor, namespace)  # pylint: disable=exec-used
  entry = eval('{' + table_line + '}', namespace)  # pylint: disable=eval-used
  monkeypatch.setitem(methods.METHODS, 'my_sam', entry['my_sam'])
  model, batch = TinyMLP(), make_batch(14)
  config = make_config()
  config.sam.method, config.sam.my_knob = 'my_sam', 0.3
  checks.validate(config, NUM_DEVICES)
  state, tx = init_state(model, config, (4, 4, 1))
  got, _ = run_steps(model, config, state, [batch])
  # SAM at rho = 0.3 * 0.5 on each device's half.
  variant = lambda grad_fn, params: methods.sam_gradient(
      interface.objective(grad_fn), params, 0.15
  ).grads
  expected = manual_group_update(model, config, state, tx, batch, 4, variant)
  np.testing.assert_allclose(
      ravel(got.params), ravel(expected), rtol=1e-5, atol=1e-6
  )
  config.sam.my_knob = 0.0
  with pytest.raises(checks.ConfigError, match='sam.my_knob = 0.0: must be'):
    checks.validate(config, NUM_DEVICES)


def test_sam_logs_the_loss_and_error_of_both_passes():
  # The official code logs the pass at w + eps (Appendix C.4); the step
  # logs both, the pass at w as train_loss and the other as
  # train_loss_perturbed.
  model, config, batch = TinyMLP(), make_config(), make_batch(30)
  state, _ = init_state(model, config, (4, 4, 1))
  _, metrics = run_steps(model, config, state, [batch])
  computed = metrics.compute()
  w = ravel(state.params)
  losses_w, losses_eps, errors_eps = [], [], []
  for i in range(NUM_DEVICES):
    half = part(batch, i, 4)
    g1 = ravel(mlp_grad(model, config, state.params, half))
    perturbed = unravel_like(
        w + config.sam.rho * g1 / np.linalg.norm(g1), state.params
    )
    for params, out in ((state.params, losses_w), (perturbed, losses_eps)):
      logits = model.apply({'params': params}, half['image'])
      out.append(np.asarray(losses.cross_entropy(logits, half['label'])))
    errors_eps.append(
        np.asarray(
            losses.top1_error(
                model.apply({'params': perturbed}, half['image']), half['label']
            )
        )
    )
  np.testing.assert_allclose(
      computed['train_loss'], np.mean(losses_w), rtol=1e-5
  )
  np.testing.assert_allclose(
      computed['train_loss_perturbed'], np.mean(losses_eps), rtol=1e-5
  )
  np.testing.assert_allclose(
      computed['train_error_perturbed'], np.mean(errors_eps), rtol=1e-6
  )
  assert computed['train_loss_perturbed'] > computed['train_loss']
  _, sgd_metrics = run_steps(model, make_config('sgd'), state, [batch])
  assert 'train_loss_perturbed' not in sgd_metrics.compute()


class GatedMLP(nn.Module):
  """A dropout gate (the `dropout` collection) and, optionally, a per-unit
  shake coefficient (the `shake` collection), as the real models draw them."""

  gate: bool = True
  shake: bool = True
  num_classes: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train=True, ascent=False):
    x = nn.tanh(nn.Dense(16)(x.reshape((x.shape[0], -1))))
    if self.gate:
      x = nn.Dropout(0.5, deterministic=not train)(x)
    if self.shake and train:
      x = x * jax.random.uniform(self.make_rng('shake'), x.shape, x.dtype)
    return nn.Dense(self.num_classes)(x)


@pytest.mark.parametrize(
    'gate, fresh, passes_differ',
    [
        (True, True, True),
        (True, False, False),
        # Shake coefficients alone: shared by both passes either way.
        (False, True, False),
    ],
)
def test_sam_passes_redraw_the_gates_but_share_the_shake_coefficients(
    gate, fresh, passes_differ
):
  """The official hardware Bernoulli: at rho = 0 both passes evaluate the
  same weights, so their logged losses differ exactly when their gates do."""
  model = GatedMLP(gate=gate)
  config = make_config(rho=0.0)
  config.model.fresh_gates_each_pass = fresh
  state, _ = init_state(model, config, (4, 4, 1))
  computed = run_steps(model, config, state, [make_batch(32)])[1].compute()
  at_w, at_w_again = computed['train_loss'], computed['train_loss_perturbed']
  if passes_differ:
    assert abs(at_w - at_w_again) > 1e-3 * abs(at_w)
  else:
    np.testing.assert_allclose(at_w_again, at_w, rtol=1e-6)


def test_eval_step_counts_top5_errors_and_ignores_padding():
  model = TinyMLP(num_classes=7)
  state, _ = init_state(model, make_config(), (4, 4, 1))
  batch = make_batch(31, num_classes=7)
  batch['mask'] = np.array([1, 1, 1, 1, 1, 1, 0, 0], np.float32)
  p_eval = jax.pmap(
      functools.partial(step_lib.eval_step, model=model), axis_name='batch'
  )
  mesh = state_lib.device_mesh(jax.local_devices()[:NUM_DEVICES])
  shaped = jax.tree.map(
      lambda x: x.reshape((NUM_DEVICES, -1) + x.shape[1:]), batch
  )
  metrics = state_lib.unreplicate(
      p_eval(state_lib.replicate(state, mesh), state_lib.shard(shaped, mesh))
  )
  logits = np.asarray(model.apply({'params': state.params}, batch['image']))
  ranks = (logits > logits[np.arange(8), batch['label']][:, None]).sum(-1)
  expected = np.mean((ranks >= 5)[:6])
  np.testing.assert_allclose(metrics.compute()['top5_error'], expected)


def test_the_update_clips_the_mean_gradient_not_each_devices():
  # The official code clips the cross-replica mean to global norm 5
  # (flax_training.py, clip_by_global_norm after the pmean). A large output
  # layer gives each device's half a gradient far above 5.
  model, config, batch = TinyMLP(), make_config('sgd'), make_batch(40)
  state, tx = init_state(model, config, (4, 4, 1))
  params = dict(state.params)
  params['Dense_1'] = jax.tree.map(lambda x: 30 * x, params['Dense_1'])
  state = state.replace(params=params)
  halves = [
      mlp_grad(model, config, state.params, part(batch, i, 4))
      for i in range(NUM_DEVICES)
  ]
  limit = config.optim.grad_clip_norm
  assert limit == 5.0
  assert min(np.linalg.norm(ravel(g)) for g in halves) > 2 * limit
  mean = jax.tree.map(lambda a, b: (a + b) / 2, *halves)
  updates, _ = tx.update(mean, state.opt_state, state.params)
  expected = optax.apply_updates(state.params, updates)
  got = run_pmapped_step(model, config, state, batch).params
  np.testing.assert_allclose(ravel(got), ravel(expected), rtol=1e-5, atol=1e-6)
  # Clipping each half before the mean gives another step.
  clipped = [
      jax.tree.map(lambda x, g=g: x * limit / np.linalg.norm(ravel(g)), g)
      for g in halves
  ]
  updates, _ = tx.update(
      jax.tree.map(lambda a, b: (a + b) / 2, *clipped),
      state.opt_state,
      state.params,
  )
  per_device = optax.apply_updates(state.params, updates)
  assert np.max(np.abs(ravel(per_device) - ravel(expected))) > 1e-3
