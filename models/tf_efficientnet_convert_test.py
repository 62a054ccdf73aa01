"""TF EfficientNet checkpoints -> Flax (models/tf_efficientnet_convert.py).

Keras' EfficientNet keeps the TF model's weight layouts, so a random Keras
model written under the official TF checkpoint names (scope, global block
numbers, `tpu_batch_normalization_N`, moving averages, RMSProp slots) is a
checkpoint of the released kind whose logits are known.
"""

import functools
import re
import shlex
import subprocess
import sys

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest
import tensorflow as tf

from configs import finetune
import models
from models import pretrained
from models import tf_efficientnet_convert as convert

# Keras EfficientNet layer -> TF layer inside a block, by whether it expands.
EXPANDING = {
    'expand_conv': 'conv2d',
    'expand_bn': 'tpu_batch_normalization',
    'dwconv': 'depthwise_conv2d',
    'bn': 'tpu_batch_normalization_1',
    'se_reduce': 'se/conv2d',
    'se_expand': 'se/conv2d_1',
    'project_conv': 'conv2d_1',
    'project_bn': 'tpu_batch_normalization_2',
}
NOT_EXPANDING = {
    'dwconv': 'depthwise_conv2d',
    'bn': 'tpu_batch_normalization',
    'se_reduce': 'se/conv2d',
    'se_expand': 'se/conv2d_1',
    'project_conv': 'conv2d',
    'project_bn': 'tpu_batch_normalization_1',
}
OUTER = {
    'stem_conv': 'stem/conv2d',
    'stem_bn': 'stem/tpu_batch_normalization',
    'top_conv': 'head/conv2d',
    'top_bn': 'head/tpu_batch_normalization',
    'predictions': 'head/dense',
}


def tf_weights(keras_model, scope: str) -> dict[str, np.ndarray]:
  """The Keras model's weights under the official TF checkpoint names."""
  layers = {layer.name: layer for layer in keras_model.layers if layer.weights}
  blocks = sorted(
      {name.split('_')[0] for name in layers if name.startswith('block')},
      key=lambda b: (int(b[5:-1]), b[-1]),
  )
  weights = {}
  for name, layer in layers.items():
    if name.startswith('normalization'):
      continue
    if name.startswith('block'):
      block, kind = name.split('_', 1)
      table = EXPANDING if f'{block}_expand_conv' in layers else NOT_EXPANDING
      prefix = f'{scope}/blocks_{blocks.index(block)}/{table[kind]}'
    else:
      prefix = f'{scope}/{OUTER[name]}'
    for weight in layer.weights:
      leaf = weight.path.split('/')[-1]
      if type(layer).__name__ == 'DepthwiseConv2D':
        leaf = 'depthwise_kernel'
      weights[f'{prefix}/{leaf}'] = np.asarray(weight.numpy())
  return weights


def released_checkpoint(weights, rng, slots=True) -> dict[str, np.ndarray]:
  """As a training checkpoint holds them: the weights as moving averages,
  different raw values, the step and (if `slots`) RMSProp slots."""
  tensors = {'global_step': np.array(1000, np.int64)}
  for name, value in weights.items():
    tensors[name + convert.EMA_SUFFIX] = value
    tensors[name] = value + rng.normal(0, 1, value.shape).astype(value.dtype)
    if slots:
      tensors[name + '/RMSProp'] = np.ones_like(value)
      tensors[name + '/RMSProp_1'] = np.zeros_like(value)
  return tensors


def write_tf_checkpoint(prefix: str, tensors: dict[str, np.ndarray]) -> str:
  names = sorted(tensors)
  tf.raw_ops.SaveV2(
      prefix=prefix,
      tensor_names=names,
      shape_and_slices=[''] * len(names),
      tensors=[tf.constant(tensors[name]) for name in names],
  )
  return prefix


@pytest.fixture(scope='module')
def b0_checkpoint(keras_efficientnet_b0, tmp_path_factory):
  weights = tf_weights(keras_efficientnet_b0, 'efficientnet-b0')
  tensors = released_checkpoint(weights, np.random.default_rng(0))
  prefix = str(tmp_path_factory.mktemp('tf') / 'model.ckpt')
  return write_tf_checkpoint(prefix, tensors), weights


def test_converted_checkpoint_gives_the_keras_logits(
    keras_efficientnet_b0, b0_checkpoint, tmp_path
):
  prefix, _ = b0_checkpoint
  path = convert.convert_and_save(prefix, 'efficientnet_b0', tmp_path / 'b0')
  size = keras_efficientnet_b0.input_shape[1]
  pixels = np.random.default_rng(1).uniform(0, 255, (2, size, size, 3))
  expected = np.asarray(keras_efficientnet_b0(pixels, training=False))
  mean = np.array([0.485, 0.456, 0.406])
  std = np.array([0.229, 0.224, 0.225])
  flax_model = models.create_model('efficientnet_b0', 1000)
  logits = jax.jit(functools.partial(flax_model.apply, train=False))(
      pretrained.restore(path),
      jnp.asarray((pixels / 255 - mean) / std, jnp.float32),
  )
  error = np.max(np.abs(logits - expected)) / np.max(np.abs(expected))
  assert error < 1e-4


def test_moving_averages_are_preferred_and_slots_skipped(b0_checkpoint):
  prefix, weights = b0_checkpoint
  tensors = convert.read_checkpoint(prefix)
  averaged = convert.model_weights(tensors)
  raw = convert.model_weights(tensors, use_ema=False)
  assert sorted(averaged) == sorted(raw) == sorted(weights)
  name = 'efficientnet-b0/blocks_3/depthwise_conv2d/depthwise_kernel'
  np.testing.assert_array_equal(averaged[name], weights[name])
  np.testing.assert_array_equal(raw[name], tensors[name])
  assert not np.array_equal(raw[name], weights[name])


