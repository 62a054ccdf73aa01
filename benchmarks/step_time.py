"""Step time of SGD, SAM and the SAM variants: the real train step, one process.

Every variant is the pmapped `sam.run.step.train_step` that training runs,
built from the same model, batch and config (configs/smoke.py with the model
and batch set) with a few fields changed.
After a compiling warm-up step each, the variants are timed interleaved
(round-robin, so a change in machine load hits all of them alike); after
every round the median so far is printed with images/s and the ratios to SGD
and to plain SAM. The default is one device: pmap over a single device compiles to
the single-device program jit would (no collective is emitted for an axis of
size 1); --devices=N maps over N local devices.

  python -m benchmarks.step_time --model=wrn16_4 --batch=128 --image_size=32 \
      --variants=sgd,sam,p_inf,k2,second_order,asam,m32,bf16,accum2 \
      --steps=1 --repeats=3

Variant names: a sam.methods name (sgd, sam, random, second_order, ...),
p_inf, p<float>, k<N> (N ascent steps), asam, m<N> (m-sharpness; m<N>_vmap:
the groups vmapped), sync, bf16, accum<N> (accumulation).
"""

from concurrent import futures
import json
import math
import os
import re
import statistics
import time

from absl import app
from absl import flags
from etils import epath
import jax
import numpy as np
import optax

from configs import smoke
import models
from sam import methods
from sam import optim
from sam.run import checks
from sam.run import state as state_lib
from sam.run import step as step_lib

FIXED_VARIANTS = {
    'p_inf': {'sam.p': math.inf},
    'asam': {'sam.adaptive': True, 'sam.rho': 0.5},
    'sync': {'sam.sync_perturbation': True},
    'bf16': {'model.dtype': 'bfloat16'},
}
PATTERNS = (
    (r'k(\d+)', lambda n: {'sam.ascent_steps': int(n)}),
    (r'm(\d+)', lambda n: {'sam.m': int(n)}),
    (r'm(\d+)_vmap', lambda n: {'sam.m': int(n), 'sam.m_groups': 'vmap'}),
    (r'accum(\d+)', lambda n: {'optim.accumulation_steps': int(n)}),
    (r'p([\d.]+)', lambda p: {'sam.p': float(p)}),
)


def variant_overrides(name: str) -> dict:
  """Config field -> value for a variant name (see the module doc)."""
  if name in methods.METHODS:
    return {'sam.method': name}
  if name in FIXED_VARIANTS:
    return FIXED_VARIANTS[name]
  for pattern, overrides in PATTERNS:
    match = re.fullmatch(pattern, name)
    if match:
      return overrides(match.group(1))
  raise ValueError(
      f'unknown variant {name!r}; valid: '
      f'{sorted(methods.METHODS) + sorted(FIXED_VARIANTS)} or '
      'k<N>, m<N>, accum<N>, p<float>'
  )


def variant_config(name: str, model: str, batch: int, num_devices: int):
  """configs/smoke.py with the model, batch and variant's fields, validated."""
  config = smoke.get_config()
  config.model.name = model
  config.optim.batch_size = batch
  for field, value in variant_overrides(name).items():
    section, leaf = field.split('.')
    config[section][leaf] = value
  checks.validate(config, num_devices)
  return config


def build_step(config, image_size: int, num_classes: int, devices):
  """(pmapped step, replicated initial state) for a config."""
  model = models.create_model(
      config.model.name, num_classes, config.model.dtype
  )
  schedule = optax.constant_schedule(0.1)
  tx = optim.create_optimizer(config.optim, schedule)
  sam = methods.create(
      config.sam, learning_rate=schedule, num_steps=1000, seed=config.seed
  )
  state = state_lib.create_train_state(
      model,
      (image_size, image_size, 3),
      tx,
      config.seed,
      sam.method.init,
  )
  step = jax.pmap(
      step_lib.make_train_step(config, model, num_classes, len(devices), sam),
      axis_name=step_lib.AXIS,
      devices=devices,
      donate_argnums=(0,),
  )
  return step, state_lib.replicate(state, state_lib.device_mesh(devices))


