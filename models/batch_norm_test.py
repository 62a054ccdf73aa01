"""Tests for models/batch_norm.py."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models import batch_norm
from models import layers

MEAN, VAR, EPSILON = 3.0, 4.0, 1e-5


class TrainModeNorm(nn.Module):
  """One BatchNorm built as the models build it in training mode."""

  @nn.compact
  def __call__(self, x):
    return layers.batch_norm(True, jnp.float32, epsilon=EPSILON)()(x)


def _apply(x):
  """The layer's output and statistics from running averages MEAN, VAR."""
  variables = {
      'params': {'BatchNorm_0': {'scale': jnp.ones(2), 'bias': jnp.zeros(2)}},
      'batch_stats': {
          'BatchNorm_0': {'mean': jnp.full(2, MEAN), 'var': jnp.full(2, VAR)}
      },
  }
  y, state = TrainModeNorm().apply(variables, x, mutable=['batch_stats'])
  return y, state['batch_stats']['BatchNorm_0']


def test_frozen_normalises_with_the_running_averages_in_train_mode():
  # The batch's own statistics (mean about 0, var about 1) are far from the
  # running ones, so normalising with either gives different outputs.
  x = jnp.asarray(np.random.default_rng(0).normal(size=(16, 2)), jnp.float32)
  with batch_norm.frozen():
    frozen, frozen_stats = _apply(x)
  running = (np.asarray(x) - MEAN) / np.sqrt(VAR + EPSILON)
  np.testing.assert_allclose(frozen, running, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(frozen_stats['mean'], MEAN)
  np.testing.assert_array_equal(frozen_stats['var'], VAR)
  # Outside the context the same layer normalises with the batch statistics
  # and moves the averages.
  with batch_norm.frozen(enabled=False):
    trained, trained_stats = _apply(x)
  batch = (x - jnp.mean(x, 0)) / jnp.sqrt(jnp.var(x, 0) + EPSILON)
  np.testing.assert_allclose(trained, batch, rtol=1e-5, atol=1e-5)
  assert not np.allclose(trained_stats['mean'], MEAN)


def test_frozen_under_jit_and_grad_uses_the_running_averages():
  # The finetuning step differentiates through the frozen layer: the
  # gradient of sum(y) is 1/sqrt(var + eps) per element with the running
  # variance, and 0 with batch statistics (their mean is subtracted).
  x = jnp.asarray(np.random.default_rng(1).normal(size=(8, 2)), jnp.float32)

  @jax.jit
  def grad(x):
    with batch_norm.frozen():
      return jax.grad(lambda x: jnp.sum(_apply(x)[0]))(x)

  np.testing.assert_allclose(
      grad(x), np.full((8, 2), 1 / np.sqrt(VAR + EPSILON)), rtol=1e-5
  )
