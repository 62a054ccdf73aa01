"""Tests for models/resnet.py."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from models import resnet


@pytest.mark.parametrize(
    'name,expected',
    [
        # torchvision's counts (ResNet v1 without conv biases, 1000 classes).
        ('resnet50', 25_557_032),
        ('resnet101', 44_549_160),
        ('resnet152', 60_192_808),
    ],
)
def test_imagenet_parameter_counts(name, expected, param_count):
  assert param_count(name, 1000, image_size=64) == expected


def test_stride_placement_keeps_the_parameter_count():
  model = resnet.ResNet(stage_sizes=resnet.STAGE_SIZES[50], stride_in_1x1=False)
  shapes = jax.eval_shape(
      lambda: model.init(
          jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False
      )
  )
  sizes = [x.size for x in jax.tree_util.tree_leaves(shapes['params'])]
  assert sum(sizes) == 25_557_032


def test_resnet32_has_the_paper_size(param_count):
  # He et al. (2016), Table 6: ResNet-32 has 0.46M parameters (option A).
  assert param_count('resnet32', 10) == 464_154


@pytest.mark.parametrize(
    'name,image_size', [('resnet_mini', 16), ('resnet32_mini', 16)]
)
def test_mini_logits_shape(name, image_size, fill_variables):
  model = models.create_model(name, 3)
  images = jnp.asarray(
      np.random.default_rng(0).normal(size=(2, image_size, image_size, 3)),
      jnp.float32,
  )

  variables = fill_variables(model, images)

  @jax.jit
  def logits(variables):
    train, _ = model.apply(
        variables, images, train=True, mutable=['batch_stats']
    )
    return train, model.apply(variables, images, train=False)

  train, evaluation = logits(variables)
  assert train.shape == evaluation.shape == (2, 3)
  assert train.dtype == evaluation.dtype == jnp.float32


def test_zero_init_last_bn_scale():
  block = resnet.BottleneckBlock(channels=2, zero_init_last_bn=True)
  init = jax.jit(functools.partial(block.init, train=False))
  params = init(jax.random.key(0, impl='rbg'), jnp.zeros((1, 4, 4, 8)))
  np.testing.assert_array_equal(params['params']['bn_3']['scale'], 0.0)
  np.testing.assert_array_equal(params['params']['bn_2']['scale'], 1.0)
