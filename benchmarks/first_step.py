"""Time to the first step, cold and warm: JAX's persistent compilation cache.

  python -m benchmarks.first_step --output_dir=results/benchmarks

Runs train.py twice on the same config with one fresh cache directory
(config.run.compilation_cache_dir) and fresh workdirs: the first run
compiles (cold), the second loads the compiled steps from the cache (warm),
as a resumed run or the next run of a sweep does. Each summary.json records
time_to_first_step_s: from the start of training (data, model, compilation)
to the end of the first step. Writes first_step_<platform>.json and prints a
Markdown line. Default: WRN-16-4 SAM on the digits at 32x32 (the quickstart's
data, resized), 2 steps, 2 CPU devices.
"""

import json
import os
import subprocess
import sys
import tempfile

from absl import app
from absl import flags
from etils import epath

from sam.run import distributed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_string(
    'config', 'configs/quickstart.py:model=wrn16_4', 'train.py --config.'
)
flags.DEFINE_list(
    'overrides',
    ['--config.optim.num_steps=2', '--config.data.image_size=32'],
    'Extra train.py arguments.',
)
flags.DEFINE_integer('devices', 2, 'CPU devices (ignored on accelerators).')
flags.DEFINE_string('output_dir', 'results/benchmarks', 'Where to write.')


def _environment(devices: int) -> dict[str, str]:
  """This environment without a JAX cache of its own, D CPU devices."""
  env = {
      k: v
      for k, v in os.environ.items()
      if not k.startswith(('JAX_COMPILATION_CACHE', 'JAX_PERSISTENT_CACHE'))
  }
  env['XLA_FLAGS'] = distributed.cpu_devices_xla_flags(devices)
  return env


def time_to_first_step(workdir: str, cache: str, env) -> dict:
  """One train.py run; its summary's timing fields."""
  f = flags.FLAGS
  subprocess.run(
      [
          sys.executable,
          'train.py',
          f'--config={f.config}',
          f'--workdir={workdir}',
          f'--config.run.compilation_cache_dir={cache}',
          '--config.run.tensorboard=False',
          *f.overrides,
      ],
      cwd=REPO,
      env=env,
      check=True,
      capture_output=True,
  )
  summary = json.loads((epath.Path(workdir) / 'summary.json').read_text())
  return {
      'time_to_first_step_s': summary['time_to_first_step_s'],
      'num_devices': summary['num_devices'],
  }


def main(argv):
  del argv
  f = flags.FLAGS
  env = _environment(f.devices)
  with tempfile.TemporaryDirectory(prefix='sam_first_step_') as scratch:
    cache = os.path.join(scratch, 'cache')
    cold = time_to_first_step(os.path.join(scratch, 'cold'), cache, env)
    warm = time_to_first_step(os.path.join(scratch, 'warm'), cache, env)
    cache_bytes = sum(
        os.path.getsize(p) for p in epath.Path(cache).glob('*') if p.is_file()
    )
  result = {
      'config': f.config,
      'overrides': f.overrides,
      'num_devices': cold['num_devices'],
      'cold_s': cold['time_to_first_step_s'],
      'warm_s': warm['time_to_first_step_s'],
      'warm_over_cold': warm['time_to_first_step_s']
      / cold['time_to_first_step_s'],
      'cache_bytes': cache_bytes,
      'load_average': os.getloadavg()[0],
  }
  output = epath.Path(f.output_dir)
  output.mkdir(parents=True, exist_ok=True)
  platform = 'cpu' if f.devices else 'device'
  (output / f'first_step_{platform}.json').write_text(
      json.dumps(result, indent=2)
  )
  print(
      f'| {f.config} | {result["cold_s"]:.1f} s | {result["warm_s"]:.1f} s | '
      f'{100 * result["warm_over_cold"]:.0f}% |'
  )


if __name__ == '__main__':
  app.run(main)
