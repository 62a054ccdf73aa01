"""The pmapped train step on 2 fake CPU devices against manual computations."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import jax_utils

import models
from configs import base
from sam import losses
from sam import optim
from sam import steps

NUM_DEVICES = 2


class TinyMLP(nn.Module):
  """No BatchNorm, so the full-batch gradient is the mean of device ones."""
  num_classes: int = 3
  dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train=True, ascent=False):
    x = x.reshape((x.shape[0], -1))
    x = nn.tanh(nn.Dense(8)(x))
    return nn.Dense(self.num_classes)(x)


def make_config(optimizer='sam', rho=0.5, sync=False):
  c = base.base_config()
  c.optimizer = optimizer
  c.sam.rho = rho
  c.sam.sync_perturbation = sync
  c.weight_decay = 1e-3
  c.learning_rate = 0.1
  return c


def make_batch(seed, n=8, shape=(4, 4, 1), num_classes=3):
  rng = np.random.default_rng(seed)
  return {'image': rng.normal(size=(n,) + shape).astype(np.float32),
          'label': rng.integers(0, num_classes, n).astype(np.int32)}


def run_pmapped_step(model, config, state, batch):
  p_step = jax.pmap(functools.partial(steps.train_step, model=model,
                                      config=config), axis_name='batch')
  device_batch = jax.tree.map(
      lambda x: x.reshape((NUM_DEVICES, -1) + x.shape[1:]), batch)
  new_state, _ = p_step(jax_utils.replicate(state), device_batch)
  return jax_utils.unreplicate(new_state)


def init_state(model, config, image_shape):
  tx = optim.create_optimizer(config, optax.constant_schedule(
      config.learning_rate))
  return steps.create_train_state(model, image_shape, tx, seed=0), tx


def mlp_grad(model, config, params, batch):
  """Gradient of CE + 0.5 wd ||w||^2, written out independently."""

  def loss(p):
    logits = model.apply({'params': p}, batch['image'])
    onehot = jax.nn.one_hot(batch['label'], logits.shape[-1])
    ce = -jnp.mean(jnp.sum(onehot * jax.nn.log_softmax(logits), -1))
    l2 = sum(jnp.sum(w ** 2) for w in jax.tree.leaves(p))
    return ce + 0.5 * config.weight_decay * l2

  return jax.grad(loss)(params)


def ravel(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def unravel_like(vector, tree):
  leaves, treedef = jax.tree.flatten(tree)
  sizes = np.cumsum([0] + [x.size for x in leaves])
  return jax.tree.unflatten(treedef, [
      jnp.asarray(vector[a:b].reshape(x.shape))
      for a, b, x in zip(sizes[:-1], sizes[1:], leaves)])


def manual_update(model, config, state, tx, batch, eps_batches):
  """SAM with one perturbation per batch in `eps_batches`, then the mean
  of the descent gradients of each device's half."""
  w = ravel(state.params)
  halves = [jax.tree.map(lambda x, i=i: x[i * 4:(i + 1) * 4], batch)
            for i in range(NUM_DEVICES)]
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
  halves = [jax.tree.map(lambda x, i=i: x[i * 4:(i + 1) * 4], batch)
            for i in range(NUM_DEVICES)]
  expected = manual_update(model, config, state, tx, batch, halves)
  got = run_pmapped_step(model, config, state, batch).params
  np.testing.assert_allclose(ravel(got), ravel(expected), rtol=1e-5,
                             atol=1e-6)
  # And it is not what one global perturbation would give.
  global_eps = manual_update(model, config, state, tx, batch, [batch] * 2)
  assert np.max(np.abs(ravel(got) - ravel(global_eps))) > 1e-4


def test_sync_mode_perturbs_with_the_full_batch_gradient():
  model, config, batch = TinyMLP(), make_config(sync=True), make_batch(1)
  state, tx = init_state(model, config, (4, 4, 1))
  expected = manual_update(model, config, state, tx, batch, [batch] * 2)
  got = run_pmapped_step(model, config, state, batch).params
  np.testing.assert_allclose(ravel(got), ravel(expected), rtol=1e-5,
                             atol=1e-6)


def test_sgd_step_is_the_plain_averaged_gradient():
  model, config, batch = TinyMLP(), make_config('sgd'), make_batch(2)
  state, tx = init_state(model, config, (4, 4, 1))
  grads = mlp_grad(model, config, state.params, batch)
  updates, _ = tx.update(grads, state.opt_state, state.params)
  expected = optax.apply_updates(state.params, updates)
  got = run_pmapped_step(model, config, state, batch).params
  np.testing.assert_allclose(ravel(got), ravel(expected), rtol=1e-5,
                             atol=1e-6)


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
    _, new = model.apply({'params': params, 'batch_stats': state.batch_stats},
                         half['image'], train=True, mutable=['batch_stats'])
    return new['batch_stats']

  halves = [jax.tree.map(lambda x, i=i: x[i * 4:(i + 1) * 4], batch)
            for i in range(NUM_DEVICES)]
  unperturbed = [pass_stats(state.params, h) for h in halves]
  expected = jax.tree.map(lambda a, b: (a + b) / 2, *unperturbed)
  np.testing.assert_allclose(ravel(got), ravel(expected), rtol=1e-5,
                             atol=1e-6)

  # The perturbed pass's statistics differ, so the check above has teeth.
  def half_grad(half):
    def loss(p):
      logits, _ = model.apply({'params': p, 'batch_stats': state.batch_stats},
                              half['image'], train=True,
                              mutable=['batch_stats'])
      return jnp.mean(losses.cross_entropy(logits, half['label'])) + (
          losses.l2_penalty(p, config.weight_decay))
    return jax.grad(loss)(state.params)

  g = ravel(half_grad(halves[0]))
  perturbed = unravel_like(ravel(state.params) + g / np.linalg.norm(g),
                           state.params)
  assert np.max(np.abs(ravel(pass_stats(perturbed, halves[0])) -
                       ravel(unperturbed[0]))) > 1e-3
