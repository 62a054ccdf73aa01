"""benchmarks/accelerator.py runs without TensorFlow and writes real figures.

The GPU image has no TensorFlow, tfds or clu's TensorFlow parts, so the
quick preset runs here with those imports made to fail, as they would there.
"""

import json
import math
import os
import subprocess
import sys
import textwrap

from benchmarks import accelerator

# A None entry in sys.modules is how Python spells "not installed": imports
# raise ModuleNotFoundError and importlib.util.find_spec answers None.
WITHOUT_TENSORFLOW = textwrap.dedent("""
    import runpy, sys

    for name in ('tensorflow', 'tensorflow_datasets'):
      sys.modules[name] = None
    sys.argv = ['accelerator'] + sys.argv[1:]
    runpy.run_module('benchmarks.accelerator', run_name='__main__')
""")


def _numbers(record):
  if isinstance(record, dict):
    for value in record.values():
      yield from _numbers(value)
  elif isinstance(record, list):
    for value in record:
      yield from _numbers(value)
  elif isinstance(record, (int, float)) and not isinstance(record, bool):
    yield record


def test_the_quick_preset_runs_without_tensorflow(tmp_path):
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  ran = subprocess.run(
      [
          sys.executable,
          '-c',
          WITHOUT_TENSORFLOW,
          '--quick',
          f'--output_dir={tmp_path}',
      ],
      cwd=repo,
      check=False,
      capture_output=True,
      text=True,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
  )
  assert not ran.returncode, ran.stderr[-3000:]
  record = json.loads((tmp_path / 'quick_cpu.json').read_text())
  assert [s['name'] for s in record['steps']] == [
      c.name for c in accelerator.PRESETS['quick']
  ]
  for step in record['steps']:
    for field in ('step_s', 'compile_s', 'flops_per_step', 'images_per_s'):
      assert math.isfinite(step[field]) and step[field] > 0, (step, field)
  sam = [s for s in record['steps'] if s['method'] == 'sam']
  # SAM's step is two forward-backward passes: about twice SGD's FLOPs.
  for s in sam:
    sgd = next(
        r
        for r in record['steps']
        if r['method'] == 'sgd' and r['dtype'] == s['dtype']
    )
    assert 1.8 < s['flops_per_step'] / sgd['flops_per_step'] < 2.2
    assert s['sam_over_sgd'] > 0
  loop = record['loop']
  assert loop['checkpointed_steps'] == [6, 12]
  assert 0 < loop['loop_over_step']
  # The quickstart's run: it checkpoints every 200 steps, so only its last.
  small = record['small_loop']
  assert small['model'] == 'wrn_mini' and small['image_size'] == 8
  assert small['checkpointed_steps'] == [12] and 0 < small['loop_over_step']
  assert all(value >= 0 for value in _numbers(record))
  assert (
      (tmp_path / 'quick_cpu.md')
      .read_text()
      .startswith(f'# cpu x {record["num_devices"]} (cpu')
  )


def test_conv_check_counts_the_taps_inside_the_image():
  check = accelerator.conv_check(2, 8, 16)
  assert check['hand_flops'] == 2 * 2 * 16 * 16 * (3 * 8 - 2) ** 2
  assert abs(check['ratio'] - 1.0) < 1e-6
  assert abs(check['ratio_counting_padding'] - (22 / 24) ** 2) < 1e-6


def test_peak_flops_by_device_kind():
  assert accelerator.peak_flops('NVIDIA H200', 'bfloat16') == 989e12
  assert accelerator.peak_flops('NVIDIA H100 80GB HBM3', 'float32') == 494e12
  assert accelerator.peak_flops('TPU v4', 'float32') == 275e12
  assert accelerator.peak_flops('cpu', 'bfloat16') is None
