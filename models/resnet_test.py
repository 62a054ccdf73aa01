"""Tests for models/resnet.py."""

import functools

import flax.linen as nn
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


@pytest.mark.parametrize('layout', ['sam', 'keras'])
def test_both_layouts_have_the_parameter_count(layout):
  model = resnet.ResNet(stage_sizes=resnet.STAGE_SIZES[50], layout=layout)
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


def test_the_sam_layout_is_the_official_codes():
  # sam_jax/imagenet_models/resnet.py: v1.5 stride, zero last BN scale,
  # epsilon 1e-5, no stem ReLU, SAME max pool.
  layout = resnet.LAYOUTS['sam']
  assert (
      layout.stride_in_1x1,
      layout.zero_init_last_bn,
      layout.bn_epsilon,
      layout.stem_relu,
      layout.pool_padding,
  ) == (False, True, 1e-5, False, 'SAME')
  keras = resnet.LAYOUTS['keras']
  assert (keras.stride_in_1x1, keras.bn_epsilon, keras.stem_relu) == (
      True,
      1.001e-5,
      True,
  )


@pytest.mark.parametrize('layout,conv_1_side', [('sam', 8), ('keras', 4)])
def test_the_stride_sits_on_the_3x3_conv_in_the_sam_layout(layout, conv_1_side):
  block = resnet.BottleneckBlock(channels=2, stride=2, layout=layout)
  x = jnp.zeros((1, 8, 8, 8))
  variables = jax.eval_shape(
      lambda: block.init(jax.random.key(0), x, train=False)
  )
  _, state = jax.eval_shape(
      lambda variables: block.apply(
          variables,
          x,
          train=False,
          capture_intermediates=True,
          mutable=['intermediates'],
      ),
      variables,
  )
  conv_1 = state['intermediates']['conv_1']['__call__'][0]
  assert conv_1.shape[1] == conv_1_side


def _conv(x, kernel, stride, padding):
  return jax.lax.conv_general_dilated(
      x,
      kernel,
      (stride, stride),
      padding,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
  )


@pytest.mark.parametrize('layout', ['sam', 'keras'])
def test_the_strided_3x3_conv_pads_same(layout):
  # The official code's conv_2 takes flax's default padding, SAME: with
  # stride 2 on an even input that is (0, 1), not (1, 1). Keras pads SAME
  # too, its 3x3 at stride 1, where SAME is (1, 1).
  block = resnet.BottleneckBlock(channels=2, stride=2, layout=layout)
  x = jnp.asarray(
      np.random.default_rng(0).normal(size=(1, 8, 8, 8)), jnp.float32
  )
  variables = block.init(jax.random.key(0), x, train=False)
  _, state = block.apply(
      variables,
      x,
      train=False,
      capture_intermediates=True,
      mutable=['intermediates'],
  )
  captured = state['intermediates']
  conv_2_input = jax.nn.relu(captured['bn_1']['__call__'][0])
  kernel = variables['params']['conv_2']['kernel']
  stride, same = {'sam': (2, ((0, 1), (0, 1))), 'keras': (1, 'SAME')}[layout]
  expected = _conv(conv_2_input, kernel, stride, same)
  conv_2 = captured['conv_2']['__call__'][0]
  np.testing.assert_allclose(conv_2, expected, rtol=1e-5, atol=1e-5)
  if layout == 'sam':
    # So the check tells the two paddings apart on this input.
    symmetric = _conv(conv_2_input, kernel, 2, ((1, 1), (1, 1)))
    assert not np.allclose(conv_2, symmetric, atol=1e-3)


@pytest.mark.parametrize('layout,has_relu', [('sam', False), ('keras', True)])
def test_the_sam_stem_has_no_relu(layout, has_relu):
  # With every stage empty the network is stem, pool, mean and head. On a
  # constant image about half the stem's channels are negative everywhere
  # inside it, so a ReLU before the pool changes the logits.
  model = resnet.ResNet(stage_sizes=(), layout=layout, num_classes=2)
  x = jnp.ones((1, 16, 16, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  logits, state = model.apply(
      variables,
      x,
      train=False,
      mutable=['intermediates'],
      capture_intermediates=True,
  )
  bn = state['intermediates']['bn1']['__call__'][0]
  features = jax.nn.relu(bn) if has_relu else bn
  pooled = nn.max_pool(
      features, (3, 3), (2, 2), padding=resnet.LAYOUTS[layout].pool_padding
  )
  head = variables['params']['head']
  expected = jnp.mean(pooled, axis=(1, 2)) @ head['kernel'] + head['bias']
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
  if not has_relu:
    # Channels whose pooled features are all negative: a ReLU zeroes them.
    assert float(jnp.min(jnp.mean(pooled, axis=(1, 2)))) < 0


def test_zero_init_last_bn_scale():
  block = resnet.BottleneckBlock(channels=2, layout='sam')
  init = jax.jit(functools.partial(block.init, train=False))
  params = init(jax.random.key(0, impl='rbg'), jnp.zeros((1, 4, 4, 8)))
  np.testing.assert_array_equal(params['params']['bn_3']['scale'], 0.0)
  np.testing.assert_array_equal(params['params']['bn_2']['scale'], 1.0)
