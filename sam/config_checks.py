"""Config validation: every mistake is a one-line error before anything is
compiled or written."""

import json
import math
import os

import ml_collections
import tensorflow_datasets as tfds

import models
from configs import base
from data import augment
from data import sources
from data import streaming

OPTIMIZERS = ('sam', 'sgd')


class ConfigError(ValueError):
  """A config field holds an impossible value."""


def _require(ok: bool, field: str, value, why: str) -> None:
  if not ok:
    raise ConfigError(f'config.{field} = {value!r}: {why}')


def _one_of(config, field: str, valid) -> None:
  value = config
  for part in field.split('.'):
    value = value[part]
  _require(value in valid, field, value, f'valid: {sorted(valid)}')


def validate(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Checks names and ranges of the fields the spine uses.

  Args:
    config: the run config.
    num_devices: devices over all hosts (the global batch is split evenly).

  Raises:
    ConfigError: naming the first bad field and the accepted values.
  """
  _one_of(config, 'model', models.MODELS)
  if streaming.uses_streaming(config):
    _check_streamed(config)
  else:
    _one_of(config, 'augment', augment.TRAIN_TRANSFORMS)
  _one_of(config, 'optimizer', OPTIMIZERS)
  _one_of(config, 'dtype', models.DTYPES)
  _require(config.sam.rho >= 0, 'sam.rho', config.sam.rho, 'must be >= 0')
  for field in ('num_epochs', 'epochs_multiplier', 'batch_size',
                'eval_batch_size', 'log_every_steps', 'checkpoint_every_steps',
                'keep_checkpoints', 'eval_every_epochs'):
    _require(config[field] > 0, field, config[field], 'must be > 0')
  for field in ('batch_size', 'eval_batch_size'):
    _require(config[field] % num_devices == 0, field, config[field],
             f'must be divisible by the number of devices ({num_devices})')
  _require(config.learning_rate > 0, 'learning_rate', config.learning_rate,
           'must be > 0')
  _require(0 <= config.momentum < 1, 'momentum', config.momentum,
           'must be in [0, 1)')
  _require(config.weight_decay >= 0, 'weight_decay', config.weight_decay,
           'must be >= 0')
  _require(config.grad_clip_norm >= 0, 'grad_clip_norm',
           config.grad_clip_norm, 'must be >= 0 (0 turns clipping off)')
  _require(0 <= config.label_smoothing < 1, 'label_smoothing',
           config.label_smoothing, 'must be in [0, 1)')
  _require(0 < config.validation_fraction < 1, 'validation_fraction',
           config.validation_fraction, 'must be in (0, 1)')
  _require(config.warmup_epochs >= 0, 'warmup_epochs', config.warmup_epochs,
           'must be >= 0')
  _require(config.crop_padding >= 0, 'crop_padding', config.crop_padding,
           'must be >= 0')
  # The SAM family (sam.*), m-sharpness and gradient accumulation.
  s = config.sam
  device_batch = config.batch_size // num_devices
  steps = config.accumulation_steps
  _require(steps >= 1 and device_batch % steps == 0, 'accumulation_steps',
           steps, f'must be >= 1 and divide the per-device batch '
           f'({device_batch})')
  _one_of(config, 'sam.perturbation', ('gradient', 'random'))
  _require(1 <= s.p <= math.inf, 'sam.p', s.p, 'must be in [1, inf]')
  _require(s.ascent_steps >= 1, 'sam.ascent_steps', s.ascent_steps,
           'must be >= 1')
  _require(s.ascent_steps == 1 or s.p in (2, math.inf), 'sam.ascent_steps',
           s.ascent_steps, 'projected ascent (> 1) needs sam.p = 2 or inf')
  _require(s.adaptive_eta >= 0, 'sam.adaptive_eta', s.adaptive_eta,
           'must be >= 0')
  _require(not (s.second_order and s.ascent_steps > 1), 'sam.second_order',
           s.second_order, 'needs sam.ascent_steps = 1')
  if s.perturbation == 'random':
    _require(not (s.second_order or s.adaptive or s.ascent_steps > 1 or
                  s.p != 2), 'sam.perturbation', s.perturbation,
             'random takes no second_order, adaptive, ascent_steps or p')
  _one_of(config, 'sam.m_groups', ('vmap', 'unroll'))
  m = s.m or device_batch
  _require(s.m >= 0 and device_batch % m == 0, 'sam.m', s.m,
           f'must divide the per-device batch ({device_batch}); 0 = all of it')
  _require(not (s.m and s.sync_perturbation and m != device_batch), 'sam.m',
           s.m, 'must be 0 with sam.sync_perturbation (one global eps)')
  _require(m == device_batch or (device_batch // steps) % m == 0, 'sam.m',
           s.m, f'must divide the micro-batch ({device_batch // steps}) '
           'with accumulation_steps')
  for field in ('sharpness_every_steps', 'sharpness_rho',
                'sharpness_ascent_steps'):
    _require(config[field] >= 0, field, config[field], 'must be >= 0')
  _require(0 <= config.label_noise < 1, 'label_noise', config.label_noise,
           'must be in [0, 1)')
  _one_of(config, 'label_noise_mode', ('different', 'uniform'))
  _require(config.mixup_alpha >= 0, 'mixup_alpha', config.mixup_alpha,
           'must be >= 0 (0 turns mixup off)')
  _require(config.image_size >= 0, 'image_size', config.image_size,
           "must be >= 0 (0 keeps the dataset's resolution)")
  for field, marker in (('bootstrap_teacher_workdir', 'summary.json'),
                        ('init_checkpoint', '')):
    path = config[field]
    _require(not path or os.path.exists(os.path.join(path, marker)), field,
             path, f'no {marker} in that directory' if marker else
             'no such path')


def _check_streamed(config: ml_collections.ConfigDict) -> None:
  """The fields a dataset streamed from tfds files can take."""
  name = config.dataset
  _require(name not in sources.SOURCES or name in streaming.STREAMED,
           'streaming', config.streaming, f'dataset {name!r} is held in '
           f'memory only; streamed: {sorted(streaming.STREAMED)} or any tfds '
           'dataset name')
  if name not in streaming.STREAMED:
    try:
      tfds.builder(name, data_dir=config.data_dir)
    except tfds.core.registered.DatasetNotFoundError:
      raise ConfigError(  # pylint: disable=raise-missing-from
          f'config.dataset = {name!r}: valid: in memory '
          f'{sorted(sources.SOURCES)}, streamed {sorted(streaming.STREAMED)} '
          'or another tfds dataset (tfds.list_builders()) prepared in '
          'config.data_dir')
  _require(config.image_size > 0, 'image_size', config.image_size,
           f'must be > 0 for the streamed dataset {name!r} (its images are '
           'cropped and resized to image_size)')
  _require(config.augment in streaming.AUGMENTS, 'augment', config.augment,
           f'valid for a streamed dataset: {sorted(streaming.AUGMENTS)}')
  for field in ('label_noise', 'bootstrap_teacher_workdir', 'svhn_extra'):
    _require(not config[field], field, config[field],
             f'needs a dataset held in memory, not the streamed {name!r}')
  _require(config.shuffle_buffer_examples >= 0, 'shuffle_buffer_examples',
           config.shuffle_buffer_examples, 'must be >= 0 (0: the default)')


def check_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses a workdir that holds a run of a different config.

  Raises:
    ConfigError: naming the first differing field.
  """
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return
  # Over today's defaults, so a run saved before a field existed resumes.
  stored = json.loads(base.base_config().to_json())
  with open(path) as f:
    stored.update(json.load(f))
  current = json.loads(config.to_json())
  if stored != current:
    differing = sorted(
        k for k in set(stored) | set(current)
        if stored.get(k) != current.get(k))
    raise ConfigError(
        f'workdir {workdir!r} holds a run of a different config (fields '
        f'{differing} differ); use a new workdir')
