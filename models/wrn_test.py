"""Tests for models/wrn.py: reference parameter count and output shapes."""

import functools

import flax.linen as nn
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


def _batch_norm_settings(name: str, image_size: int = 8) -> set:
  """(momentum, epsilon) of every BatchNorm a model calls."""
  seen = set()

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.BatchNorm):
      seen.add((context.module.momentum, context.module.epsilon))
    return next_fun(*args, **kwargs)

  model = models.create_model(name, 10)
  with nn.intercept_methods(record):
    jax.eval_shape(
        lambda: model.init(
            jax.random.key(0),
            jnp.zeros((1, image_size, image_size, 3)),
            train=False,
        )
    )
  return seen


@pytest.mark.parametrize(
    'name', ['wrn_mini', 'shake_shake_mini', 'pyramidnet_mini', 'resnet32_mini']
)
def test_cifar_batch_norm_is_the_officials(name):
  # sam_jax/models/utils.py: momentum 0.9, epsilon 1e-5.
  assert _batch_norm_settings(name) == {(0.9, 1e-5)}


def test_conv_kernels_are_he_normal_over_the_fan_out():
  model = models.create_model('wrn16_4', 10)
  params = jax.jit(
      lambda: model.init(
          jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False
      )['params']
  )()
  kernels = [
      np.asarray(leaf)
      for path, leaf in jax.tree_util.tree_leaves_with_path(params)
      if leaf.ndim == 4 and leaf.shape[-1] >= 64
  ]
  assert len(kernels) >= 10
  for kernel in kernels:
    fan_out = kernel.shape[0] * kernel.shape[1] * kernel.shape[3]
    np.testing.assert_allclose(kernel.std(), np.sqrt(2 / fan_out), rtol=0.05)
