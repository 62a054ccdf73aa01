"""Tests for models/wrn.py: reference parameter count and output shapes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


@pytest.mark.parametrize(
    'name', ['wrn_mini', 'shake_shake_mini', 'pyramidnet_mini', 'resnet32_mini']
)
def test_cifar_heads_draw_from_the_official_uniform(name):
  # U(-1/sqrt(C), 1/sqrt(C)) with C the number of classes (the output
  # width), not the input width: sam_jax/models/utils.py.
  model = models.create_model(name, 100)
  variables = jax.jit(
      lambda: model.init(
          jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False
      )
  )()
  kernel = np.asarray(variables['params']['head']['kernel'])
  bound = 1 / np.sqrt(100)
  assert np.max(np.abs(kernel)) <= bound
  assert np.max(np.abs(kernel)) > 0.9 * bound
  np.testing.assert_allclose(np.std(kernel), bound / np.sqrt(3), rtol=0.1)


def test_pyramidnet_last_block_bn_starts_at_one():
  # The official PyramidNet keeps the default scale of one on every BN.
  model = models.create_model('pyramidnet_mini', 10)
  params = jax.jit(
      lambda: model.init(
          jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False
      )
  )()['params']
  np.testing.assert_array_equal(params['group0_block0']['bn_4']['scale'], 1.0)
