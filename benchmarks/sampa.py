"""SAMPa's step time against SAM and SGD on 1, 2 and 4 fake CPU devices.

  python -m benchmarks.sampa --devices=1,2,4 --model=wrn10_2 --batch=128 \
      --image_size=32 --repeats=5
  git worktree add /tmp/sampa_before <commit>   # SAMPa's jax.vmap form
  python -m benchmarks.sampa --tree=/tmp/sampa_before --devices=1,2,4 ...

This process starts one child per device count, with XLA_FLAGS giving it
that many fake CPU devices (on an accelerator host it maps the first N of
the real ones), and the same global batch on each. A child
builds the real pmapped train step (`benchmarks.step_time.build_step`) of
SGD, SAM and SAMPa in the form the code picks ('sampa': two device groups on
an even device count, else two gradient calls), plus, on 2 or more devices,
SAMPa forced to the two sequential calls ('sampa_sequential'), and times them
in interleaved rounds, so that the ratios come from one process and a change
in the machine's load hits every variant alike. --tree runs the children on
another checkout's code (its `sam/`, `configs/`, `models/`,
`benchmarks/step_time.py`): there 'sampa' is that code's form and
'sampa_sequential' is not built.

Fake devices are threads sharing the host's cores: the figures say what a
form costs in work, not what it gains from parallel hardware. --passes
times, on this process's first device, the passes each form runs for a pair
of replicas (two weight sets on n examples each, against one `jax.vmap` pass
at one weight set over both replicas): on one accelerator it says whether
the device-group form can win there before any exchange.

  python -m benchmarks.sampa --passes --model=wrn10_2 --image_size=32
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
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import step_time
from configs import smoke
import models
from sam import losses
from sam.run import distributed

flags.DEFINE_list('devices', ['1', '2', '4'], 'Fake CPU device counts.')
flags.DEFINE_string('model', 'wrn10_2', 'A models.MODELS name.')
flags.DEFINE_integer('batch', 128, 'Global batch (replicas of 32).')
flags.DEFINE_integer('image_size', 32, 'Image side.')
flags.DEFINE_integer('num_classes', 10, 'Classes of the head.')
flags.DEFINE_integer('steps', 1, 'Timed steps per round.')
flags.DEFINE_integer('repeats', 5, 'Timed rounds.')
flags.DEFINE_string('tree', '', 'Run the children on this checkout.')
flags.DEFINE_string('output_json', '', 'Also write every figure here.')
flags.DEFINE_string('child_json', '', 'Internal: a child writes here.')
flags.DEFINE_integer('child_devices', 0, 'Internal: the devices a child maps.')
flags.DEFINE_bool('passes', False, 'Time the passes of a replica pair.')


def variants(num_devices: int, tree: str) -> list[str]:
  names = ['sgd', 'sam', 'sampa']
  if num_devices > 1 and not tree:
    names.append('sampa_sequential')
  return names


def warm_up(name: str, devices):
  """[step, state, batch, exchanges] after the compiling first step;
  exchanges: whether the step swaps results within device pairs."""
  f = flags.FLAGS
  method = 'sampa' if name == 'sampa_sequential' else name
  config = step_time.variant_config(method, f.model, f.batch, len(devices))
  if 'sampa_device_groups' in config.sam:  # Not in a --tree from before.
    groups = 'off' if name == 'sampa_sequential' else 'on'
    config.sam.sampa_device_groups = groups
  step, state = step_time.build_step(
      config, f.image_size, f.num_classes, devices
  )
  batch = step_time.make_batch(f.batch, f.image_size, f.num_classes, devices)
  started = time.perf_counter()
  exchanges = 'collective_permute' in step.lower(state, batch).as_text()
  state, _ = step_time.time_steps(step, state, batch, 1)  # Compiles.
  print(
      f'  {name}: compile + first step {time.perf_counter() - started:.1f} s'
      f', pair exchanges: {exchanges}',
      flush=True,
  )
  return [step, state, batch, exchanges]


def child() -> None:
  """Times this process's variants; writes {name: seconds per round}."""
  f = flags.FLAGS
  # All N fake CPU devices, or the first N of an accelerator host's.
  devices = jax.local_devices()[: f.child_devices]
  names = variants(len(devices), f.tree)
  built = {name: warm_up(name, devices) for name in names}
  seconds = {name: [] for name in names}
  loads = []
  for _ in range(f.repeats):
    for name in names:
      step, state, batch, _ = built[name]
      built[name][1], per_step = step_time.time_steps(
          step, state, batch, f.steps
      )
      seconds[name].append(per_step)
    loads.append(os.getloadavg()[0])
    step_time.print_table(f.batch, f.steps, names, seconds, len(loads))
  record = {
      'devices': len(devices),
      'seconds': seconds,
      'exchanges': {name: built[name][3] for name in names},
      'load': loads,
  }
  with open(f.child_json, 'w') as out:
    json.dump(record, out)


