"""Tests for models/wrn.py: reference parameter count and output shapes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

import models


def test_wrn28_10_has_the_official_parameter_count(param_count):
  assert param_count('wrn28_10', 100) == 36_278_324


def test_mini_logits_shape_and_dtype_in_train_and_eval(fill_variables):
  model = models.create_model('wrn_mini', 7)
  images = jnp.asarray(
      np.random.default_rng(0).normal(size=(3, 8, 8, 3)), jnp.float32
  )
  variables = fill_variables(model, images)
  logits, state = jax.jit(
      functools.partial(model.apply, train=True, mutable=['batch_stats'])
  )(variables, images)
  assert logits.shape == (3, 7) and logits.dtype == jnp.float32
  assert set(state) == {'batch_stats'}
  eval_logits = jax.jit(functools.partial(model.apply, train=False))(
      variables, images
  )
  assert eval_logits.shape == (3, 7) and eval_logits.dtype == jnp.float32
  # Batch statistics and running averages normalise differently.
  assert not np.allclose(logits, eval_logits)
