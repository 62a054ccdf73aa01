"""Trains and evaluates one run.

  python train.py --config=configs/cifar.py:dataset=cifar100,opt=sam \
    --workdir=/tmp/run [--config.field=value ...]

Every knob lives in the config (configs/); this file only reads the config
and the workdir.
"""

import sys

import jax
import tensorflow as tf
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from data import sources
from launch import tpu
from sam import checkpointing
from sam import config_checks
from sam import training

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file and knobs, e.g. configs/cifar.py:opt=sgd.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for this run.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  # Multi-host runs (Cloud TPU pods, launch/tpu.py) join jax.distributed
  # before anything else touches the devices.
  tpu.maybe_initialize_distributed()
  # Orbax logs every file it writes at INFO; keep the run's own log readable.
  logging.get_absl_handler().addFilter(
      lambda record: '/orbax/' not in record.pathname)
  # tf.data only: keep TensorFlow off the accelerators JAX uses.
  tf.config.set_visible_devices([], 'GPU')
  try:
    summary = training.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (config_checks.ConfigError, sources.DatasetNotPreparedError,
          training.NonFiniteError, checkpointing.CheckpointWriteError,
          OSError) as e:
    sys.exit(f'error: {e}')
  if jax.process_index() == 0:
    final, best = summary['final'], summary['best']
    print(f"{_WORKDIR.value}: test error {100 * final['test_error']:.2f}% "
          f"(best {100 * best['test_error']:.2f}% at step "
          f"{best['test_error_step']}), {summary['num_steps']} steps, "
          f"{summary['wall_time_s']:.0f} s of training")


if __name__ == '__main__':
  jax.config.config_with_absl()
  app.run(main)
