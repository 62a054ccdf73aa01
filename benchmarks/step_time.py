"""Step time of SGD, SAM and the SAM variants: the real train step, one process.

Every variant is the pmapped `sam.steps.train_step` that training runs, built
from the same model, batch and base config with a few `sam.*` fields changed.
After a compiling warm-up step each, the variants are timed interleaved
(round-robin, so a change in machine load hits all of them alike); after
every round the median so far is printed with images/s and the ratios to SGD
and to plain SAM. The default is one device: pmap over a single device compiles to
the single-device program jit would (no collective is emitted for an axis of
size 1); --devices=N maps over N local devices.

  python -m benchmarks.step_time --model=wrn16_4 --batch=128 --image_size=32 \
      --variants=sgd,sam,p_inf,k2,second_order,asam,m32,bf16,accum2 \
      --steps=1 --repeats=3

Variant names: sgd, sam, p_inf, p<float>, random, k<N> (N ascent steps),
second_order, asam, m<N> (m-sharpness; m<N>_vmap: the groups vmapped),
sync, bf16, accum<N> (accumulation).
"""

import argparse
from concurrent import futures
import functools
import math
import os
import re
import statistics
import time

import jax
import numpy as np
import optax
from flax import jax_utils

import models
from configs import base
from sam import config_checks
from sam import optim
from sam import steps
from sam import training

FIXED_VARIANTS = {
    'sgd': {'optimizer': 'sgd'},
    'sam': {},
    'p_inf': {'sam.p': math.inf},
    'random': {'sam.perturbation': 'random'},
    'second_order': {'sam.second_order': True},
    'asam': {'sam.adaptive': True, 'sam.rho': 0.5},
    'sync': {'sam.sync_perturbation': True},
    'bf16': {'dtype': 'bfloat16'},
}
PATTERNS = (
    (r'k(\d+)', lambda n: {'sam.ascent_steps': int(n)}),
    (r'm(\d+)', lambda n: {'sam.m': int(n)}),
    (r'm(\d+)_vmap', lambda n: {'sam.m': int(n), 'sam.m_groups': 'vmap'}),
    (r'accum(\d+)', lambda n: {'accumulation_steps': int(n)}),
    (r'p([\d.]+)', lambda p: {'sam.p': float(p)}),
)


def variant_overrides(name: str) -> dict:
  """Config field -> value for a variant name (see the module doc)."""
  if name in FIXED_VARIANTS:
    return FIXED_VARIANTS[name]
  for pattern, overrides in PATTERNS:
    match = re.fullmatch(pattern, name)
    if match:
      return overrides(match.group(1))
  raise ValueError(f'unknown variant {name!r}; valid: {sorted(FIXED_VARIANTS)}'
                   ' or k<N>, m<N>, accum<N>, p<float>')


def variant_config(name: str, model: str, batch: int, num_devices: int):
  """The base config with the variant's fields, validated."""
  config = base.base_config()
  config.model = model
  config.batch_size = batch
  for field, value in variant_overrides(name).items():
    target = config
    *parents, leaf = field.split('.')
    for parent in parents:
      target = target[parent]
    target[leaf] = value
  config_checks.validate(config, num_devices)
  return config


def build_step(config, image_size: int, num_classes: int, devices):
  """(pmapped step, replicated initial state) for a config."""
  model = models.create_model(config.model, num_classes, config.dtype)
  tx = optim.create_optimizer(config, optax.constant_schedule(0.1))
  state = steps.create_train_state(model, (image_size, image_size, 3), tx,
                                   config.seed)
  step = jax.pmap(functools.partial(steps.train_step, model=model,
                                    config=config),
                  axis_name='batch', devices=devices, donate_argnums=(0,))
  return step, training.replicate(state, devices)


def make_batch(batch: int, image_size: int, num_classes: int, devices):
  rng = np.random.default_rng(0)
  n = len(devices)
  host = {
      'image': rng.normal(size=(n, batch // n, image_size, image_size, 3)
                          ).astype(np.float32),
      'label': rng.integers(0, num_classes, (n, batch // n)).astype(np.int32)}
  # Sharded onto the devices once, as training's prefetch does.
  return next(jax_utils.prefetch_to_device(iter([host]), 1, devices))


def time_steps(step, state, batch, num_steps: int):
  """(new state, seconds per step over num_steps steps)."""
  started = time.perf_counter()
  for _ in range(num_steps):
    state, metrics = step(state, batch)
  jax.block_until_ready((state, metrics))
  return state, (time.perf_counter() - started) / num_steps


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
  """The model, batch and variant arguments shared with `python -m
  benchmarks`."""
  parser.add_argument('--model', default='wrn16_4')
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--image_size', type=int, default=32)
  parser.add_argument('--num_classes', type=int, default=10)
  parser.add_argument('--variants',
                      default='sgd,sam,p_inf,k2,second_order,asam,m32,bf16,'
                      'accum2')
  parser.add_argument('--steps', type=int, default=1,
                      help='timed steps per repeat')
  parser.add_argument('--repeats', type=int, default=3)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  add_step_arguments(parser)
  parser.add_argument('--devices', type=int, default=1)
  parser.add_argument('--compile_threads', type=int, default=3)
  args = parser.parse_args()

  devices = jax.local_devices()[:args.devices]
  names = args.variants.split(',')
  print(f'{args.model}, batch {args.batch}, {args.image_size}x'
        f'{args.image_size}, {len(devices)} {devices[0].platform} device(s), '
        f'{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}', flush=True)
  def warm_up(name):
    config = variant_config(name, args.model, args.batch, len(devices))
    step, state = build_step(config, args.image_size, args.num_classes,
                             devices)
    batch = make_batch(args.batch, args.image_size, args.num_classes,
                       devices)
    started = time.perf_counter()
    state, _ = time_steps(step, state, batch, 1)  # Compiles.
    print(f'  {name}: compile + first step {time.perf_counter() - started:.1f}'
          f' s', flush=True)
    return [step, state, batch]

  # XLA compiles outside the GIL: a few variants compile side by side.
  with futures.ThreadPoolExecutor(args.compile_threads) as pool:
    built = dict(zip(names, pool.map(warm_up, names)))

  seconds = {name: [] for name in names}
  for repeat in range(args.repeats):
    for name in names:
      step, state, batch = built[name]
      built[name][1], per_step = time_steps(step, state, batch, args.steps)
      seconds[name].append(per_step)
    print_table(args, names, seconds, repeat + 1)


def print_table(args, names, seconds, repeats_done):
  """The median over the repeats so far, with ratios to SGD and SAM."""
  median = {name: statistics.median(seconds[name]) for name in names}
  sgd, sam = median.get('sgd'), median.get('sam')
  print(f'\nmedian of {repeats_done} x {args.steps} step(s); load '
        f'{os.getloadavg()[0]:.1f}', flush=True)
  print(f'{"variant":<14}{"ms/step":>10}{"images/s":>10}{"x SGD":>8}'
        f'{"x SAM":>8}')
  for name in names:
    ratio_sgd = f'{median[name] / sgd:8.2f}' if sgd else f'{"-":>8}'
    ratio_sam = f'{median[name] / sam:8.2f}' if sam else f'{"-":>8}'
    print(f'{name:<14}{1e3 * median[name]:10.0f}'
          f'{args.batch / median[name]:10.1f}{ratio_sgd}{ratio_sam}',
          flush=True)


if __name__ == '__main__':
  main()
