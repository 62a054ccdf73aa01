"""Tests for models/wrn.py: reference parameter count and output shapes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

import models


def count_params(name, num_classes, image_size=32):
  """'params' size of a named model, from shapes only (no initialisation)."""
  model = models.create_model(name, num_classes)
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)),
      train=False))
  return sum(x.size for x in jax.tree_util.tree_leaves(shapes['params']))


def random_variables(model, images, seed=0):
  """Variables of `model` filled with N(0, 0.1) (BN scales 1 + N(0, 0.1),
  variances 1) without running its initialisers, whose random number
  generation compiles slowly on CPU."""
  shapes = jax.eval_shape(functools.partial(model.init, train=False),
                          jax.random.key(0), images)
  rng = np.random.default_rng(seed)

  def fill(path, shape):
    name = path[-1].key
    if name == 'var':
      return jnp.ones(shape.shape, shape.dtype)
    noise = jnp.asarray(rng.normal(0, 0.1, shape.shape), shape.dtype)
    return noise + 1 if name == 'scale' else noise

  return jax.tree_util.tree_map_with_path(fill, shapes)


def test_wrn28_10_has_the_official_parameter_count():
  assert count_params('wrn28_10', 100) == 36_278_324


def test_mini_logits_shape_and_dtype_in_train_and_eval():
  model = models.create_model('wrn_mini', 7)
  images = jnp.asarray(np.random.default_rng(0).normal(size=(3, 8, 8, 3)),
                       jnp.float32)
  variables = random_variables(model, images)
  logits, state = jax.jit(functools.partial(
      model.apply, train=True, mutable=['batch_stats']))(variables, images)
  assert logits.shape == (3, 7) and logits.dtype == jnp.float32
  assert set(state) == {'batch_stats'}
  eval_logits = jax.jit(functools.partial(model.apply, train=False))(
      variables, images)
  assert eval_logits.shape == (3, 7) and eval_logits.dtype == jnp.float32
  # Batch statistics and running averages normalise differently.
  assert not np.allclose(logits, eval_logits)
