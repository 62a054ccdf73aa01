"""Tests for models/pyramidnet.py."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from models import pyramidnet


@functools.lru_cache
def params_shapes(name):
  model = models.create_model(name, 100)
  return jax.eval_shape(
      lambda: model.init(
          jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False
      )
  )['params']


def test_official_parameter_count():
  shapes = params_shapes('pyramidnet_272_200_shakedrop')
  assert sum(x.size for x in jax.tree_util.tree_leaves(shapes)) == 26_288_692


def test_shake_drop_adds_no_parameters():
  # Hence the plain PyramidNet-272 has the same 26,288,692 (one trace of the
  # 272-layer network is enough for the suite).
  def shapes(shake_drop):
    model = pyramidnet.PyramidNet(depth=20, alpha=24, shake_drop=shake_drop)
    return jax.eval_shape(
        lambda: model.init(
            jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False
        )
    )

  assert jax.tree_util.tree_map(lambda x: x.shape, shapes(True)) == (
      jax.tree_util.tree_map(lambda x: x.shape, shapes(False))
  )


def test_final_width_is_four_times_16_plus_alpha():
  head = params_shapes('pyramidnet_272_200_shakedrop')['head']['kernel']
  assert head.shape == (4 * (16 + 200), 100)
  # Hence 26,210,842 ("26.2M") parameters with 10 classes.
  assert 26_288_692 - 90 * (head.shape[0] + 1) == 26_210_842


def test_keep_probability_decays_linearly_to_one_half():
  total = 90
  keeps = [pyramidnet.keep_probability(i, total) for i in range(total)]
  assert keeps[-1] == pytest.approx(0.5)
  assert keeps[0] == pytest.approx(1 - 0.5 / total)
  np.testing.assert_allclose(np.diff(keeps), -0.5 / total)


def drop_and_grads(keep, true_gradient):
  """ShakeDrop of x = 1, so the output is the coefficient itself, and the
  gradient of its sum with respect to x."""
  x = jnp.ones((256, 1, 1, 1))
  gate_key, shake_key = jax.random.split(jax.random.key(5, impl='rbg'))
  fn = lambda x: pyramidnet.shake_drop(
      x, gate_key, shake_key, keep, true_gradient
  )
  return fn(x)[:, 0, 0, 0], jax.grad(lambda x: jnp.sum(fn(x)))(x)[:, 0, 0, 0]


def test_shake_drop_kept_branches_are_unchanged():
  forward, grad = drop_and_grads(keep=1.0, true_gradient=False)
  np.testing.assert_array_equal(forward, 1.0)
  np.testing.assert_array_equal(grad, 1.0)


def test_shake_drop_dropped_branches_descent_and_ascent_gradients():
  forward, descent_grad = drop_and_grads(keep=0.0, true_gradient=False)
  same_forward, ascent_grad = drop_and_grads(keep=0.0, true_gradient=True)
  np.testing.assert_array_equal(forward, same_forward)
  # Forward: alpha ~ U(-1, 1); descent backward: beta ~ U(0, 1), independent.
  assert forward.min() < -0.5 and forward.max() > 0.5
  assert np.all((forward >= -1) & (forward <= 1))
  assert np.all((descent_grad >= 0) & (descent_grad <= 1))
  assert np.max(np.abs(descent_grad - forward)) > 0.5
  np.testing.assert_allclose(ascent_grad, forward, atol=1e-6)


def test_shake_drop_mixes_kept_and_dropped_at_the_keep_probability():
  forward, _ = drop_and_grads(keep=0.5, true_gradient=False)
  kept = np.mean(forward == 1.0)
  assert 0.35 < kept < 0.65


def test_each_block_draws_its_gate_at_its_own_keep_probability(monkeypatch):
  """The model's draws, not only the helper: block i of n gates its branch
  with keep probability 1 - 0.5 (i + 1) / n, the official linear decay."""
  drawn = []

  def recording_shake_drop(x, gate_rng, shake_rng, keep, true_gradient):
    drawn.append(keep)
    return x

  monkeypatch.setattr(pyramidnet, 'shake_drop', recording_shake_drop)
  model = pyramidnet.PyramidNet(depth=20, alpha=24, num_classes=3)
  images = jnp.zeros((2, 8, 8, 3))
  variables = model.init(jax.random.key(0), images, train=False)
  key = jax.random.key(1)
  model.apply(
      variables,
      images,
      train=True,
      rngs={'dropout': key, 'shake': key},
      mutable=['batch_stats'],
  )
  # depth 20: 2 blocks per group, 6 in all.
  np.testing.assert_allclose(drawn, [1 - 0.5 * (i + 1) / 6 for i in range(6)])


def test_gate_follows_the_dropout_key_and_coefficients_the_shake_key():
  """Under the official recipe the two SAM passes redraw the Bernoulli gate
  (the `dropout` key) but share the coefficients (the `shake` key)."""
  x = jnp.ones((512, 1, 1, 1))
  gate_a, gate_b, shake = jax.random.split(jax.random.key(3), 3)
  first = pyramidnet.shake_drop(x, gate_a, shake, 0.5, True)[:, 0, 0, 0]
  second = pyramidnet.shake_drop(x, gate_b, shake, 0.5, True)[:, 0, 0, 0]
  kept_first, kept_second = first == 1.0, second == 1.0
  assert 0.2 < np.mean(kept_first != kept_second) < 0.8
  # Where both passes dropped the branch, the coefficient alpha is shared.
  both = ~kept_first & ~kept_second
  np.testing.assert_array_equal(first[both], second[both])


def test_expectation_closed_form():
  x = jnp.full((2, 3), 2.0)
  # E[b + alpha - b alpha] = p + 0 - p * 0 = p for alpha ~ U(-1, 1).
  np.testing.assert_allclose(pyramidnet.shake_drop_expectation(x, 0.7), 1.4)


def test_mini_train_is_random_and_eval_deterministic(fill_variables):
  model = models.create_model('pyramidnet_mini', 6)
  images = jnp.asarray(
      np.random.default_rng(0).normal(size=(4, 8, 8, 3)), jnp.float32
  )
  variables = fill_variables(model, images)

  @jax.jit
  def logits(variables, key):
    train = lambda: model.apply(
        variables,
        images,
        train=True,
        rngs={'dropout': key, 'shake': key},
        mutable=['batch_stats'],
    )[0]
    return train(), model.apply(variables, images, train=False)

  first, eval_logits = logits(variables, jax.random.key(1, impl='rbg'))
  again = logits(variables, jax.random.key(1, impl='rbg'))[0]
  other, eval_again = logits(variables, jax.random.key(2, impl='rbg'))
  assert first.shape == (4, 6)
  np.testing.assert_array_equal(first, again)
  assert not np.allclose(first, other)
  np.testing.assert_array_equal(eval_logits, eval_again)
