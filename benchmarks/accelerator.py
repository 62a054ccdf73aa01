"""One prepared benchmark for whatever devices it finds.

  python -m benchmarks.accelerator --output_dir=results/benchmarks
  python -m benchmarks.accelerator --preset=cpu --output_dir=results/benchmarks
  python -m benchmarks.accelerator --quick --output_dir=/tmp/bench   # seconds

Writes `<output_dir>/<platform>.json` and `<platform>.md` (platform: cpu,
gpu or tpu, or `quick_<platform>`). Presets:

* accelerator (default; sized, by an estimate nothing has measured yet, for
  the 480 s that benchmarks/device_check.sh allows on an H100): WRN-28-10,
  batch 256, 32x32: SGD and SAM, float32 and bfloat16, and SAM bfloat16
  with one replica per device (no per-32 perturbation); PyramidNet-272 +
  ShakeDrop (batch 256) and ResNet-50 at 224 px (batch 256), SAM bfloat16;
  the loops: 120 steps of WRN-28-10 SAM bfloat16 (300 before the small
  loop was added), and 600 of the quickstart's WRN-10-2 on 8x8 images.
* cpu: WRN-16-4, batch 128 (SGD, SAM, float32, bfloat16) and the mini
  PyramidNet and ResNet; the loops: WRN-10-2 at 32x32, batch 64, and the
  quickstart's, 300 steps each.
* quick: the mini WRN (SGD, SAM, float32, bfloat16) and 12-step loops: a
  smoke test of this script.

Each step is the pmapped `sam.run.step.train_step` that training runs, built
from configs/smoke.py with the model, batch, method and dtype set (so with
the paper's replicas of 32 examples unless a case says otherwise), compiled
once; its time is the median of `--repeats` rounds of `--steps` steps.
FLOPs per step come from XLA's cost analysis of the compiled step (checked
against the hand count of one convolution, `conv_check`); MFU divides them
by the step time and the chips' dense peak (`PEAK_FLOPS`: bfloat16, and for
float32 the TF32 tensor-core peak on NVIDIA, which XLA uses for float32
convolutions by default). Memory: the compiled program's own estimate, and
the device's peak in use where the runtime reports one (GPU, TPU).

The loop figures run the real training loop (sam/run/loop.py) on
synthetic in-memory data (benchmarks/synthetic.py), and compare its steps/s
after the first step with the steps/s of the same compiled step run back to
back (benchmarks/log_cost.py): the gap is the loop's host overhead. The big
model's loop logs six times, checkpoints halfway and at the end and
evaluates at the end; there the step hides the host's work. The small one
is the quickstart's run (configs/quickstart.py: WRN-10-2 on 8x8 digits'
shapes, batch 64, logs every 50 steps, evaluation every 5 epochs,
checkpoints every 200 steps), whose steps take milliseconds on an
accelerator: that is where the host's work per step and per log shows.
Nothing here imports TensorFlow: it runs where only jax, flax, optax, orbax
and the carried ml_collections and clu wheels are installed
(benchmarks/device_check.sh).
"""

import dataclasses
import json
import os
import statistics
import time

from absl import app
from absl import flags
from etils import epath
import jax
import jax.numpy as jnp

from benchmarks import log_cost
from benchmarks import step_time
from benchmarks import synthetic
from configs import smoke
from sam.run import checks

# (substring of jax's device_kind, dense bfloat16 FLOP/s, float32 FLOP/s).
PEAK_FLOPS = (
    ('H200', 989e12, 494e12),
    ('H100', 989e12, 494e12),
    ('A100', 312e12, 156e12),
    ('TPU v3', 123e12, 123e12),
    ('TPU v4', 275e12, 275e12),
    ('TPU v5 lite', 197e12, 197e12),
    ('TPU v5e', 197e12, 197e12),
)


