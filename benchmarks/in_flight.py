"""How far ahead may the host run? XLA:CPU's deadlock at 32 in flight.

  python -m benchmarks.in_flight --runs=10 --limits=0,4,8,12,28,40 \
    --runs_json=/tmp/in_flight.json

(results/benchmarks/in_flight.md has the figures.) Each run is a fresh
process on 2 fake CPU devices (the quickstart's XLA flags) that dispatches
`--calls` calls of a small pmapped step whose gradient is averaged across
the devices (`lax.pmean`), reading one value back every `--read_every`
steps, as the loop does at a log. With `limit` > 0 the host keeps at most
that many steps unfinished through `sam.run.state.InFlight`, the bound the
training loop and the evaluation use; 0 leaves it unbounded, as the loop was
before. `--hogs` busy processes share the cores meanwhile: the deadlock
needs a starved host. A run hangs when no read comes back for `--hang_s`;
its child prints the Python stacks and exits.

The step is small on purpose: the host outruns the devices by hundreds of
steps, so every launch meets XLA:CPU's limit of 32 computations in flight
per device, where the deadlock lives. A training step is slower, so the
quickstart met it far more rarely (4 of 41 runs in
results/benchmarks/end_of_data.md).
"""

import collections
import faulthandler
import json
import os
import statistics
import subprocess
import sys
import threading
import time

from absl import app
from absl import flags
import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import numpy as np

from sam.run import distributed
from sam.run import state as state_lib

flags.DEFINE_integer('runs', 10, 'Runs per limit.')
flags.DEFINE_list('limits', ['0', '8', '40'], 'Steps in flight; 0: no bound.')
flags.DEFINE_integer('calls', 20000, 'Steps dispatched per run.')
flags.DEFINE_integer('width', 64, 'The step: a [width, width] weight.')
flags.DEFINE_integer('read_every', 200, 'Steps between reads.')
flags.DEFINE_integer('hogs', 2, 'Busy processes beside the runs.')
flags.DEFINE_float('hang_s', 60.0, 'No read for this long: a hang.')
flags.DEFINE_float('run_timeout_s', 300.0, 'A run is killed after this.')
flags.DEFINE_string('runs_json', '', 'If set, a JSON file of every run.')
flags.DEFINE_integer('child_limit', -1, 'Internal: run one child.')

FLAGS = flags.FLAGS
DEVICES = 2
HUNG = 3  # The child's exit status when its watchdog fires.
# The flags a results file records.
SETTINGS = ('runs', 'limits', 'calls', 'width', 'read_every', 'hogs', 'hang_s')


def child(limit: int) -> None:
  """One run in this process, on the fake devices its parent's XLA_FLAGS
  give it (jax reads them when it first starts a backend, here).

  Args:
    limit: steps in flight (0: unbounded).
  """

  def step(w, x):
    grad = jax.lax.pmean(jax.numpy.tanh(x @ w).T @ x, 'i').T
    return w - 1e-3 * grad, jax.lax.pmean(jax.numpy.sum(x @ w), 'i')

  p_step = jax.pmap(step, axis_name='i')
  sharding = NamedSharding(
      Mesh(np.asarray(jax.devices()), ('i',)), PartitionSpec('i')
  )
  size = FLAGS.width
  w = jax.device_put(np.zeros((DEVICES, size, size), np.float32), sharding)
  x = np.random.default_rng(0).normal(size=(DEVICES, 16, size))
  x = x.astype(np.float32)
  in_flight = state_lib.InFlight(limit) if limit else None
  last_read = [time.time()]

  def watchdog():
    while time.time() - last_read[0] < FLAGS.hang_s:
      time.sleep(1)
    faulthandler.dump_traceback()
    os._exit(HUNG)  # pylint: disable=protected-access

  threading.Thread(target=watchdog, daemon=True).start()
  for i in range(FLAGS.calls):
    w, metric = p_step(w, jax.device_put(x, sharding))
    if in_flight is not None:
      in_flight.add(metric)
    if i % FLAGS.read_every == 0:
      jax.device_get(metric)
      last_read[0] = time.time()
  jax.device_get(w)


def run_once(limit: int) -> dict:
  """One child process; its outcome and wall time."""
  env = {**os.environ, 'XLA_FLAGS': distributed.cpu_devices_xla_flags(DEVICES)}
  argv = [
      sys.executable,
      '-m',
      'benchmarks.in_flight',
      f'--child_limit={limit}',
  ]
  argv += [
      f'--{name}={FLAGS[name].value}'
      for name in ('calls', 'width', 'read_every', 'hang_s')
  ]
  start = time.time()
  try:
    done = subprocess.run(
        argv,
        env=env,
        capture_output=True,
        text=True,
        timeout=FLAGS.run_timeout_s,
    )
    outcome = {0: 'finished', HUNG: 'hung'}.get(
        done.returncode, f'exit {done.returncode}'
    )
  except subprocess.TimeoutExpired:
    outcome = 'timed out'
  return {'limit': limit, 'outcome': outcome, 'wall_s': time.time() - start}


def summarize(runs: list[dict]) -> dict[int, dict]:
  """Per limit: runs, hangs and the median wall time of finished runs.

  Args:
    runs: run_once's records.

  Returns:
    limit -> {'runs', 'hung', 'median_finished_s'}.
  """
  by_limit = collections.defaultdict(list)
  for run in runs:
    by_limit[run['limit']].append(run)
  table = {}
  for limit, group in sorted(by_limit.items()):
    finished = [r['wall_s'] for r in group if r['outcome'] == 'finished']
    table[limit] = {
        'runs': len(group),
        'hung': sum(r['outcome'] != 'finished' for r in group),
        'median_finished_s': statistics.median(finished) if finished else None,
    }
  return table


def main(argv):
  del argv
  if FLAGS.child_limit >= 0:
    child(FLAGS.child_limit)
    return
  hogs = [
      subprocess.Popen([sys.executable, '-c', 'while 1: pass'])
      for _ in range(FLAGS.hogs)
  ]
  runs = []
  try:
    # Interleaved rounds: a change in the host's load hits every limit.
    for _ in range(FLAGS.runs):
      for limit in (int(x) for x in FLAGS.limits):
        runs.append(run_once(limit))
        print(json.dumps(runs[-1]), flush=True)
  finally:
    for hog in hogs:
      hog.kill()
  print('| steps in flight | runs | hung | median finished (s) |')
  print('|---|---|---|---|')
  for limit, row in summarize(runs).items():
    median = row['median_finished_s']
    print(
        f"| {limit or 'unbounded'} | {row['runs']} | {row['hung']} | "
        f"{'-' if median is None else f'{median:.1f}'} |"
    )
  if FLAGS.runs_json:
    with open(FLAGS.runs_json, 'w') as f:
      settings = {name: FLAGS[name].value for name in SETTINGS}
      json.dump({'flags': settings, 'runs': runs}, f, indent=1)


if __name__ == '__main__':
  app.run(main)
