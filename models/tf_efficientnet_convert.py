"""Converts the official TensorFlow EfficientNet checkpoints to Flax.

The paper finetunes (appendix C.2) the checkpoints released with the TF
EfficientNet code (tensorflow/tpu, models/official/efficientnet): B7 trained
with RandAugment (`efficientnet-b7-randaug`) and L2 trained with Noisy
Student. Noisy Student released L2 twice: `noisy_student_efficientnet-l2_475`,
finetuned at 475 px, the paper's finetuning resolution
(models.efficientnet.FINETUNE_RESOLUTION), and `noisy_student_efficientnet-l2`
at 800 px. Both hold the same variables; this converter takes either.

A checkpoint holds, under one scope (`efficientnet-b7/`), TF layer names
numbered in creation order; the mapping to models.efficientnet's names:

| TF (under the scope)                    | Flax                         |
|-----------------------------------------|------------------------------|
| stem/conv2d, stem/tpu_batch_normalization | stem_conv, stem_bn         |
| blocks_N/conv2d (expanding blocks)      | blockSL/expand_conv          |
| blocks_N/tpu_batch_normalization        | blockSL/expand_bn            |
| blocks_N/depthwise_conv2d               | blockSL/dwconv               |
| blocks_N/tpu_batch_normalization_1      | blockSL/bn                   |
| blocks_N/se/conv2d, se/conv2d_1         | blockSL/se_reduce, se_expand |
| blocks_N/conv2d_1                       | blockSL/project_conv         |
| blocks_N/tpu_batch_normalization_2      | blockSL/project_bn           |
| head/conv2d, head/tpu_batch_normalization | top_conv, top_bn           |
| head/dense                              | head                         |

Blocks are numbered over the whole network (blocks_0 is block1a); a block
without expansion (the first stage) has no expand conv, so its depthwise BN
is `tpu_batch_normalization`, its projection `conv2d` and its projection BN
`tpu_batch_normalization_1`. Checkpoints written without TPU BatchNorm name
it `batch_normalization`; both are read. Each variable's exponential moving
average (`<name>/ExponentialMovingAverage`) is taken when present, as the
official evaluation does; optimizer slots and `global_step` are skipped. A
variable that maps nowhere, or a model entry the checkpoint lacks, is an
error naming it. Inputs are normalised with the ImageNet mean and std, as in
the TF code. --checkpoint takes a released folder or a checkpoint prefix:

  python -m models.tf_efficientnet_convert --model=efficientnet_l2 \\
      --checkpoint=/data/noisy_student_efficientnet-l2_475/model.ckpt \\
      --output_dir=/data/ckpt/efficientnet_l2_475

The B7 of Table 3 (configs/finetune.py gives the whole path):

  python -m models.tf_efficientnet_convert --model=efficientnet_b7 \\
      --checkpoint=/ckpt/efficientnet-b7-randaug \\
      --output_dir=/ckpt/efficientnet_b7_randaug
"""

import re
from typing import Any

from absl import app
from absl import flags
import flax
import numpy as np
import tensorflow as tf

import models
from models import pretrained

EMA_SUFFIX = '/ExponentialMovingAverage'
# Optimizer slots (RMSProp, momentum) and the step counter.
SKIPPED = re.compile(r'^global_step$|/(RMSProp(_1)?|Momentum)$')
_BATCH_NORM = re.compile(r'(?:tpu_)?batch_normalization(?:_(\d+))?')
_BATCH_NORM_LEAVES = {
    'gamma': ('params', 'scale'),
    'beta': ('params', 'bias'),
    'moving_mean': ('batch_stats', 'mean'),
    'moving_variance': ('batch_stats', 'var'),
}
# TF layer -> Flax module inside a block, by whether the block expands.
_BLOCK_LAYERS = {
    True: {
        'conv2d': 'expand_conv',
        'bn0': 'expand_bn',
        'depthwise_conv2d': 'dwconv',
        'bn1': 'bn',
        'se/conv2d': 'se_reduce',
        'se/conv2d_1': 'se_expand',
        'conv2d_1': 'project_conv',
        'bn2': 'project_bn',
    },
    False: {
        'depthwise_conv2d': 'dwconv',
        'bn0': 'bn',
        'se/conv2d': 'se_reduce',
        'se/conv2d_1': 'se_expand',
        'conv2d': 'project_conv',
        'bn1': 'project_bn',
    },
}
_OUTER_LAYERS = {
    'stem': {'conv2d': 'stem_conv', 'bn0': 'stem_bn'},
    'head': {'conv2d': 'top_conv', 'bn0': 'top_bn', 'dense': 'head'},
}


def read_checkpoint(path: str) -> dict[str, np.ndarray]:
  """Every tensor of a TF checkpoint.

  Args:
    path: a checkpoint prefix such as `.../model.ckpt`, or the folder of a
      released checkpoint, whose `checkpoint` file names the prefix.

  Returns:
    name -> value.
  """
  reader = tf.train.load_checkpoint(path)
  return {
      name: reader.get_tensor(name)
      for name in reader.get_variable_to_shape_map()
  }


