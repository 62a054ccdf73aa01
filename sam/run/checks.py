"""Config validation: every mistake is a one-line error before anything is
compiled or written."""

import json
import math

from etils import epath
import jax
import ml_collections

from configs import base
from data import catalog
from data import label_noise
import models
from sam import interface
from sam import methods
from sam import optim
from sam.run import files
from sam.run import replicas


class ConfigError(ValueError):
  """A config field holds an impossible value."""


def _require(ok: bool, field: str, value, why: str) -> None:
  if not ok:
    raise ConfigError(f'config.{field} = {value!r}: {why}')


def _get(config: ml_collections.ConfigDict, field: str):
  value = config
  for part in field.split('.'):
    value = value[part]
  return value


def _one_of(config, field: str, valid) -> None:
  value = _get(config, field)
  _require(value in valid, field, value, f'valid: {sorted(valid)}')


def _positive(config, *fields: str) -> None:
  for field in fields:
    value = _get(config, field)
    _require(value > 0, field, value, 'must be > 0')
    _require(math.isfinite(value), field, value, 'must be finite')


def _in_range(config, field: str, low, high, closed_high=False) -> None:
  value = _get(config, field)
  ok = low <= value <= high if closed_high else low <= value < high
  _require(
      ok,
      field,
      value,
      f'must be in [{low}, {high}{"]" if closed_high else ")"}',
  )


