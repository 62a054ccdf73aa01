"""The optimizer and schedule against hand computations."""

import jax.numpy as jnp
import numpy as np
import optax

from configs import base
from sam import optim


def test_cosine_decay_per_step_over_the_whole_run():
  c = base.base_config().optim
  c.learning_rate, c.num_epochs, c.epochs_multiplier = 0.1, 4, 2.0
  schedule = optim.learning_rate_schedule(c, steps_per_epoch=10)
  assert optim.total_train_steps(c, 10) == 80
  for step in (0, 13, 40, 79, 80):
    expected = 0.05 * (1 + np.cos(np.pi * step / 80))
    np.testing.assert_allclose(schedule(step), expected, rtol=1e-5, atol=1e-8)


def test_linear_warmup_then_cosine():
  c = base.base_config().optim
  c.learning_rate, c.num_epochs, c.warmup_epochs = 1.0, 10, 1.0
  schedule = optim.learning_rate_schedule(c, steps_per_epoch=10)
  np.testing.assert_allclose(schedule(5), 0.5, rtol=1e-6)
  np.testing.assert_allclose(schedule(10), 1.0, rtol=1e-6)


def test_clipped_nesterov_sgd():
  c = base.base_config().optim
  c.grad_clip_norm, c.momentum = 5.0, 0.9
  tx = optim.create_optimizer(c, optax.constant_schedule(0.1))
  params = {'w': jnp.zeros(2)}
  state = tx.init(params)
  grad = {'w': jnp.array([30.0, 40.0])}  # Norm 50, clipped to 5: (3, 4).
  updates, state = tx.update(grad, state, params)
  # Nesterov: v = g; update = -lr (g + momentum v) = -0.1 * 1.9 * (3, 4).
  np.testing.assert_allclose(updates['w'], [-0.57, -0.76], rtol=1e-6)
  updates, _ = tx.update(grad, state, params)
  # v = 0.9 v + g = 1.9 g; update = -lr (g + 0.9 * 1.9 g).
  np.testing.assert_allclose(
      updates['w'], -0.1 * 2.71 * np.array([3, 4]), rtol=1e-6
  )