def make_batch(batch: int, image_size: int, num_classes: int, devices):
  """A random batch, placed on the devices as training places its own."""
  rng = np.random.default_rng(0)
  n = len(devices)
  host = {
      'image': rng.normal(
          size=(n, batch // n, image_size, image_size, 3)
      ).astype(np.float32),
      'label': rng.integers(0, num_classes, (n, batch // n)).astype(np.int32),
  }
  return state_lib.shard(host, state_lib.device_mesh(devices))


def time_steps(step, state, batch, num_steps: int):
  """(new state, seconds per step over num_steps steps)."""
  started = time.perf_counter()
  for _ in range(num_steps):
    state, metrics = step(state, batch)
  jax.block_until_ready((state, metrics))
  return state, (time.perf_counter() - started) / num_steps


def define_step_flags() -> None:
  """The model, batch and variant flags shared with `python -m
  benchmarks`."""
  flags.DEFINE_string('model', 'wrn16_4', 'A models.MODELS name.')
  flags.DEFINE_integer('batch', 128, 'Global batch.')
  flags.DEFINE_integer('image_size', 32, 'Image side.')
  flags.DEFINE_integer('num_classes', 10, 'Classes of the head.')
  flags.DEFINE_list(
      'variants',
      [
          'sgd',
          'sam',
          'p_inf',
          'k2',
          'second_order',
          'asam',
          'm32',
          'bf16',
          'accum2',
      ],
      'Variant names (module doc).',
  )
  flags.DEFINE_integer('steps', 1, 'Timed steps per repeat.')
  flags.DEFINE_integer('repeats', 3, 'Timed rounds.')


def warm_up(name: str, devices):
  """[step, state, batch] of a variant after its compiling first step."""
  f = flags.FLAGS
  config = variant_config(name, f.model, f.batch, len(devices))
  step, state = build_step(config, f.image_size, f.num_classes, devices)
  batch = make_batch(f.batch, f.image_size, f.num_classes, devices)
  started = time.perf_counter()
  state, _ = time_steps(step, state, batch, 1)  # Compiles.
  print(
      f'  {name}: compile + first step {time.perf_counter() - started:.1f}'
      f' s',
      flush=True,
  )
  return [step, state, batch]


def main(argv):
  del argv
  f = flags.FLAGS
  devices = jax.local_devices()[: f.devices]
  names = f.variants
  print(
      f'{f.model}, batch {f.batch}, {f.image_size}x{f.image_size}, '
      f'{len(devices)} {devices[0].platform} device(s), {os.cpu_count()} '
      f'cores, load {os.getloadavg()[0]:.1f}',
      flush=True,
  )
  # XLA compiles outside the GIL: a few variants compile side by side.
  with futures.ThreadPoolExecutor(f.compile_threads) as pool:
    built = dict(zip(names, pool.map(lambda n: warm_up(n, devices), names)))
  seconds = {name: [] for name in names}
  for repeat in range(f.repeats):
    for name in names:
      step, state, batch = built[name]
      built[name][1], per_step = time_steps(step, state, batch, f.steps)
      seconds[name].append(per_step)
    print_table(f.batch, f.steps, names, seconds, repeat + 1)
    if f.output_json:  # After every round: an interrupted run keeps its own.
      write_json(f.output_json, names, seconds)


def write_json(path: str, names, seconds) -> None:
  """Every variant's per-step seconds of each round, median and ratios."""
  median = {name: statistics.median(seconds[name]) for name in names}
  sgd, sam = median.get('sgd'), median.get('sam')
  f = flags.FLAGS
  record = {
      'model': f.model,
      'batch': f.batch,
      'image_size': f.image_size,
      'steps_per_round': f.steps,
      'platform': jax.local_devices()[0].platform,
      'variants': {
          name: {
              'seconds_per_step': seconds[name],
              'median_s': median[name],
              'x_sgd': median[name] / sgd if sgd else None,
              'x_sam': median[name] / sam if sam else None,
          }
          for name in names
      },
  }
  epath.Path(path).write_text(json.dumps(record, indent=2))


def print_table(batch, steps, names, seconds, repeats_done):
  """The median over the repeats so far, with ratios to SGD and SAM."""
  median = {name: statistics.median(seconds[name]) for name in names}
  sgd, sam = median.get('sgd'), median.get('sam')
  print(
      f'\nmedian of {repeats_done} x {steps} step(s); load '
      f'{os.getloadavg()[0]:.1f}',
      flush=True,
  )
  print(
      f'{"variant":<14}{"ms/step":>10}{"images/s":>10}{"x SGD":>8}'
      f'{"x SAM":>8}'
  )
  for name in names:
    ratio_sgd = f'{median[name] / sgd:8.2f}' if sgd else f'{"-":>8}'
    ratio_sam = f'{median[name] / sam:8.2f}' if sam else f'{"-":>8}'
    print(
        f'{name:<14}{1e3 * median[name]:10.0f}'
        f'{batch / median[name]:10.1f}{ratio_sgd}{ratio_sam}',
        flush=True,
    )


if __name__ == '__main__':
  define_step_flags()
  flags.DEFINE_integer('devices', 1, 'Local devices to map over.')
  flags.DEFINE_integer('compile_threads', 3, 'Variants compiled at once.')
  flags.DEFINE_string('output_json', '', 'Also write the medians here.')
  app.run(main)
