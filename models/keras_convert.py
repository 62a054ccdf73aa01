"""Converts Keras applications weights to the Flax models of this package.

Supported: `keras.applications.ResNet50/101/152` -> models.resnet.ResNet in
its Keras layout (`resnet50_keras`, ...) and
`keras.applications.EfficientNetB0`...`B7` -> models.efficientnet.EfficientNet.
A converted model gives the Keras model's logits on the same image (tested
with randomly initialised Keras models, so no download is needed):

* Keras ResNets carry a bias on every conv; each is folded into the following
  BatchNorm (its running mean minus the bias), which is exact. Keras ResNets
  take caffe-style input (BGR, minus the ImageNet pixel mean, 0..255 scale);
  the first conv's input channels are reversed, so the Flax ResNet takes RGB
  with the same mean subtracted.
* Keras EfficientNets rescale and normalise raw pixels inside the model; the
  Flax EfficientNet starts at the stem conv, so it takes the normalised image.

`input_normalisation(keras_model)` gives, for either family, the per-channel
(mean, std) on the [0, 1] pixel scale such that the Flax model's input is
`(pixels / 255 - mean) / std` in RGB: ImageNet's (0.485, 0.456, 0.406) /
(0.229, 0.224, 0.225) for EfficientNets with `weights='imagenet'`, and the
caffe mean with std 1/255 for ResNets.

Command line (saves an orbax checkpoint for `config.init_checkpoint`):

  python -m models.keras_convert --model=efficientnet_b7 --weights=imagenet \
      --output_dir=/data/ckpt/efficientnet_b7_imagenet
"""

import re
from typing import Any

from absl import app
from absl import flags
import numpy as np

from models import pretrained

# Model names of models/__init__.py -> keras.applications constructors.
KERAS_APPLICATIONS = {
    'resnet50_keras': 'ResNet50',
    'resnet101_keras': 'ResNet101',
    'resnet152_keras': 'ResNet152',
    **{f'efficientnet_b{i}': f'EfficientNetB{i}' for i in range(8)},
}
# keras.applications.imagenet_utils' caffe mode, RGB order, 0..255 scale.
CAFFE_MEAN_RGB = np.array([123.68, 116.779, 103.939])


def _weights(layer) -> dict[str, np.ndarray]:
  """A Keras layer's weights by short name ('kernel', 'gamma', ...)."""
  return {w.path.split('/')[-1]: np.asarray(w.numpy()) for w in layer.weights}


def _batch_norm(layer, conv_bias=None):
  """(params, batch_stats) of a Keras BatchNormalization, absorbing the bias
  of the conv before it: BN(conv + b) normalises with mean - b."""
  w = _weights(layer)
  mean = w['moving_mean']
  if conv_bias is not None:
    mean = mean - conv_bias
  return (
      {'scale': w['gamma'], 'bias': w['beta']},
      {'mean': mean, 'var': w['moving_variance']},
  )


def _dense(layer):
  w = _weights(layer)
  return {
      'kernel': w['kernel'].reshape(-1, w['kernel'].shape[-1]),
      'bias': w['bias'],
  }


def model_name(keras_model) -> str:
  """The name in models.MODELS of the Flax counterpart of `keras_model`."""
  name = keras_model.name.lower()
  match = re.fullmatch(r'efficientnetb(\d)', name)
  if match:
    return f'efficientnet_b{match.group(1)}'
  if name in ('resnet50', 'resnet101', 'resnet152'):
    return f'{name}_keras'
  raise ValueError(
      f'keras model {keras_model.name!r}: valid: ResNet50/101/152'
      ' and EfficientNetB0-B7 of keras.applications'
  )


def convert_resnet(keras_model) -> dict[str, Any]:
  """Flax ResNet variables {'params', 'batch_stats'} of a Keras ResNet v1."""
  params, stats = {}, {}
  for layer in keras_model.layers:
    if not layer.weights:
      continue
    match = re.fullmatch(r'conv(\d)_block(\d+)_(\d)_(conv|bn)', layer.name)
    if match:
      stage, block, index, kind = match.groups()
      path = f'stage{int(stage) - 2}_block{int(block) - 1}'
      base = 'shortcut' if index == '0' else None
      conv_name = f'{base}_conv' if base else f'conv_{index}'
      bn_name = f'{base}_bn' if base else f'bn_{index}'
    elif layer.name in ('conv1_conv', 'conv1_bn'):
      kind, path, conv_name, bn_name = layer.name[6:], None, 'conv1', 'bn1'
    elif layer.name == 'predictions':
      params['head'] = _dense(layer)
      continue
    else:
      raise ValueError(f'unexpected Keras ResNet layer {layer.name!r}')
    p = params.setdefault(path, {}) if path else params
    s = stats.setdefault(path, {}) if path else stats
    if kind == 'conv':
      kernel = _weights(layer)['kernel']
      if layer.name == 'conv1_conv':
        kernel = kernel[:, :, ::-1, :]  # BGR input -> RGB input.
      p[conv_name] = {'kernel': kernel}
    else:
      conv = keras_model.get_layer(layer.name[:-2] + 'conv')
      p[bn_name], s[bn_name] = _batch_norm(layer, _weights(conv).get('bias'))
  return {'params': params, 'batch_stats': stats}