def test_a_variable_mapping_nowhere_is_named(b0_checkpoint):
  weights = dict(b0_checkpoint[1])
  weights['efficientnet-b0/blocks_3/conv2d_7/kernel'] = np.zeros((1, 1, 1, 1))
  with pytest.raises(
      ValueError, match=r"1 checkpoint variables .*blocks_3/conv2d_7/kernel'"
  ):
    convert.convert(weights, 'efficientnet_b0')


def test_a_missing_variable_is_named(b0_checkpoint, tmp_path):
  weights = dict(b0_checkpoint[1])
  del weights['efficientnet-b0/blocks_0/se/conv2d_1/bias']
  with pytest.raises(ValueError, match='has no params/block1a/se_expand/bias'):
    pretrained.save_converted(
        convert.convert(weights, 'efficientnet_b0'),
        'efficientnet_b0',
        'TF checkpoint',
        tmp_path / 'out',
    )
  assert not (tmp_path / 'out').exists()


def test_another_variant_is_a_clear_error(b0_checkpoint):
  with pytest.raises(
      ValueError, match=r"scopes \['efficientnet-b0'\]: efficientnet_l2 needs"
  ):
    convert.convert(b0_checkpoint[1], 'efficientnet_l2')


def test_batch_normalization_without_the_tpu_prefix(b0_checkpoint):
  # Checkpoints written without TPU BatchNorm name it batch_normalization_N.
  weights = b0_checkpoint[1]
  renamed = {k.replace('tpu_batch', 'batch'): v for k, v in weights.items()}
  jax.tree_util.tree_map(
      np.testing.assert_array_equal,
      convert.convert(renamed, 'efficientnet_b0'),
      convert.convert(weights, 'efficientnet_b0'),
  )


def _documented(pattern: str) -> str:
  """The first match of `pattern` in configs/finetune.py's docstring, with
  its placeholder folder /ckpt/ left for the caller to replace."""
  match = re.search(pattern, finetune.__doc__)
  assert match, f'configs/finetune.py documents no {pattern!r}'
  return match.group(0)


def test_the_b7_randaug_release_converts_and_loads_as_documented(
    tmp_path, repo_dir
):
  """configs/finetune.py's commands on a B7 checkpoint in the layout of the
  efficientnet-b7-randaug release: a folder whose `checkpoint` file names
  model.ckpt, every B7 variable under its TF name (scope efficientnet-b7/,
  blocks_0...54, tpu_batch_normalization_N) with its moving average beside
  it and the step (the RMSProp slots, which the converter skips as the B0
  tests check, are left out to halve the checkpoint's 0.5 GB)."""
  keras_b7 = keras.applications.EfficientNetB7(
      weights=None, input_shape=(64, 64, 3)
  )
  weights = tf_weights(keras_b7, 'efficientnet-b7')
  del keras_b7
  blocks = {int(k.split('/')[1][7:]) for k in weights if '/blocks_' in k}
  assert blocks == set(range(55))
  release = tmp_path / 'efficientnet-b7-randaug'
  release.mkdir()
  tensors = released_checkpoint(weights, np.random.default_rng(2), slots=False)
  write_tf_checkpoint(str(release / 'model.ckpt'), tensors)
  del tensors
  (release / 'checkpoint').write_text(
      'model_checkpoint_path: "model.ckpt"\n'
      'all_model_checkpoint_paths: "model.ckpt"\n'
  )
  local = lambda text: text.replace('/ckpt/', f'{tmp_path}/')
  command = shlex.split(
      local(_documented(r'python -m models\.tf_efficientnet_convert .*'))
  )
  assert command[0] == 'python' and '--model=efficientnet_b7' in command
  assert f'--checkpoint={release}' in command
  result = subprocess.run(
      [sys.executable, *command[1:]],
      cwd=repo_dir,
      capture_output=True,
      text=True,
      timeout=900,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  config = finetune.get_config(
      local(_documented(r'(?<=--config=configs/finetune\.py:)\S+'))
  )
  assert config.model.name == 'efficientnet_b7'
  # What sam.run.experiment.initial_state does with init_checkpoint, on the
  # model's shapes: the new head stays fresh, everything else is the
  # moving average.
  model = models.create_model(config.model.name, 102)  # Flowers' classes.
  loaded = pretrained.load_into(
      pretrained.model_shapes(model), config.model.init_checkpoint
  )
  last_block = 'efficientnet-b7/blocks_54'
  np.testing.assert_array_equal(
      loaded['params']['block7d']['dwconv']['kernel'],
      weights[f'{last_block}/depthwise_conv2d/depthwise_kernel'].transpose(
          0, 1, 3, 2
      ),
  )
  np.testing.assert_array_equal(
      loaded['batch_stats']['top_bn']['var'],
      weights['efficientnet-b7/head/tpu_batch_normalization/moving_variance'],
  )
  assert isinstance(loaded['params']['head']['kernel'], jax.ShapeDtypeStruct)
  # ImageNet keeps the released head.
  imagenet = pretrained.load_into(
      pretrained.model_shapes(models.create_model(config.model.name, 1000)),
      config.model.init_checkpoint,
  )
  np.testing.assert_array_equal(
      imagenet['params']['head']['kernel'],
      weights['efficientnet-b7/head/dense/kernel'],
  )
