"""What the methods that skip SAM's second pass cost, against what they skip.

A method that takes SAM's second pass on a fraction f of its steps should
cost 1 + f (SAM/SGD - 1) SGD steps a step. This times, in one process and
interleaved rounds, each such method over whole cycles of its real train
programs (`sam.run.programs.pmap_steps`, the loop's own), next to SGD and
SAM, and prints measured / predicted:

  python -m benchmarks.method_cost --model=wrn_mini --image_size=8 \
      --batch=64 --cycle=10 --repeats=5
  python -m benchmarks.method_cost --aesam_threshold=0 \
      --variants=sgd,sam,aesam_select,aesam_cond,aesam_late

Variants:
  sgd, sam                the two ends of the formula;
  looksam, rst            the host's choice between two programs (the run's);
  looksam_device,         the same choice made on device by `jax.lax.cond`
    rst_device            (what every run did before the host chose);
  aesam_select,           AE-SAM's on-device choice as a select (both
    aesam_cond            branches) or a cond: the same update;
  aesam_late              AE-SAM's choice made on the host one step late:
                          each step reads the step before's outcome back
                          (one device-to-host sync a step) and dispatches
                          one of two programs. Not the paper's rule (the
                          choice lags one step); its choices here replay
                          aesam_select's, so it runs the same f.
f is the fraction of the timed steps that took the second pass: from the
schedule where the host chooses, from the logged sam_fraction where the
device does.
"""

import os
import statistics
import time

from absl import app
from absl import flags
import jax
import numpy as np

from benchmarks import step_time
import models
from sam import methods
from sam.run import programs
from sam.run import state as state_lib

# variant -> (method, config.sam fields, program choice): 'host' runs the
# run's programs as the loop does, 'device' the one program with the choice
# made on device, 'late' two programs chosen one step late.
VARIANTS = {
    'sgd': ('sgd', {}, 'host'),
    'sam': ('sam', {}, 'host'),
    'looksam': ('looksam', {}, 'host'),
    'looksam_device': ('looksam', {}, 'device'),
    'rst': ('rst', {}, 'host'),
    'rst_device': ('rst', {}, 'device'),
    'aesam_select': ('aesam', {'aesam_branch': 'select'}, 'host'),
    'aesam_cond': ('aesam', {'aesam_branch': 'cond'}, 'host'),
    'aesam_late': ('aesam', {'aesam_branch': 'select'}, 'late'),
}

_FLAGS = flags.FLAGS
flags.DEFINE_string('model', 'wrn_mini', 'A models.MODELS name.')
flags.DEFINE_integer('image_size', 8, 'Image side.')
flags.DEFINE_integer('batch', 64, 'Global batch.')
flags.DEFINE_integer('cycle', 10, 'Steps a variant takes per round.')
flags.DEFINE_integer('repeats', 5, 'Timed rounds.')
flags.DEFINE_integer('num_steps', 1000, "The run's length (AE-SAM's c_t).")
flags.DEFINE_list('variants', list(VARIANTS), 'Variant names (module doc).')
flags.DEFINE_float(
    'aesam_threshold',
    None,
    "AE-SAM's c_t held at this value (lambda_start = lambda_end), e.g. 0 for"
    ' about half the steps SAM; default: the config (c falls from 1 to -1'
    ' over --num_steps, so a short benchmark sees few SAM steps).',
)


