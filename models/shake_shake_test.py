"""Tests for models/shake_shake.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from models import shake_shake


@pytest.mark.parametrize(
    'name,num_classes,expected',
    [
        ('shake_shake_26_2x96d', 100, 26_227_572),  # The official count.
        # AutoAugment / Gastaldi report 2.9M, 11.7M and 35.6M (CIFAR-10).
        ('shake_shake_26_2x32d', 10, 2_923_162),
        ('shake_shake_26_2x64d', 10, 11_653_978),
        ('shake_shake_26_2x112d', 10, 35_640_442),
    ],
)
def test_parameter_counts(name, num_classes, expected, param_count):
  assert param_count(name, num_classes) == expected


def mix_and_grads(true_gradient):
  """Mixes a = 1, b = 0 (so the output is alpha) and returns the output and
  the gradients of its sum with respect to a and b."""
  a, b = jnp.ones((64, 2, 2, 1)), jnp.zeros((64, 2, 2, 1))
  key = jax.random.key(3, impl='rbg')
  fn = lambda a, b: shake_shake.shake_shake(a, b, key, true_gradient)
  grads = jax.grad(lambda a, b: jnp.sum(fn(a, b)), argnums=(0, 1))(a, b)
  return fn(a, b), grads


def test_shake_shake_forward_is_a_per_example_convex_combination():
  mixed, _ = mix_and_grads(true_gradient=False)
  alpha = mixed[:, 0, 0, 0]
  # One coefficient per example, in (0, 1), not all equal.
  np.testing.assert_array_equal(
      mixed, jnp.broadcast_to(alpha[:, None, None, None], mixed.shape)
  )
  assert np.all((alpha > 0) & (alpha < 1)) and np.std(alpha) > 0.1


def test_descent_gradient_uses_independent_coefficients():
  mixed, (grad_a, grad_b) = mix_and_grads(true_gradient=False)
  beta = grad_a[:, 0, 0, 0]
  np.testing.assert_allclose(grad_a + grad_b, 1.0, atol=1e-6)
  assert np.all((beta > 0) & (beta < 1))
  assert np.max(np.abs(beta - mixed[:, 0, 0, 0])) > 0.1


def test_ascent_gradient_goes_through_the_forward_coefficients():
  mixed, (grad_a, grad_b) = mix_and_grads(true_gradient=True)
  descent_mixed, _ = mix_and_grads(true_gradient=False)
  np.testing.assert_allclose(mixed, descent_mixed, atol=1e-6)
  np.testing.assert_allclose(grad_a, mixed, atol=1e-6)
  np.testing.assert_allclose(grad_b, 1.0 - mixed, atol=1e-6)


def test_mini_train_is_random_and_eval_deterministic(fill_variables):
  model = models.create_model('shake_shake_mini', 5)
  images = jnp.asarray(
      np.random.default_rng(0).normal(size=(4, 8, 8, 3)), jnp.float32
  )
  variables = fill_variables(model, images)

  @jax.jit
  def logits(variables, key, gate_key):
    train = lambda ascent: model.apply(
        variables,
        images,
        train=True,
        ascent=ascent,
        rngs={'dropout': gate_key, 'shake': key},
        mutable=['batch_stats'],
    )[0]
    return (
        train(False),
        train(True),
        model.apply(variables, images, train=False),
    )

  key1, key2 = jax.random.key(1, impl='rbg'), jax.random.key(2, impl='rbg')
  first, ascent, eval_logits = logits(variables, key1, key1)
  # The coefficients come from the `shake` key alone: a SAM pass that
  # redraws the gates (the `dropout` key) keeps them.
  again = logits(variables, key1, key2)[0]
  other, _, eval_again = logits(variables, key2, key1)
  assert first.shape == (4, 5)
  np.testing.assert_array_equal(first, again)
  # Ascent changes the gradient only, never the sampled network.
  np.testing.assert_allclose(first, ascent, rtol=1e-5, atol=1e-6)
  assert not np.allclose(first, other)
  # Evaluation needs no rng and is deterministic.
  np.testing.assert_array_equal(eval_logits, eval_again)
