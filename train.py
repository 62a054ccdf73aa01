"""Trains and evaluates one run.

  python train.py --config=configs/cifar.py:dataset=cifar100,opt=sam \
    --workdir=/tmp/run [--config.section.field=value ...]

Every knob lives in the config (configs/); this file only reads the config
and the workdir. Bad input (an unknown knob or field, a value of the wrong
type or out of range) is one line on stderr, before anything compiles or is
written.
"""

import os
import re
import sys

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags

from configs import knobs
from data import sources
from sam.run import checkpoints
from sam.run import checks
from sam.run import distributed
from sam.run import experiment
from sam.run import loop
from sam.run import workdir_lock

_CONFIG = config_flags.DEFINE_config_file(
    'config',
    None,
    'Config file and knobs, e.g. configs/cifar.py:opt=sgd.',
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for this run.')
flags.mark_flags_as_required(['config', 'workdir'])

# Errors that are the user's to fix, reported as one line.
USER_ERRORS = (
    checks.ConfigError,
    sources.DatasetNotPreparedError,
    loop.NonFiniteError,
    checkpoints.CheckpointWriteError,
    checkpoints.CheckpointReadError,
    ValueError,
    OSError,
)


def _chain(error: BaseException):
  while error is not None:
    yield error
    error = error.__cause__ or error.__context__


def flag_error_line(error: Exception, argv: list[str]) -> str:
  """One line for a config string or override that does not parse."""
  # config_flags re-raises a config file's error with a traceback in its
  # text; the innermost KnobError is the config file's own line.
  ours = [c for c in _chain(error) if isinstance(c, knobs.KnobError)]
  if ours:
    return str(ours[-1])
  if isinstance(error, (AttributeError, KeyError)):  # An unknown field.
    text = str(error)
    name = re.search(r"'(\w+)", text)
    flag = next(
        (
            a.split('=')[0]
            for a in argv
            if a.startswith('--config.')
            and name
            and a.split('=')[0].endswith('.' + name.group(1))
        ),
        '--config',
    )
    hint = re.search(r'Did you mean "(\w+)"', text)
    return f'{flag}: no such config field' + (
        f'; did you mean {hint.group(1)!r}?' if hint else ''
    )
  return str(error).splitlines()[0]


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad config or override as one line."""
  try:
    remaining = flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    sys.exit(f'error: {flag_error_line(e, argv)}')
  if not isinstance(_CONFIG.value, ml_collections.ConfigDict):
    # config_flags defers a config file it cannot read until its first use.
    path = config_flags.get_config_filename(flags.FLAGS['config'])
    why = 'cannot be read' if os.path.isfile(path) else 'no such file'
    sys.exit(f'error: --config={path}: {why}')
  if len(remaining) > 1:
    sys.exit(
        f'error: unexpected arguments {remaining[1:]}; train.py takes '
        '--config and --workdir'
    )
  return remaining


def keep_log_record(record) -> bool:
  """Whether the run's log shows a Python logging record.

  Not orbax's INFO line for every file it writes, nor jax's INFO line for a
  backend it probed and did not find (libtpu, on every machine without a
  TPU): a backend a run asks for and cannot start raises instead.

  Args:
    record: a logging.LogRecord.

  Returns:
    False for those two kinds of record.
  """
  if '/orbax/' in record.pathname:
    return False
  return not (
      record.name == 'jax._src.xla_bridge'
      and record.levelno <= logging.converter.STANDARD_INFO
      and record.getMessage().startswith('Unable to initialize backend')
  )


def main(argv):
  del argv  # Checked by parse_flags.
  # Before anything touches the devices, which probes the backends.
  logging.get_absl_handler().addFilter(keep_log_record)
  config = _CONFIG.value
  # float64 runs (the replica equivalence check) need jax's 64-bit mode,
  # before any array exists.
  jax.config.update('jax_enable_x64', config.model.dtype == 'float64')
  # Multi-host runs (launch/tpu.py) join jax.distributed before anything
  # else touches the devices.
  distributed.initialize(config.run.distributed)
  try:
    summary = experiment.train_and_evaluate(config, _WORKDIR.value)
  except workdir_lock.WorkdirBusyError as e:
    # Its own exit status: launchers report the run as live elsewhere.
    print(f'error: {e}', file=sys.stderr)
    sys.exit(workdir_lock.BUSY_EXIT_CODE)
  except USER_ERRORS as e:
    sys.exit(f'error: {e}')
  if jax.process_index() == 0:
    final, best = summary['final'], summary['best']
    print(
        f"{_WORKDIR.value}: test error {100 * final['test_error']:.2f}% "
        f"(best {100 * best['test_error']:.2f}% at step "
        f"{best['test_error_step']}), {summary['num_steps']} steps, "
        f"{summary['wall_time_s']:.0f} s of training"
    )


if __name__ == '__main__':
  jax.config.config_with_absl()
  app.run(main, flags_parser=parse_flags)
