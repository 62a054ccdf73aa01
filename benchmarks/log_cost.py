"""The host's cost of a log, an evaluation and a checkpoint in the training
loop, and the loop's steps/s against its step's, for a quickstart-sized run.

  python -m benchmarks.log_cost --output_json=/tmp/log_cost.json

The run is configs/quickstart.py (WRN-10-2, SAM, batch 64 in two replicas
of 32; logs every 50 steps, evaluates every 5 epochs, checkpoints every 200
steps and at the end) on synthetic images of the digits' shape (8x8x1, 23
steps an epoch like the digits' 1,500 training images; benchmarks/
synthetic.py), over this host's local devices. Nothing here imports
TensorFlow. Two runs of `--steps` steps, in one process:

* loop: the real loop's steps/s after its first step, against the same
  compiled step back to back in rounds of `run.log_every_steps` steps, one
  before the loop and one after each log (taken out of the loop's clock),
  so that a change in the machine's load shows in both; the loop's
  segments between logs, each against the rounds on either side of it; the
  same ratio in the process's CPU seconds per step, which the load of
  other processes changes less (on a CPU backend the steps are CPU work
  too); and the XLA compilations inside the loop, with the train and eval
  steps compiled before it.
* events: the same run, in which the steps in flight are finished before
  each log, evaluation and checkpoint, and then the host's time in it is
  timed, in wall and in CPU seconds: its own cost, not the wait for the
  steps before it. An evaluation's time includes its eval steps. The first
  log is reported apart from the median and minimum of the others: it was
  where older code compiled.
"""

import json
import os
import statistics
import tempfile
import time

from absl import app
from absl import flags
from etils import epath
import jax
import jax.numpy as jnp

from benchmarks import step_time
from benchmarks import synthetic
from configs import quickstart
from sam.run import checkpoints
from sam.run import checks
from sam.run import loop
from sam.run import metrics_file
from sam.run import state as state_lib

# The digits' training images over the quickstart's batch: 1,500 / 64.
STEPS_PER_EPOCH = 23
IMAGE_SHAPE = (8, 8, 1)
EVENTS = ('_log', '_evaluate', '_checkpoint')
_COMPILE_EVENT = '/jax/core/compile/backend_compile_duration'
_compilations = [0]


def _count_compilations(event: str, duration: float, **kwargs) -> None:
  del duration, kwargs
  if event == _COMPILE_EVENT:
    _compilations[0] += 1


jax.monitoring.register_event_duration_secs_listener(_count_compilations)


def quickstart_config(num_steps: int, num_devices: int, model='wrn10_2'):
  """configs/quickstart.py for `num_steps` steps of `model`, validated."""
  config = quickstart.get_config(f'model={model}')
  config.optim.num_steps = num_steps
  checks.validate(config, num_devices)
  return config


def digits_shaped(config, num_devices: int) -> synthetic.SyntheticDatasets:
  """Synthetic data of the quickstart's shapes (its 297 test images in
  whole batches)."""
  batch = config.optim.batch_size
  return synthetic.SyntheticDatasets(
      10,
      IMAGE_SHAPE,
      batch,
      STEPS_PER_EPOCH,
      num_devices,
      eval_examples=297 // batch * batch,
  )


def make_loop(config, datasets, workdir: epath.Path) -> loop.Loop:
  """A loop from step 0 writing metrics.jsonl and checkpoints in workdir."""
  setup = loop.prepare(config, datasets)
  state = state_lib.create_train_state(
      setup.model,
      datasets.image_shape,
      setup.abstract_state.tx,
      config.seed,
      setup.sam.method.init,
  )
  return loop.Loop(
      config,
      workdir,
      setup,
      checkpoints.create_manager(workdir, 2),
      state,
      0,
      {'wall_time_s': 0.0},
      metrics_file.JsonLinesWriter(workdir / metrics_file.METRICS_FILE),
  )


