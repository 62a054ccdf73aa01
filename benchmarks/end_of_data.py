"""End of the training data: do the last steps of a run stall?

  python -m benchmarks.end_of_data --runs=10 \
    --roots=/work/stall_before,/work/main --output=/tmp/end_of_data.json
  python -m benchmarks.end_of_data --reanalyse=/tmp/end_of_data.json
  python -m benchmarks.end_of_data --pipeline=streaming --runs=3 \
    --roots=/work/stall_before,/work/main

(results/benchmarks/end_of_data.md has the figures.) --pipeline=quickstart,
the default, runs train.py on the quickstart (configs/quickstart.py,
WRN-10-2 on the digits, 2 fake CPU devices) `--runs` times for each code
root in `--roots`, in interleaved rounds (the roots' order alternates round
by round), so the load of a shared host hits every root alike. Each run
logs every `--log_every_steps` steps; metrics.jsonl's `steps_per_sec` gives
the wall time of each logged stretch. Per run it reports the wall time of
the last `--last_steps` steps and of the last logged stretch (the end of the
training data: the input pipeline's iterator runs out and is destroyed
there), each against the median of the earlier windows as long that hold no
evaluation or checkpoint; a run stalls when the first exceeds
`--stall_ratio` times the second.

--pipeline=streaming times data/streaming.py, which makes one tf.data
iterator per epoch and destroys it at the epoch's end: it prepares a tfds
dataset of `--records` small JPEGs, and for each root a subprocess (this
file run with PYTHONPATH set to the root) iterates `train_batches` over
`--epochs` epochs at batch `--batch`, keeping the cores busy with matrix
products for `--step_s` after each batch, as a training step on the host's
CPU would. It reports the time of each epoch's first `next()` (the old
iterator's destruction, the new one's start and shuffle-buffer fill) and of
the last one, which ends the data, against the median `next()`.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow_datasets as tfds

from configs import base
from data import streaming

flags.DEFINE_enum('pipeline', 'quickstart', ['quickstart', 'streaming'], '')
flags.DEFINE_integer('runs', 10, 'Runs per code root.')
flags.DEFINE_list(
    'roots',
    [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))],
    'Repository roots to compare (train.py is run from each, with PYTHONPATH '
    'set to it).',
)
flags.DEFINE_string('config', 'configs/quickstart.py', 'train.py --config.')
flags.DEFINE_list('overrides', [], 'Extra train.py arguments.')
flags.DEFINE_integer('log_every_steps', 5, 'config.run.log_every_steps.')
flags.DEFINE_integer('last_steps', 40, 'K: the stretch timed at the end.')
flags.DEFINE_float(
    'stall_ratio', 3.0, 'Stall: last K steps > this x the median K steps.'
)
flags.DEFINE_string('output', '', 'If set, a JSON file of every run.')
flags.DEFINE_integer(
    'run_timeout_s',
    1200,
    'A run still going after this is killed, counted as failed.',
)
flags.DEFINE_string(
    'keep_workdirs', '', "If set, the runs' workdirs go there and are kept."
)
flags.DEFINE_integer('records', 4000, 'Streaming: training records.')
flags.DEFINE_integer('batch', 16, 'Streaming: global batch.')
flags.DEFINE_integer('epochs', 4, 'Streaming: epochs iterated.')
flags.DEFINE_float('step_s', 0.08, 'Streaming: busy seconds per step.')
flags.DEFINE_integer(
    'shuffle_buffer', 0, 'Streaming: config.data.shuffle_buffer_examples.'
)
flags.DEFINE_string('child_data_dir', '', 'Internal: run one streaming child.')
flags.DEFINE_string(
    'reanalyse',
    '',
    'A JSON file --output wrote (its workdirs kept): prints its table again, '
    'from the workdirs, with the current analysis flags.',
)

# The quickstart's command line (README.md).
XLA_FLAGS = (
    '--xla_force_host_platform_device_count=2 '
    '--xla_cpu_collective_call_terminate_timeout_seconds=3600'
)


def step_seconds(records: list[dict], checkpoint_every: int) -> dict:
  """Per-step wall time from metrics.jsonl records.

  Args:
    records: the run's metrics.jsonl records.
    checkpoint_every: config.run.checkpoint_every_steps.

  Returns:
    {'seconds': step -> seconds (a logged stretch's time spread evenly over
    its steps), 'unclean': steps in a stretch that also evaluated or
    checkpointed (those happen after the log of the stretch's first step),
    'total': the last step}.
  """
  evals = {r['step'] for r in records if 'test_error' in r}
  logs = sorted(
      (r['step'], r['steps_per_sec']) for r in records if 'steps_per_sec' in r
  )
  seconds, unclean = {}, set()
  # The loop times from the end of step 1 (the compiling step); the first
  # stretch is still left out, as the one after each evaluation and
  # checkpoint.
  previous = 1
  for step, per_sec in logs:
    dirty = (
        previous == 1 or previous in evals or previous % checkpoint_every == 0
    )
    for s in range(previous + 1, step + 1):
      seconds[s] = 1.0 / per_sec
      if dirty:
        unclean.add(s)
    previous = step
  return {'seconds': seconds, 'unclean': unclean, 'total': previous}


def stretches(timing: dict, k: int) -> tuple[float, list[float]]:
  """The last k steps' time and that of the earlier clean k-step windows.

  Args:
    timing: what `step_seconds` returns.
    k: steps per window.

  Returns:
    (seconds of the last k steps, seconds of each earlier window with no
    unclean step, the windows ending at total - k, total - 2k, ...).
  """
  seconds, unclean, total = (
      timing['seconds'],
      timing['unclean'],
      timing['total'],
  )
  last = sum(seconds[s] for s in range(total - k + 1, total + 1))
  others = []
  end = total - k
  while end - k >= 1:
    window = range(end - k + 1, end + 1)
    if all(s in seconds and s not in unclean for s in window):
      others.append(sum(seconds[s] for s in window))
    end -= k
  return last, others


def run_once(root: str, workdir: str) -> dict:
  """One train.py run from `root`; its end-of-data timing.

  Args:
    root: repository root to run.
    workdir: a fresh workdir.

  Returns:
    {'last_s', 'median_s', 'worst_other_s', 'ratio', 'steps', 'wall_s',
    'load'}.
  """
  f = flags.FLAGS
  env = {**os.environ, 'XLA_FLAGS': XLA_FLAGS, 'PYTHONPATH': root}
  load = os.getloadavg()[0]
  started = time.time()
  try:
    subprocess.run(
        [
            sys.executable,
            'train.py',
            f'--config={f.config}',
            f'--workdir={workdir}',
            f'--config.run.log_every_steps={f.log_every_steps}',
            *f.overrides,
        ],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
        timeout=f.run_timeout_s,
    )
  except subprocess.TimeoutExpired:
    return {'wall_s': time.time() - started, 'load': load, 'failed': 'timeout'}
  except subprocess.CalledProcessError as e:
    error = e.stderr.decode(errors='replace').strip().splitlines()[-1:]
    return {
        'wall_s': time.time() - started,
        'load': load,
        'failed': f'exit {e.returncode}: {error}',
    }
  return {'wall_s': time.time() - started, 'load': load, **analyse(workdir)}


def analyse(workdir: str) -> dict:
  """The end-of-data timing of a finished run's workdir.

  Args:
    workdir: the run's workdir.

  Returns:
    {'last_s': the last K steps, 'median_s' and 'worst_other_s': of the
    earlier clean K-step windows, 'ratio': last_s / median_s, 'stall':
    ratio > --stall_ratio, 'final_log_s': the last logged stretch (it holds
    the end of the data), 'median_log_s' and 'worst_other_log_s': of the
    earlier clean logged stretches, 'final_ratio', 'final_stall': the same
    test on them, 'steps'}.
  """
  f = flags.FLAGS
  with open(os.path.join(workdir, 'metrics.jsonl')) as lines:
    records = [json.loads(line) for line in lines if line.strip()]
  with open(os.path.join(workdir, 'config.json')) as file:
    checkpoint_every = json.load(file)['run']['checkpoint_every_steps']
  timing = step_seconds(records, checkpoint_every)
  last, others = stretches(timing, f.last_steps)
  median = statistics.median(others)
  final_log, log_others = stretches(timing, f.log_every_steps)
  median_log = statistics.median(log_others)
  return {
      'last_s': last,
      'median_s': median,
      'worst_other_s': max(others),
      'ratio': last / median,
      'stall': last / median > f.stall_ratio,
      'final_log_s': final_log,
      'median_log_s': median_log,
      'worst_other_log_s': max(log_others),
      'final_ratio': final_log / median_log,
      'final_stall': final_log / median_log > f.stall_ratio,
      'steps': timing['total'],
  }


def _print_row(i: int, r: dict) -> None:
  if 'failed' in r:
    print(
        f'| {i} | {r["root"]} | failed ({r["failed"]}) after '
        f'{r["wall_s"]:.0f} s |',
        flush=True,
    )
    return
  print(
      f'| {i} | {r["root"]} | {r["last_s"]:.2f} | {r["median_s"]:.2f} | '
      f'{r["worst_other_s"]:.2f} | {r["ratio"]:.2f} | '
      f'{"yes" if r["stall"] else "no"} | {r["final_log_s"]:.2f} | '
      f'{r["median_log_s"]:.2f} | {r["worst_other_log_s"]:.2f} | '
      f'{r["final_ratio"]:.2f} | {"yes" if r["final_stall"] else "no"} | '
      f'{r["wall_s"]:.0f} | {r["load"]:.1f} |',
      flush=True,
  )


def _print_summary(results: dict) -> None:
  k = flags.FLAGS.last_steps
  for root, runs in results.items():
    done = [r for r in runs if 'failed' not in r]
    stalls = sum(r['stall'] for r in done)
    final_stalls = sum(r['final_stall'] for r in done)
    last = statistics.median(r['last_s'] for r in done)
    normal = statistics.median(r['median_s'] for r in done)
    print(
        f'{root}: {len(done)} runs ({len(runs) - len(done)} failed); '
        f'stalled: {stalls} over the last {k} steps, {final_stalls} over the '
        f'last {flags.FLAGS.log_every_steps}; median last {k} steps '
        f'{last:.2f} s, median normal {normal:.2f} s'
    )


def _print_header() -> None:
  f = flags.FLAGS
  print(
      f'| round | root | last {f.last_steps} steps (s) | median '
      f'{f.last_steps} steps (s) | worst other (s) | ratio | stall | '
      f'last {f.log_every_steps} steps (s) | median {f.log_every_steps} '
      'steps (s) | worst other (s) | ratio | stall | wall (s) | load |'
  )
  print('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')


def _quickstart_main():
  """Runs and reports the quickstart comparison."""
  f = flags.FLAGS
  results = {root: [] for root in f.roots}
  _print_header()
  with tempfile.TemporaryDirectory(prefix='sam_end_of_data_') as scratch:
    scratch = f.keep_workdirs or scratch
    for i in range(f.runs):
      order = f.roots if i % 2 == 0 else f.roots[::-1]
      for root in order:
        workdir = os.path.join(scratch, f'run{i}_root{f.roots.index(root)}')
        r = {'round': i, 'root': root, 'workdir': workdir}
        r.update(run_once(root, workdir))
        results[root].append(r)
        _print_row(i, r)
  _print_summary(results)
  if f.output:
    with open(f.output, 'w') as file:
      json.dump(results, file, indent=2)


class EndOfDataPictures(tfds.core.GeneratorBasedBuilder):
  """Small JPEGs of random pixels, 24-40 a side, for the streaming timing."""

  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    # DatasetInfo itself: dataset_info_from_configs looks for metadata in
    # the builder's package, which __main__ is not.
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict(
            {
                'image': tfds.features.Image(
                    shape=(None, None, 3), encoding_format='jpeg'
                ),
                'label': tfds.features.ClassLabel(num_classes=10),
            }
        ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {
        'train': self._generate_examples(0, flags.FLAGS.records),
        'test': self._generate_examples(
            flags.FLAGS.records, flags.FLAGS.records + 10
        ),
    }

  def _generate_examples(self, first, end):
    rng = np.random.default_rng(first)
    for index in range(first, end):
      height, width = rng.integers(24, 41, 2)
      image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
      yield index, {'image': image, 'label': index % 10}


def streamed_next_seconds(data_dir: str) -> dict:
  """Times every `next()` of a streamed train_batches over the epochs.

  Args:
    data_dir: where EndOfDataPictures is prepared.

  Returns:
    {'seconds': the time of each next(), the last one the StopIteration,
    'steps_per_epoch'}.
  """
  f = flags.FLAGS
  config = base.base_config().data
  config.dataset = 'end_of_data_pictures'
  config.data_dir = data_dir
  config.image_size = 32
  config.shuffle_buffer_examples = f.shuffle_buffer
  datasets = streaming.create_streamed_datasets(
      config, batch_size=f.batch, eval_batch_size=f.batch, seed=0
  )
  steps_per_epoch = datasets.steps_per_epoch
  batches = datasets.train_batches(0, f.epochs * steps_per_epoch)
  matrix = np.ones((256, 256), np.float32)
  seconds = []
  while True:
    started = time.perf_counter()
    try:
      next(batches)
    except StopIteration:
      seconds.append(time.perf_counter() - started)
      break
    seconds.append(time.perf_counter() - started)
    busy_until = time.perf_counter() + f.step_s
    while time.perf_counter() < busy_until:
      matrix = matrix @ matrix / 256.0
  return {'seconds': seconds, 'steps_per_epoch': steps_per_epoch}


def _streaming_main():
  """Runs and reports the streaming comparison, one child per root and
  round."""
  f = flags.FLAGS
  print(
      '| run | root | median next() (ms) | epoch starts (s) | end of data '
      '(s) | load |'
  )
  print('|---|---|---|---|---|---|')
  with tempfile.TemporaryDirectory(prefix='sam_end_of_data_') as data_dir:
    EndOfDataPictures(data_dir=data_dir).download_and_prepare()
    for i in range(f.runs):
      for root in f.roots if i % 2 == 0 else f.roots[::-1]:
        load = os.getloadavg()[0]
        out = subprocess.run(
            [
                sys.executable,
                os.path.abspath(__file__),
                f'--child_data_dir={data_dir}',
                f'--records={f.records}',
                f'--batch={f.batch}',
                f'--epochs={f.epochs}',
                f'--step_s={f.step_s}',
                f'--shuffle_buffer={f.shuffle_buffer}',
            ],
            cwd=root,
            env={**os.environ, 'PYTHONPATH': root},
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        timing = json.loads(out.strip().splitlines()[-1])
        seconds, per_epoch = timing['seconds'], timing['steps_per_epoch']
        starts = [seconds[e * per_epoch] for e in range(1, f.epochs)]
        inner = [t for n, t in enumerate(seconds[:-1]) if n % per_epoch]
        print(
            f'| {i} | {root} | {1000 * statistics.median(inner):.1f} | '
            f'{", ".join(f"{t:.2f}" for t in starts)} | {seconds[-1]:.2f} | '
            f'{load:.1f} |',
            flush=True,
        )


def _reanalyse(path: str) -> None:
  """Prints the table of a finished quickstart comparison again."""
  with open(path) as file:
    results = json.load(file)
  _print_header()
  rows = [r for runs in results.values() for r in runs]
  for r in sorted(rows, key=lambda r: r['workdir']):
    if 'failed' not in r:
      r.update(analyse(r['workdir']))
    _print_row(int(r['workdir'].rsplit('run', 1)[1].split('_')[0]), r)
  _print_summary(results)


def main(argv):
  del argv
  f = flags.FLAGS
  if f.reanalyse:
    _reanalyse(f.reanalyse)
  elif f.child_data_dir:
    print(json.dumps(streamed_next_seconds(f.child_data_dir)))
  elif f.pipeline == 'streaming':
    _streaming_main()
  else:
    _quickstart_main()


if __name__ == '__main__':
  app.run(main)