@dataclasses.dataclass(frozen=True)
class Case:
  """One step to time: a model, batch and resolution, a method and dtype."""

  model: str
  batch: int
  image_size: int
  method: str = 'sam'
  dtype: str = 'bfloat16'
  # None: the paper's 32 where the device batch holds it; 0: the device batch.
  replica_batch_size: int | None = None
  num_classes: int = 10

  @property
  def name(self) -> str:
    replicas = '' if self.replica_batch_size is None else '_one_replica'
    dtype = {'float32': 'f32', 'bfloat16': 'bf16'}[self.dtype]
    return f'{self.model}_{self.method}_{dtype}{replicas}'


def _both(model, batch, image_size):
  return [
      Case(model, batch, image_size, method, dtype)
      for dtype in ('float32', 'bfloat16')
      for method in ('sgd', 'sam')
  ]


PRESETS = {
    'accelerator': [
        *_both('wrn28_10', 256, 32),
        Case('wrn28_10', 256, 32, replica_batch_size=0),
        Case('pyramidnet_272_200_shakedrop', 256, 32),
        Case('resnet50', 256, 224, num_classes=1000),
    ],
    'cpu': [
        *_both('wrn16_4', 128, 32),
        Case('pyramidnet_mini', 32, 32),
        Case('resnet_mini', 32, 64, num_classes=100),
    ],
    'quick': _both('wrn_mini', 8, 16),
}
# preset -> (model, batch, image size, dtype, loop steps).
LOOPS = {
    'accelerator': ('wrn28_10', 256, 32, 'bfloat16', 120),
    'cpu': ('wrn10_2', 64, 32, 'float32', 300),
    'quick': ('wrn_mini', 8, 16, 'float32', 12),
}
# preset -> (the quickstart's model knob, loop steps).
SMALL_LOOPS = {
    'accelerator': ('wrn10_2', 600),
    'cpu': ('wrn10_2', 300),
    'quick': ('wrn_mini', 12),
}

flags.DEFINE_enum('preset', 'accelerator', sorted(PRESETS), 'What to run.')
flags.DEFINE_bool('quick', False, 'The quick preset (a smoke test).')
flags.DEFINE_integer('steps', 5, 'Timed steps per round.')
flags.DEFINE_integer('repeats', 3, 'Timed rounds per step.')
flags.DEFINE_string('output_dir', 'results/benchmarks', 'Where to write.')
flags.DEFINE_bool(
    'loop_only', False, 'Only the loop figures, into <platform>_loop.json.'
)


def peak_flops(device_kind: str, dtype: str) -> float | None:
  """The chip's dense peak FLOP/s for `dtype`, or None if not listed."""
  for kind, bf16, fp32 in PEAK_FLOPS:
    if kind.lower() in device_kind.lower():
      return bf16 if dtype == 'bfloat16' else fp32
  return None


def xla_cost(compiled) -> dict:
  """XLA's cost analysis of a compiled program ('flops', 'bytes accessed')."""
  cost = compiled.cost_analysis() or {}
  return cost[0] if isinstance(cost, (list, tuple)) else cost


def compiled_memory_bytes(compiled) -> int:
  """The compiled program's arguments, outputs and temporaries, in bytes."""
  memory = compiled.memory_analysis()
  return int(
      memory.argument_size_in_bytes
      + memory.output_size_in_bytes
      + memory.temp_size_in_bytes
      - memory.alias_size_in_bytes
  )


def conv_check(batch: int, size: int, channels: int) -> dict:
  """XLA's FLOPs for one 3x3 'SAME' convolution against the hand count.

  Each output pixel takes 2 * Cin * Cout FLOPs per kernel tap; with zero
  padding, the taps that fall inside the image are (3 S - 2) per row and
  per column over the S output positions, not 3 S.
  """
  images = jnp.zeros((batch, size, size, channels), jnp.float32)
  kernel = jnp.zeros((3, 3, channels, channels), jnp.float32)

  def conv(x, w):
    return jax.lax.conv_general_dilated(
        x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
    )

  xla = float(xla_cost(jax.jit(conv).lower(images, kernel).compile())['flops'])
  hand = 2.0 * batch * channels * channels * (3 * size - 2) ** 2
  return {
      'shape': [batch, size, size, channels],
      'xla_flops': xla,
      'hand_flops': hand,
      'ratio': xla / hand,
      'ratio_counting_padding': xla / (2.0 * batch * channels**2 * 9 * size**2),
  }