def convert_efficientnet(keras_model) -> dict[str, Any]:
  """Flax EfficientNet variables {'params', 'batch_stats'} of a Keras one."""
  params, stats = {}, {}
  for layer in keras_model.layers:
    if not layer.weights or layer.name.startswith('normalization'):
      continue  # The input normalisation: see input_normalisation.
    match = re.fullmatch(r'(block\d+[a-z])_(\w+)', layer.name)
    path, name = match.groups() if match else (None, layer.name)
    if name == 'predictions':
      name = 'head'
    p = params.setdefault(path, {}) if path else params
    s = stats.setdefault(path, {}) if path else stats
    kind = type(layer).__name__
    if kind == 'BatchNormalization':
      p[name], s[name] = _batch_norm(layer)
    elif kind == 'DepthwiseConv2D':
      # Keras [k, k, C, 1] -> Flax grouped conv [k, k, 1, C].
      p[name] = {'kernel': _weights(layer)['kernel'].transpose(0, 1, 3, 2)}
    elif name.startswith('se_') or name == 'head':
      p[name] = _dense(layer)
    elif kind == 'Conv2D':
      p[name] = {'kernel': _weights(layer)['kernel']}
    else:
      raise ValueError(f'unexpected Keras EfficientNet layer {layer.name!r}')
  return {'params': params, 'batch_stats': stats}


def convert(keras_model) -> dict[str, Any]:
  """Flax variables for the model `model_name(keras_model)`."""
  if model_name(keras_model).startswith('resnet'):
    return convert_resnet(keras_model)
  return convert_efficientnet(keras_model)


def input_normalisation(keras_model) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel (mean, std), on the [0, 1] scale, of the converted model's
  RGB input: it expects `(pixels / 255 - mean) / std`."""
  if model_name(keras_model).startswith('resnet'):
    return CAFFE_MEAN_RGB / 255, np.full(3, 1 / 255)
  # Compose the affine maps before the stem: z = scale * pixels + offset.
  scale, offset = np.ones(3), np.zeros(3)
  for layer in keras_model.layers:
    kind = type(layer).__name__
    if kind == 'Rescaling':
      scale = scale * np.asarray(layer.scale, np.float64)
      offset = offset * np.asarray(layer.scale, np.float64) + layer.offset
    elif kind == 'Normalization':
      # The statistics the layer applies (its weights reach them only
      # through finalize_state).
      mean = np.asarray(layer.mean, np.float64).reshape(-1)
      sd = np.sqrt(np.asarray(layer.variance, np.float64).reshape(-1))
      sd = np.maximum(sd, 1e-7)
      scale, offset = scale / sd, (offset - mean) / sd
    elif kind not in ('InputLayer',):
      break
  std = 1 / (255 * scale)
  return -offset * std, std


def build_keras(name: str, weights=None, input_shape=None, classes=1000):
  """keras.applications model for a name of `KERAS_APPLICATIONS`, with
  logits (no softmax) as output."""
  import keras  # pylint: disable=g-import-not-at-top

  if name not in KERAS_APPLICATIONS:
    raise ValueError(
        f'model {name!r} has no Keras counterpart; valid: '
        f'{sorted(KERAS_APPLICATIONS)}'
    )
  constructor = getattr(keras.applications, KERAS_APPLICATIONS[name])
  return constructor(
      weights=weights,
      input_shape=input_shape,
      classes=classes,
      classifier_activation=None,
  )


def convert_and_save(keras_model, output: str) -> str:
  """Converts a Keras application, checks it against the Flax model's
  structure and saves it (pretrained.save_converted).

  Returns:
    The checkpoint path.
  """
  return pretrained.save_converted(
      convert(keras_model),
      model_name(keras_model),
      f'converted Keras {keras_model.name}',
      output,
  )


def main(argv):
  del argv
  keras_model = build_keras(flags.FLAGS.model, flags.FLAGS.weights or None)
  path = convert_and_save(keras_model, flags.FLAGS.output_dir)
  mean, std = input_normalisation(keras_model)
  print(
      f'saved {path}; input = (pixels / 255 - {mean.round(5).tolist()}) / '
      f'{std.round(5).tolist()} (RGB)'
  )


if __name__ == '__main__':
  # Flags are defined only when run as a program, so that importing the
  # converters never clashes with another module's flags.
  flags.DEFINE_enum(
      'model', None, sorted(KERAS_APPLICATIONS), 'Model to convert.'
  )
  flags.DEFINE_string(
      'weights',
      'imagenet',
      "Keras `weights`: 'imagenet', a weights file, or '' "
      '(random initialisation).',
  )
  flags.DEFINE_string('output_dir', None, 'Checkpoint directory to write.')
  flags.mark_flags_as_required(['model', 'output_dir'])
  app.run(main)