def train_program(the_loop: loop.Loop):
  """The loop's compiled train step (every step's, for a method without a
  schedule)."""
  return the_loop.programs.by_choice[None]


def _warm_up(the_loop: loop.Loop, datasets):
  """Compiles the train and eval steps before the loop, on a state of
  their own; returns (that state, a device batch)."""
  batch = state_lib.shard(next(datasets.train_batches(0, 1)), the_loop.mesh)
  state = jax.tree.map(jnp.copy, the_loop.state)
  state, _ = step_time.time_steps(train_program(the_loop), state, batch, 1)
  loop.evaluate(the_loop.p_eval, the_loop.state, datasets)
  return state, batch


class _Rounds:
  """Rounds of the loop's step back to back on a state of their own: one
  before the loop and one after each log, each taken out of the loop's own
  clock, so that the loop's segments and the rounds alternate in time and a
  change in the machine's load hits both."""

  def __init__(self, the_loop: loop.Loop, state, batch, steps: int):
    self.the_loop, self.batch, self.steps = the_loop, batch, steps
    self.state = state
    self.step_s, self.cpu_s = [], 0.0
    self._log = the_loop._log  # pylint: disable=protected-access
    the_loop._log = self._log_then_round  # pylint: disable=protected-access

  def round(self) -> float:
    """Times one round; returns its wall seconds."""
    cpu, started = time.process_time(), time.perf_counter()
    self.state, per_step = step_time.time_steps(
        train_program(self.the_loop), self.state, self.batch, self.steps
    )
    self.step_s.append(per_step)
    self.cpu_s += time.process_time() - cpu
    return time.perf_counter() - started

  def _log_then_round(self, step: int) -> None:
    self._log(step)
    seconds = self.round()
    last_step, last_time = self.the_loop.last_log
    self.the_loop.last_log = (last_step, last_time + seconds)


def measure_loop(config, datasets) -> dict:
  """Steps/s of the real loop against the same step back to back, and the
  compilations inside the loop.

  The loop's rate is its own (steps_per_sec of each log, over the steps
  after the first); the step's, the mean of the rounds (`_Rounds`) of
  `run.log_every_steps` steps. The loop's time includes its evaluations
  and checkpoints.
  """
  total = config.optim.num_steps
  with tempfile.TemporaryDirectory(prefix='sam_loop_') as scratch:
    the_loop = make_loop(config, datasets, epath.Path(scratch))
    state, batch = _warm_up(the_loop, datasets)
    rounds = _Rounds(the_loop, state, batch, config.run.log_every_steps)
    rounds.round()
    compiled, cpu, outside = _compilations[0], time.process_time(), rounds.cpu_s
    the_loop.run_steps()
    inside = rounds.cpu_s - outside
    loop_cpu = (time.process_time() - cpu - inside) / total
    compilations = _compilations[0] - compiled
    checkpointed = checkpoints.create_manager(scratch, 2).all_steps()
    records = metrics_file.read_metrics(scratch)
  first_step = the_loop.first_step_done[0]
  segments, last = [], first_step
  for r in records:
    if 'steps_per_sec' in r:
      segments.append((r['step'] - last, r['steps_per_sec']))
      last = r['step']
  loop_rate = sum(n for n, _ in segments) / sum(n / v for n, v in segments)
  step_rate = 1 / statistics.mean(rounds.step_s)
  # Each segment against the rounds just before and just after it.
  paired = [
      rate * (before + after) / 2
      for (_, rate), before, after in zip(
          segments, rounds.step_s, rounds.step_s[1:]
      )
  ]
  step_cpu = rounds.cpu_s / (len(rounds.step_s) * rounds.steps)
  return {
      'steps': total,
      'checkpointed_steps': list(checkpointed),
      'loop_steps_per_s': loop_rate,
      'step_steps_per_s': step_rate,
      'loop_over_step': loop_rate / step_rate,
      'loop_segments': [
          {'steps': n, 'steps_per_s': v, 'over_step': p}
          for (n, v), p in zip(segments, paired)
      ],
      'step_s_rounds': rounds.step_s,
      'loop_over_step_median_segment': statistics.median(paired),
      'loop_cpu_s_per_step': loop_cpu,
      'step_cpu_s_per_step': step_cpu,
      'loop_over_step_cpu': step_cpu / loop_cpu,
      'compilations_in_loop': compilations,
  }