class Runner:
  """One variant's programs, state and step counter, advanced by rounds."""

  def __init__(self, name: str, devices):
    method, fields, self.mode = VARIANTS[name]
    config = step_time.variant_config(
        method, _FLAGS.model, _FLAGS.batch, len(devices)
    )
    config.sam.update(fields)
    if method == 'aesam' and _FLAGS.aesam_threshold is not None:
      config.sam.aesam_lambda_start = _FLAGS.aesam_threshold
      config.sam.aesam_lambda_end = _FLAGS.aesam_threshold
    _, self.state = step_time.build_step(config, _FLAGS.image_size, 10, devices)
    self.programs = self._programs(config, devices)
    self.batch = step_time.make_batch(
        _FLAGS.batch, _FLAGS.image_size, 10, devices
    )
    self.step, self.taken = 0, []
    self.replay = None  # aesam_late: the choices to lag (aesam_select's).

  def _programs(self, config, devices) -> programs.TrainPrograms:
    sam = methods.create(
        config.sam, num_steps=_FLAGS.num_steps, seed=config.seed
    )
    model = models.create_model(config.model.name, 10, config.model.dtype)
    if self.mode == 'device':
      sam = sam._replace(method=sam.method._replace(schedule=None))
    if self.mode == 'late':
      # Any schedule makes pmap_steps compile both programs; _run_late
      # picks between them itself.
      sam = sam._replace(method=sam.method._replace(schedule=lambda s: s))
    train, _ = programs.pmap_steps(config, model, 10, sam, devices)
    return train

  def run(self, steps: int) -> float:
    """Takes `steps` steps; returns the seconds they took."""
    if self.mode == 'late':
      return self._run_late(steps)
    started = time.perf_counter()
    metrics = []
    for program in self.programs.for_steps(self.step, self.step + steps):
      self.state, step_metrics = program(self.state, self.batch)
      metrics.append(step_metrics)
    jax.block_until_ready((self.state, metrics))
    seconds = time.perf_counter() - started
    self._record(metrics)
    self.step += steps
    return seconds

  def _run_late(self, steps: int) -> float:
    started = time.perf_counter()
    metrics, previous = [], None
    for index in range(self.step, self.step + steps):
      if previous is not None:
        # The host reads the step before's outcome before it dispatches.
        jax.device_get(previous.train_loss.count)
      choice = bool(self.replay[index - 1]) if index else True
      self.state, previous = self.programs.by_choice[choice](
          self.state, self.batch
      )
      metrics.append(previous)
    jax.block_until_ready((self.state, metrics))
    seconds = time.perf_counter() - started
    self._record(metrics)
    self.step += steps
    return seconds

  def _record(self, metrics) -> None:
    for step_metrics in jax.device_get(state_lib.unreplicate(metrics)):
      computed = step_metrics.compute()
      self.taken.append(float(computed.get('sam_fraction', np.nan)))


def fraction(name: str, runner: Runner) -> float:
  """f: the share of the timed steps that took SAM's second pass."""
  if name == 'sgd':
    return 0.0
  if name == 'sam':
    return 1.0
  return float(np.mean(runner.taken))


def main(argv):
  del argv
  devices = jax.local_devices()[:1]
  names = _FLAGS.variants
  print(
      f'{_FLAGS.model}, batch {_FLAGS.batch}, {_FLAGS.image_size}px, '
      f'{devices[0].platform}, {os.cpu_count()} cores, cycles of '
      f'{_FLAGS.cycle} steps, load {os.getloadavg()[0]:.1f}',
      flush=True,
  )
  runners = {name: Runner(name, devices) for name in names}
  # aesam_late lags aesam_select's choices, so they are drawn first (the
  # warm-up cycle and every round run aesam_select before aesam_late).
  late = runners.get('aesam_late')
  if late is not None:
    late.replay = runners['aesam_select'].taken
  seconds = {name: [] for name in names}
  for name in names:  # A warm-up cycle: both programs compile.
    runners[name].run(_FLAGS.cycle)
  for repeat in range(_FLAGS.repeats):
    for name in names:
      seconds[name].append(runners[name].run(_FLAGS.cycle) / _FLAGS.cycle)
    print_table(names, seconds, runners, repeat + 1)


def print_table(names, seconds, runners, rounds) -> None:
  """Medians so far, with f and measured / predicted cost."""
  median = {name: statistics.median(seconds[name]) for name in names}
  sgd, sam = median['sgd'], median['sam']
  print(
      f'\nmedian of {rounds} rounds; load {os.getloadavg()[0]:.1f}\n'
      f'{"variant":<16}{"ms/step":>9}{"x SGD":>7}{"f":>6}'
      f'{"predicted":>10}{"measured/pred":>14}',
      flush=True,
  )
  for name in names:
    f = fraction(name, runners[name])
    predicted = 1 + f * (sam / sgd - 1)
    ratio = median[name] / sgd
    print(
        f'{name:<16}{1e3 * median[name]:9.1f}{ratio:7.2f}{f:6.2f}'
        f'{predicted:10.2f}{ratio / predicted:14.2f}',
        flush=True,
    )


if __name__ == '__main__':
  app.run(main)
