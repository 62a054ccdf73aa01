"""The benchmark suite: step time, peak memory and FLOP utilisation of SGD vs
SAM vs variants, then the input pipeline, in one process.

  python -m benchmarks                      # CPU-sized defaults (wrn16_4, 32)
  python -m benchmarks --model=wrn28_10 --batch=256   # a GPU/TPU host

Every ratio is measured in this process (interleaved timing), so machine load
affects all variants alike. On an accelerator it also reports model FLOP
utilisation: XLA's FLOP count of one compiled step divided by step time and
the device's dense peak (`benchmarks.accelerator.PEAK_FLOPS`).
"""

import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags
import jax

from benchmarks import accelerator
from benchmarks import step_time


def measure(name, args, devices, repeats):
  """(seconds per step, FLOPs per step, peak temp bytes, dtype) of one
  variant."""
  config = step_time.variant_config(name, args.model, args.batch, len(devices))
  step, state = step_time.build_step(
      config, args.image_size, args.num_classes, devices
  )
  batch = step_time.make_batch(
      args.batch, args.image_size, args.num_classes, devices
  )
  compiled = step.lower(state, batch).compile()
  cost = accelerator.xla_cost(compiled)
  memory = compiled.memory_analysis()
  state, _ = step_time.time_steps(step, state, batch, 1)  # Warm-up.
  seconds = []
  for _ in range(repeats):
    state, per_step = step_time.time_steps(step, state, batch, args.steps)
    seconds.append(per_step)
  return (
      statistics.median(seconds),
      cost.get('flops'),
      getattr(memory, 'temp_size_in_bytes', None),
      config.model.dtype,
  )


def main(argv):
  del argv
  args = flags.FLAGS

  devices = jax.local_devices()[:1]
  platform = devices[0].platform
  print(
      f'{args.model}, batch {args.batch}, {args.image_size}px, '
      f'{devices[0].device_kind} ({platform})',
      flush=True,
  )
  rows = {}
  for name in args.variants:
    started = time.time()
    rows[name] = measure(name, args, devices, args.repeats)
    print(f'  measured {name} in {time.time() - started:.0f} s', flush=True)
  sgd = rows.get('sgd', (None,))[0]
  print(
      f'\n{"variant":<14}{"ms/step":>9}{"img/s":>9}{"x SGD":>7}'
      f'{"GFLOP":>9}{"temp MiB":>10}{"MFU":>7}'
  )
  for name, (seconds, flops, temp, dtype) in rows.items():
    peak = accelerator.peak_flops(devices[0].device_kind, dtype)
    mfu = f'{flops / seconds / peak:7.1%}' if peak and flops else f'{"-":>7}'
    ratio = f'{seconds / sgd:7.2f}' if sgd else f'{"-":>7}'
    print(
        f'{name:<14}{1e3 * seconds:9.0f}{args.batch / seconds:9.1f}'
        f'{ratio}{(flops or 0) / 1e9:9.1f}'
        f'{(temp or 0) / 2**20:10.1f}{mfu}',
        flush=True,
    )
  if not args.skip_input_pipeline:
    print('\ninput pipeline:', flush=True)
    subprocess.run(
        [sys.executable, '-m', 'benchmarks.input_pipeline'], check=True
    )


if __name__ == '__main__':
  step_time.define_step_flags()
  flags.DEFINE_bool('skip_input_pipeline', False, 'Only the step times.')
  app.run(main)