def validate(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Checks names and ranges of every field a run uses.

  Args:
    config: the run config (configs/base.py lists the fields).
    num_devices: devices over all hosts (the global batch is split evenly).

  Raises:
    ConfigError: naming the first bad field and the accepted values.
  """
  _one_of(config, 'model.name', models.MODELS)
  _one_of(config, 'model.dtype', models.DTYPES)
  _require(
      config.model.dtype != 'float64' or jax.config.jax_enable_x64,
      'model.dtype',
      config.model.dtype,
      "needs jax's 64-bit mode (train.py turns it on for this dtype; "
      "elsewhere call jax.config.update('jax_enable_x64', True) first)",
  )
  _check_data(config.data)
  _check_optim(config, num_devices)
  _check_sam(config, num_devices)
  _positive(
      config,
      'eval.batch_size',
      'eval.every_epochs',
      'run.log_every_steps',
      'run.checkpoint_every_steps',
      'run.keep_checkpoints',
  )
  for field in (
      'eval.sharpness_every_steps',
      'eval.sharpness_rho',
      'eval.sharpness_ascent_steps',
  ):
    _require(
        _get(config, field) >= 0, field, _get(config, field), 'must be >= 0'
    )
  _require(
      config.eval.batch_size % num_devices == 0,
      'eval.batch_size',
      config.eval.batch_size,
      f'must be divisible by the number of devices ({num_devices})',
  )
  for field, marker in (
      ('data.bootstrap_teacher_workdir', 'summary.json'),
      ('model.init_checkpoint', ''),
  ):
    path = _get(config, field)
    _require(
        not path or (epath.Path(path) / marker).exists(),
        field,
        path,
        f'no {marker} in that directory' if marker else 'no such path',
    )


def _check_data(data: ml_collections.ConfigDict) -> None:
  streamed = catalog.uses_streaming(data.dataset, data.streaming)
  # `data.` prefixes the field names of the errors below.
  config = ml_collections.ConfigDict({'data': data})
  _one_of(config, 'data.augment', catalog.augmentations(streamed))
  _in_range(config, 'data.label_noise', 0, 1)
  _one_of(config, 'data.label_noise_mode', label_noise.MODES)
  _require(
      data.mixup_alpha >= 0,
      'data.mixup_alpha',
      data.mixup_alpha,
      'must be >= 0 (0 turns mixup off)',
  )
  _require(
      data.image_size >= 0,
      'data.image_size',
      data.image_size,
      "must be >= 0 (0 keeps the dataset's resolution)",
  )
  _require(
      0 < data.validation_fraction < 1,
      'data.validation_fraction',
      data.validation_fraction,
      'must be in (0, 1)',
  )
  _require(
      data.dataset != 'svhn_cropped'
      or not data.validation_split
      or data.validation_fraction == catalog.HOLDOUT_FRACTION,
      'data.validation_fraction',
      data.validation_fraction,
      "SVHN holds out the official code's fixed split, train[65929:]; "
      f'leave it at {catalog.HOLDOUT_FRACTION}',
  )
  _require(
      data.crop_padding >= 0,
      'data.crop_padding',
      data.crop_padding,
      'must be >= 0',
  )
  _require(
      data.shuffle_buffer_examples >= 0,
      'data.shuffle_buffer_examples',
      data.shuffle_buffer_examples,
      'must be >= 0 (0: the default)',
  )
  if not streamed:
    return
  name = data.dataset
  _require(
      name not in catalog.IN_MEMORY or name in catalog.STREAMED,
      'data.streaming',
      data.streaming,
      f'dataset {name!r} is held in '
      f'memory only; streamed: {sorted(catalog.STREAMED)} or any tfds '
      'dataset name',
  )
  _require(
      data.image_size > 0,
      'data.image_size',
      data.image_size,
      f'must be > 0 for the streamed dataset {name!r} (its images are '
      'cropped and resized to image_size)',
  )
  for field in ('label_noise', 'bootstrap_teacher_workdir', 'svhn_extra'):
    _require(
        not data[field],
        f'data.{field}',
        data[field],
        f'needs a dataset held in memory, not the streamed {name!r}',
    )


def _check_optim(config: ml_collections.ConfigDict, num_devices: int) -> None:
  _positive(
      config,
      'optim.num_epochs',
      'optim.epochs_multiplier',
      'optim.batch_size',
      'optim.learning_rate',
  )
  _require(
      config.optim.batch_size % num_devices == 0,
      'optim.batch_size',
      config.optim.batch_size,
      f'must be divisible by the number of devices ({num_devices})',
  )
  _in_range(config, 'optim.momentum', 0, 1)
  _in_range(config, 'optim.label_smoothing', 0, 1)
  for field, note in (
      ('weight_decay', ''),
      ('warmup_epochs', ''),
      ('grad_clip_norm', ' (0 turns clipping off)'),
      ('num_steps', ' (0: num_epochs sets the length)'),
  ):
    value = config.optim[field]
    _require(value >= 0, f'optim.{field}', value, f'must be >= 0{note}')
    _require(math.isfinite(value), f'optim.{field}', value, 'must be finite')
  device_batch = config.optim.batch_size // num_devices
  steps = config.optim.accumulation_steps
  _require(
      steps >= 1 and device_batch % steps == 0,
      'optim.accumulation_steps',
      steps,
      'must be >= 1 and divide the ' f'per-device batch ({device_batch})',
  )


def _check_sam(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """The SAM family (sam.*) and its groups on `num_devices` devices.

  The method's constructor checks its fields (sam/methods.py): it is built
  here as the run will build it, over a nominal one-step epoch (the
  dataset's size changes no field's validity).
  """
  s = config.sam
  schedule = optim.learning_rate_schedule(config.optim, steps_per_epoch=1)
  try:
    sam, taken = methods.fields(
        s,
        learning_rate=schedule,
        num_steps=optim.total_train_steps(config.optim, steps_per_epoch=1),
        seed=config.seed,
    )
  except interface.FieldError as e:
    raise ConfigError(f'config.{e}') from e
  defaults = base.sam_section()
  for field in sorted(set(s) - set(methods.SHARED_FIELDS) - taken):
    _require(
        s[field] == defaults.get(field),
        f'sam.{field}',
        s[field],
        f'sam.method={s.method} takes no {field}; its fields: '
        f'{sorted(taken | {"rho"})}',
    )
  # A combination with the optim section: ESAM ranks a replica's examples,
  # which the step can do only without accumulation (sam/run/step.py).
  _require(
      s.method != 'esam'
      or s.esam_example_fraction == 1
      or config.optim.accumulation_steps == 1,
      'sam.esam_example_fraction',
      s.esam_example_fraction,
      'selects examples, which needs optim.accumulation_steps = 1 '
      f'(got {config.optim.accumulation_steps}); or set it to 1.0',
  )
  replica = config.optim.replica_batch_size
  _require(
      replica >= 0,
      'optim.replica_batch_size',
      replica,
      'must be >= 0 (0: the per-device batch)',
  )
  # The groups of a step: the method's m if set, else the replicas
  # (sam/run/replicas.py).
  field = 'sam.m' if sam.m else 'optim.replica_batch_size'
  why = replicas.problem(
      config.optim, sam.m, sam.sync_perturbation, num_devices
  )
  _require(not why, field, _get(config, field), why)


def _without_placement(record: dict) -> dict:
  """A config record without PLACEMENT_FIELDS (where a run executes)."""
  record = json.loads(json.dumps(record))
  for field in base.PLACEMENT_FIELDS:
    section, leaf = field.split('.')
    record.get(section, {}).pop(leaf, None)
  return record


def identity(config: ml_collections.ConfigDict) -> dict:
  """The fields that define what a run computes, as JSON data."""
  return _without_placement(json.loads(config.to_json()))


def _differing(stored, current, prefix=''):
  if not (isinstance(stored, dict) and isinstance(current, dict)):
    return [prefix.rstrip('.')] if stored != current else []
  return [
      field
      for key in sorted(set(stored) | set(current))
      for field in _differing(
          stored.get(key), current.get(key), f'{prefix}{key}.'
      )
  ]


def check_workdir_is_folder(workdir: epath.PathLike) -> None:
  """Refuses a workdir that is a file.

  Raises:
    ConfigError: naming it.
  """
  workdir = epath.Path(workdir)
  if workdir.exists() and not workdir.is_dir():
    raise ConfigError(f'--workdir={workdir} is a file; a workdir is a folder')


def check_workdir(
    config: ml_collections.ConfigDict, workdir: epath.PathLike
) -> None:
  """Refuses a workdir that holds a run of a different config.

  Args:
    config: the run config.
    workdir: the run's workdir.

  Raises:
    ConfigError: naming the differing fields, or a workdir that is a file
      or holds an unreadable config.json.
  """
  workdir = epath.Path(workdir)
  check_workdir_is_folder(workdir)
  path = workdir / 'config.json'
  if not path.exists():
    return
  try:
    record = files.read_json(path)
  except ValueError as e:
    raise ConfigError(
        f'{e}: it records which config this workdir holds; restore it or '
        'use a new workdir'
    ) from e
  if not isinstance(record, dict):
    raise ConfigError(f'{path} holds no config record; use a new workdir')
  # Over today's defaults, so a run saved before a field existed resumes.
  stored = identity(base.from_record(record))
  differing = _differing(stored, identity(config))
  if differing:
    raise ConfigError(
        f'workdir {str(workdir)!r} holds a run of a different config (fields '
        f'{differing} differ); use a new workdir'
    )