def model_weights(
    tensors: dict[str, np.ndarray], use_ema: bool = True
) -> dict[str, np.ndarray]:
  """The model's variables of a checkpoint.

  Args:
    tensors: name -> value, e.g. from `read_checkpoint`.
    use_ema: take each variable's moving average where the checkpoint has one.

  Returns:
    name -> value, without optimizer slots, the step or the shadow names.
  """
  weights = {}
  for name, value in tensors.items():
    if SKIPPED.search(name) or name.endswith(EMA_SUFFIX):
      continue
    shadow = tensors.get(name + EMA_SUFFIX)
    weights[name] = shadow if use_ema and shadow is not None else value
  return weights


def _layer_key(layer: str) -> str:
  """'tpu_batch_normalization_2' -> 'bn2'; other layer names unchanged."""
  match = _BATCH_NORM.fullmatch(layer)
  return f'bn{match.group(1) or 0}' if match else layer


def _leaf(module: tuple[str, ...], leaf: str, value: np.ndarray):
  """(collection, Flax path, value) of one TF variable of a Flax module."""
  if leaf in _BATCH_NORM_LEAVES:
    collection, name = _BATCH_NORM_LEAVES[leaf]
    return collection, (*module, name), value
  if leaf == 'depthwise_kernel':  # TF [k, k, C, 1] -> Flax [k, k, 1, C].
    return 'params', (*module, 'kernel'), value.transpose(0, 1, 3, 2)
  if module[-1].startswith('se_') and leaf == 'kernel':
    # The squeeze-excitation 1x1 convs are Dense layers here.
    return 'params', (*module, 'kernel'), value.reshape(-1, value.shape[-1])
  return 'params', (*module, leaf), value


def _block_table(model_name: str) -> list[tuple[str, bool]]:
  """(Flax block name, expands?) of every block, in network order."""
  model = models.create_model(model_name, num_classes=1)
  shapes = pretrained.model_shapes(model)
  blocks = sorted(
      (name for name in shapes['params'] if name.startswith('block')),
      key=lambda name: (int(name[5:-1]), name[-1]),
  )
  return [(b, 'expand_conv' in shapes['params'][b]) for b in blocks]


def _module(local: str, blocks: list[tuple[str, bool]]):
  """Flax module path and leaf of a name under the scope, or None."""
  parts = local.split('/')
  group, layer, leaf = parts[0], '/'.join(parts[1:-1]), parts[-1]
  layer = _layer_key(layer)
  match = re.fullmatch(r'blocks_(\d+)', group)
  if match and int(match.group(1)) < len(blocks):
    block, expands = blocks[int(match.group(1))]
    name = _BLOCK_LAYERS[expands].get(layer)
    return ((block, name), leaf) if name else None
  name = _OUTER_LAYERS.get(group, {}).get(layer)
  return ((name,), leaf) if name else None


def convert(weights: dict[str, np.ndarray], model_name: str) -> dict[str, Any]:
  """Flax variables {'params', 'batch_stats'} of TF EfficientNet weights.

  Args:
    weights: name -> value of the model's variables (`model_weights`).
    model_name: the models.MODELS EfficientNet they are for.

  Returns:
    Nested Flax variables (not yet checked against the model's shapes).

  Raises:
    ValueError: if the scope is not the model's variant or a variable maps
      to no Flax entry.
  """
  variant = models.MODELS[model_name].keywords['variant']
  scopes = sorted({name.split('/')[0] for name in weights})
  if scopes != [f'efficientnet-{variant}']:
    raise ValueError(
        f'checkpoint scopes {scopes}: {model_name} needs exactly '
        f'efficientnet-{variant}/'
    )
  blocks = _block_table(model_name)
  flat, unmatched = {}, []
  for name, value in sorted(weights.items()):
    found = _module(name.split('/', 1)[1], blocks)
    if found is None:
      unmatched.append(name)
      continue
    collection, path, converted = _leaf(*found, np.asarray(value))
    flat[(collection, *path)] = converted
  if unmatched:
    raise ValueError(
        f'{len(unmatched)} checkpoint variables map to no {model_name} '
        f'entry: {unmatched[:5]}'
    )
  return flax.traverse_util.unflatten_dict(flat)


def convert_and_save(
    checkpoint: str, model_name: str, output: str, use_ema: bool = True
) -> str:
  """Reads, converts, checks (pretrained.save_converted) and saves.

  Returns:
    The orbax checkpoint path.
  """
  weights = model_weights(read_checkpoint(checkpoint), use_ema)
  return pretrained.save_converted(
      convert(weights, model_name),
      model_name,
      f'TF checkpoint {checkpoint}',
      output,
  )


def main(argv):
  del argv
  flag = flags.FLAGS
  path = convert_and_save(
      flag.checkpoint, flag.model, flag.output_dir, flag.use_ema
  )
  print(f'saved {path}')


if __name__ == '__main__':
  # Flags are defined only when run as a program, so that importing the
  # converter never clashes with another module's flags.
  flags.DEFINE_enum(
      'model',
      None,
      sorted(
          n for n in models.MODELS if re.fullmatch(r'efficientnet_(b\d|l2)', n)
      ),
      'EfficientNet to convert to.',
  )
  flags.DEFINE_string(
      'checkpoint', None, 'TF checkpoint folder or prefix to read.'
  )
  flags.DEFINE_string('output_dir', None, 'Checkpoint directory to write.')
  flags.DEFINE_bool('use_ema', True, 'Take the moving averages of the weights.')
  flags.mark_flags_as_required(['model', 'checkpoint', 'output_dir'])
  app.run(main)