def run_child(num_devices: int, path: str) -> dict:
  """One child on `num_devices` fake CPU devices; its record."""
  f = flags.FLAGS
  tree = f.tree or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {
      **os.environ,
      'XLA_FLAGS': distributed.cpu_devices_xla_flags(num_devices),
      'PYTHONPATH': tree,
  }
  argv = [a for a in sys.argv[1:] if not a.startswith('--devices')]
  subprocess.run(
      [
          sys.executable,
          os.path.abspath(__file__),
          *argv,
          f'--child_json={path}',
          f'--child_devices={num_devices}',
      ],
      cwd=tree,
      env=env,
      check=True,
  )
  with open(path) as f_in:
    return json.load(f_in)


def summary(records: list[dict]) -> list[dict]:
  """Median seconds per step and the ratios to SGD and SAM, per child."""
  rows = []
  for record in records:
    median = {k: statistics.median(v) for k, v in record['seconds'].items()}
    for name, seconds in median.items():
      rows.append(
          {
              'devices': record['devices'],
              'variant': name,
              'median_s': seconds,
              'x_sgd': seconds / median['sgd'],
              'x_sam': seconds / median['sam'],
              'pair_exchanges': record['exchanges'][name],
              'load': [min(record['load']), max(record['load'])],
          }
      )
  return rows


def pass_functions(replica: int):
  """({name: jitted (at_a, at_b, both, keys) -> grads}, their arguments): a
  replica pair's passes in each form. The arrays are arguments, not
  constants that XLA would fold at compile time."""
  f = flags.FLAGS
  model = models.create_model(f.model, f.num_classes)
  image = (f.image_size, f.image_size, 3)
  variables = jax.jit(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, *image)), False)
  )()
  loss = losses.training_loss(model, smoke.get_config())
  stats = variables['batch_stats']
  rng = np.random.default_rng(0)
  both = {
      'image': jnp.asarray(rng.normal(size=(2, replica, *image)), jnp.float32),
      'label': jnp.asarray(rng.integers(0, f.num_classes, (2, replica))),
  }
  at_a = variables['params']
  arguments = (
      at_a,
      jax.tree.map(lambda w: w + 1e-3, at_a),
      both,
      jax.random.split(jax.random.key(1), 2),
  )
  grad = jax.grad(lambda p, e, k: loss(p, stats, e, k)[0])

  def sequential(at_a, at_b, both, keys):
    first = jax.tree.map(lambda x: x[0], both)
    return grad(at_a, first, keys[0]), grad(at_b, first, keys[0])

  def device_groups(at_a, at_b, both, keys):
    del at_b  # The partner device's.

    def pair_mean(p):
      values, _ = jax.vmap(lambda e, k: loss(p, stats, e, k))(both, keys)
      return jnp.mean(values)

    return jax.grad(pair_mean)(at_a)

  functions = {
      'two weight sets, n each (sequential)': jax.jit(sequential),
      'one vmap pass over 2 replicas (device groups)': jax.jit(device_groups),
  }
  return functions, arguments


def passes() -> None:
  """Times `pass_functions` interleaved and prints the medians."""
  f = flags.FLAGS
  functions, arguments = pass_functions(f.batch // 4)
  seconds = {name: [] for name in functions}
  for fn in functions.values():
    jax.block_until_ready(fn(*arguments))  # Compiles.
  for _ in range(f.repeats):
    for name, fn in functions.items():
      started = time.perf_counter()
      jax.block_until_ready(fn(*arguments))
      seconds[name].append(time.perf_counter() - started)
  first = statistics.median(next(iter(seconds.values())))
  print(f'{f.model}, replicas of {f.batch // 4}, {jax.devices()[0]}')
  for name, values in seconds.items():
    median = statistics.median(values)
    print(f'{name:<48}{median:8.4f} s{median / first:7.2f}x')


def main(argv):
  del argv
  f = flags.FLAGS
  if f.passes:
    passes()
    return
  if f.child_json:
    child()
    return
  records = []
  with tempfile.TemporaryDirectory() as folder:
    for count in f.devices:
      path = os.path.join(folder, f'{count}.json')
      records.append(run_child(int(count), path))
  rows = summary(records)
  print(
      f'\n{f.model}, batch {f.batch}, {f.image_size}x{f.image_size}, '
      f'tree {f.tree or "this checkout"}'
  )
  print('| devices | variant | s/step | x SGD | x SAM | pair exchanges |')
  print('|---|---|---|---|---|---|')
  for row in rows:
    print(
        f'| {row["devices"]} | {row["variant"]} | {row["median_s"]:.3f} | '
        f'{row["x_sgd"]:.2f} | {row["x_sam"]:.2f} | {row["pair_exchanges"]} |'
    )
  if f.output_json:
    with open(f.output_json, 'w') as out:
      json.dump({'flags': sys.argv[1:], 'rows': rows}, out, indent=2)


if __name__ == '__main__':
  app.run(main)