def _timed(the_loop: loop.Loop, name: str, record: list) -> None:
  """Times the loop's `name` method after the steps in flight finish."""
  method = getattr(the_loop, name)

  def run(step, *args):
    jax.block_until_ready(the_loop.state)
    compiled = _compilations[0]
    started, cpu = time.perf_counter(), time.process_time()
    method(step, *args)
    record.append(
        {
            'step': step,
            's': time.perf_counter() - started,
            'cpu_s': time.process_time() - cpu,
            'compilations': _compilations[0] - compiled,
        }
    )

  setattr(the_loop, name, run)


def measure_events(config, datasets) -> dict:
  """Each log's, evaluation's and checkpoint's host time in a real run."""
  records = {name: [] for name in EVENTS}
  with tempfile.TemporaryDirectory(prefix='sam_events_') as scratch:
    the_loop = make_loop(config, datasets, epath.Path(scratch))
    _warm_up(the_loop, datasets)
    for name in EVENTS:
      _timed(the_loop, name, records[name])
    compiled = _compilations[0]
    the_loop.run_steps()
    compilations = _compilations[0] - compiled
  result = {'compilations_in_loop': compilations}
  for name, timed in records.items():
    key = name.strip('_')
    rest = timed[1:] if key == 'log' else timed
    result[key] = {
        'each': timed,
        'median_s': statistics.median(t['s'] for t in rest),
        'min_s': min(t['s'] for t in rest),
        'median_cpu_s': statistics.median(t['cpu_s'] for t in rest),
    }
  result['log']['first_s'] = records['_log'][0]['s']
  return result


def main(argv):
  del argv
  f = flags.FLAGS
  devices = jax.local_devices()
  config = quickstart_config(f.steps, len(devices), f.model)
  datasets = digits_shaped(config, len(devices))
  record = {
      'platform': devices[0].platform,
      'num_devices': len(devices),
      'jax_version': jax.__version__,
      'model': f.model,
      'batch': config.optim.batch_size,
      'load_before': os.getloadavg()[0],
      'loop': measure_loop(config, datasets),
      'events': measure_events(config, datasets),
      'load_after': os.getloadavg()[0],
  }
  events, run = record['events'], record['loop']
  print(
      f'loop/step {run["loop_over_step"]:.3f} ({run["loop_steps_per_s"]:.2f}'
      f' / {run["step_steps_per_s"]:.2f} steps/s; in CPU time '
      f'{run["loop_over_step_cpu"]:.3f}; median segment '
      f'{run["loop_over_step_median_segment"]:.3f}), '
      f'{run["compilations_in_loop"]} compilations in the loop; log '
      f'{1e3 * events["log"]["median_s"]:.1f} ms (min '
      f'{1e3 * events["log"]["min_s"]:.1f}, CPU '
      f'{1e3 * events["log"]["median_cpu_s"]:.1f}, first '
      f'{1e3 * events["log"]["first_s"]:.1f} ms), evaluation '
      f'{1e3 * events["evaluate"]["median_s"]:.1f} ms, checkpoint '
      f'{1e3 * events["checkpoint"]["median_s"]:.1f} ms',
      flush=True,
  )
  if f.output_json:
    epath.Path(f.output_json).write_text(json.dumps(record, indent=2))


if __name__ == '__main__':
  # Here, not at import: benchmarks/accelerator.py has flags of its own.
  flags.DEFINE_integer('steps', 300, 'Steps of each run.')
  flags.DEFINE_string('model', 'wrn10_2', 'The quickstart model knob.')
  flags.DEFINE_string('output_json', '', 'Also write the record here.')
  app.run(main)