def _peak_memory(device) -> int | None:
  stats = device.memory_stats() if hasattr(device, 'memory_stats') else None
  return int(stats['peak_bytes_in_use']) if stats else None


def _config(case: Case, num_devices: int):
  """configs/smoke.py with the case's model, batch, method and dtype; the
  paper's replicas of 32 examples where the device batch holds them."""
  config = smoke.get_config()
  config.model.name, config.model.dtype = case.model, case.dtype
  config.optim.batch_size = case.batch
  config.sam.method = case.method
  replica = case.replica_batch_size
  if replica is None:
    replica = 32 if (case.batch // num_devices) % 32 == 0 else 0
  config.optim.replica_batch_size = replica
  checks.validate(config, num_devices)
  return config


def measure_step(case: Case, devices, steps: int, repeats: int) -> dict:
  """Compile time, step time, FLOPs, MFU and memory of one case."""
  config = _config(case, len(devices))
  step, state = step_time.build_step(
      config, case.image_size, case.num_classes, devices
  )
  batch = step_time.make_batch(
      case.batch, case.image_size, case.num_classes, devices
  )
  started = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - started
  state, _ = step_time.time_steps(compiled, state, batch, 1)
  seconds = []
  for _ in range(repeats):
    state, per_step = step_time.time_steps(compiled, state, batch, steps)
    seconds.append(per_step)
  step_s = statistics.median(seconds)
  flops = float(xla_cost(compiled)['flops']) * len(devices)
  peak = peak_flops(devices[0].device_kind, case.dtype)
  result = {
      'name': case.name,
      **dataclasses.asdict(case),
      'replica_batch_size': config.optim.replica_batch_size,
      'compile_s': compile_s,
      'step_s': step_s,
      'images_per_s': case.batch / step_s,
      'flops_per_step': flops,
      'compiled_memory_bytes': compiled_memory_bytes(compiled),
  }
  if peak:
    result['mfu'] = flops / step_s / (peak * len(devices))
  memory = _peak_memory(devices[0])
  if memory:
    result['peak_memory_bytes'] = memory
  return result


def add_sam_over_sgd(results: list[dict]) -> None:
  """Each SAM step's time over the SGD step of its model, batch and dtype."""
  sgd = {
      (r['model'], r['batch'], r['dtype']): r['step_s']
      for r in results
      if r['method'] == 'sgd'
  }
  for r in results:
    key = (r['model'], r['batch'], r['dtype'])
    if r['method'] == 'sam' and key in sgd:
      r['sam_over_sgd'] = r['step_s'] / sgd[key]


def measure_loop(preset: str, devices) -> dict:
  """Steps/s of the real loop on the preset's big model against the same
  step run back to back."""
  model, batch, image_size, dtype, total = LOOPS[preset]
  config = _config(Case(model, batch, image_size, 'sam', dtype), len(devices))
  config.optim.num_steps = total
  config.run.log_every_steps = max(1, total // 6)
  config.run.checkpoint_every_steps = max(1, total // 2)
  config.eval.every_epochs = 1.0  # One epoch is the run: one evaluation.
  checks.validate(config, len(devices))
  datasets = synthetic.SyntheticDatasets(
      10, (image_size, image_size, 3), batch, total, len(devices)
  )
  return {
      'model': model,
      'batch': batch,
      'image_size': image_size,
      'dtype': dtype,
      **log_cost.measure_loop(config, datasets),
  }


def measure_small_loop(preset: str, devices) -> dict:
  """The same for the quickstart's run (benchmarks/log_cost.py)."""
  model, total = SMALL_LOOPS[preset]
  config = log_cost.quickstart_config(total, len(devices), model)
  return {
      'model': model,
      'batch': config.optim.batch_size,
      'image_size': log_cost.IMAGE_SHAPE[0],
      'dtype': config.model.dtype,
      **log_cost.measure_loop(
          config, log_cost.digits_shaped(config, len(devices))
      ),
  }


def markdown(record: dict) -> str:
  """The record as Markdown tables."""
  lines = [
      f'# {record["device_kind"]} x {record["num_devices"]} '
      f'({record["platform"]}, jax {record["jax_version"]}, preset '
      f'{record["preset"]})',
      '',
      '| step | batch | px | replica | ms/step | images/s | x SGD | '
      'GFLOP/step | MFU | compile s | memory GiB |',
      '|---|---|---|---|---|---|---|---|---|---|---|',
  ]
  for r in record['steps']:
    memory = r.get('peak_memory_bytes', r['compiled_memory_bytes']) / 2**30
    mfu = f'{100 * r["mfu"]:.1f}%' if 'mfu' in r else '-'
    ratio = f'{r["sam_over_sgd"]:.2f}' if 'sam_over_sgd' in r else '-'
    lines.append(
        f'| {r["name"]} | {r["batch"]} | {r["image_size"]} | '
        f'{r["replica_batch_size"] or "device"} | {1e3 * r["step_s"]:.1f} | '
        f'{r["images_per_s"]:.0f} | {ratio} | '
        f'{r["flops_per_step"] / 1e9:.1f} | {mfu} | {r["compile_s"]:.1f} | '
        f'{memory:.2f} |'
    )
  c = record['conv_check']
  lines.append('')
  for key in ('loop', 'small_loop'):
    run = record[key]
    lines.append(
        f'Loop: {run["model"]}, batch {run["batch"]}, {run["image_size"]} '
        f'px, {run["steps"]} steps: {run["loop_steps_per_s"]:.2f} steps/s '
        f'in the loop, {run["step_steps_per_s"]:.2f} back to back '
        f'(loop/step {run["loop_over_step"]:.3f}; '
        f'{run["compilations_in_loop"]} compilations in the loop).'
    )
  lines += [
      f'Conv check {c["shape"]}: XLA {c["xla_flops"]:.3g} FLOPs, by hand '
      f'{c["hand_flops"]:.3g} (ratio {c["ratio"]:.3f}).',
  ]
  return '\n'.join(lines) + '\n'


def main(argv):
  del argv
  f = flags.FLAGS
  preset = 'quick' if f.quick else f.preset
  steps, repeats = (1, 1) if preset == 'quick' else (f.steps, f.repeats)
  devices = jax.local_devices()
  output = epath.Path(f.output_dir)
  output.mkdir(parents=True, exist_ok=True)
  if f.loop_only:
    record = {
        'jax_version': jax.__version__,
        'loop': measure_loop(preset, devices),
        'small_loop': measure_small_loop(preset, devices),
    }
    name = f'{devices[0].platform}_loop.json'
    (output / name).write_text(json.dumps(record, indent=2))
    print(json.dumps(record))
    return
  results = []
  for case in PRESETS[preset]:
    results.append(measure_step(case, devices, steps, repeats))
    print(json.dumps(results[-1]), flush=True)
  add_sam_over_sgd(results)
  record = {
      'platform': devices[0].platform,
      'device_kind': devices[0].device_kind,
      'num_devices': len(devices),
      'jax_version': jax.__version__,
      'preset': preset,
      'host_cores': os.cpu_count(),
      'steps': results,
      'conv_check': conv_check(8, 32, 64),
      'loop': measure_loop(preset, devices),
      'small_loop': measure_small_loop(preset, devices),
  }
  name = (
      devices[0].platform
      if preset != 'quick'
      else f'quick_{devices[0].platform}'
  )
  (output / f'{name}.json').write_text(json.dumps(record, indent=2))
  (output / f'{name}.md').write_text(markdown(record))
  print(markdown(record))


if __name__ == '__main__':
  app.run(main)
