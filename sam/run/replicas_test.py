"""Replicas: the same config trains the same on 1, 2 or 8 devices.

configs/smoke.py has replicas of 32 examples (batch 64): on one device two
replicas are slices of its batch, on two each device holds one, and on eight
each replica spans four devices (BatchNorm statistics and the perturbation
are averaged over them). The runs are separate train.py processes, each with
its own number of fake CPU devices, logging every step.

The comparison is per step, where a difference would start, and in float64
(`config.model.dtype`), because in float32 it is not a property of the code
but of chance. The device counts sum the same numbers in another order
(a mean over 32 examples is one sum, or four partial sums averaged across
devices), so float32 values differ by rounding, about 1e-7. A ReLU whose
input lies within that distance of zero then takes the other side on one of
the runs, and the gradient changes by that unit's whole contribution: on
this smoke config one such unit (input 3e-7, in the second SAM pass of step
7) turned a 1e-7 agreement into 1e-4 in one step, which training then grew
to 1e-2 (README, "Replicas"). How soon that happens depends on the CPU's
rounding, so no float32 tolerance holds on every machine.

In float64 the same arithmetic rounds at 1e-16: a sum of n terms is exact to
about n * 1.1e-16 relative (n <= 2048 here, so < 3e-13), and measured
differences stay below 5e-16 for all 23 steps. A flip would need an input
within ~1e-15 of zero, about a 1e-9 chance per run. TOLERANCE, 1e-10, leaves
300 times that bound and is 1000 times below float32 rounding, so a step
that ran in float32 anywhere would fail it. Without replicas the 8-device
run normalises over 8 examples instead of 32 and differs by over 1e-3 from
its first step.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import smoke
from sam import methods
from sam.run import distributed
from sam.run import experiment
from sam.run import metrics_file
from sam.run import replicas

TOLERANCE = 1e-10
PER_STEP = ('train_loss', 'grad_norm')


def run_on(devices, workdir, repo_dir, *overrides):
  """A float64 smoke run through train.py on `devices` fake CPU devices.

  Returns:
    (final parameters as one vector, summary, {step: train record}).
  """
  env = {**os.environ, 'XLA_FLAGS': distributed.cpu_devices_xla_flags(devices)}
  subprocess.run(
      [
          sys.executable,
          'train.py',
          '--config=configs/smoke.py',
          f'--workdir={workdir}',
          '--config.model.dtype=float64',
          '--config.run.log_every_steps=1',
          *overrides,
      ],
      cwd=repo_dir,
      env=env,
      check=True,
      capture_output=True,
      timeout=900,
  )
  jax.config.update('jax_enable_x64', True)
  try:
    *_, variables, _ = experiment.load_run(workdir)
  finally:
    jax.config.update('jax_enable_x64', False)
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  params = np.concatenate([np.ravel(x) for x in jax.tree.leaves(variables)])
  steps = {
      r['step']: r
      for r in metrics_file.read_metrics(workdir)
      if 'train_loss' in r
  }
  return params, summary, steps


@pytest.fixture(scope='module')
def runs(tmp_path_factory, repo_dir):
  root = tmp_path_factory.mktemp('replicas')
  return {n: run_on(n, str(root / f'devices{n}'), repo_dir) for n in (1, 2, 8)}


def relative(a, b):
  return np.linalg.norm(a - b) / np.linalg.norm(b)


def per_step_differences(steps, reference):
  """{step: the largest relative difference of PER_STEP at that step}."""
  assert sorted(steps) == sorted(reference)
  return {
      step: max(
          abs(steps[step][k] - reference[step][k]) / abs(reference[step][k])
          for k in PER_STEP
      )
      for step in sorted(reference)
  }


@pytest.mark.parametrize('devices', [2, 8])
def test_same_steps_on_1_2_and_8_devices(runs, devices):
  params, summary, steps = runs[devices]
  reference, reference_summary, reference_steps = runs[1]
  assert summary['num_devices'] == devices
  assert params.dtype == np.float64
  differences = per_step_differences(steps, reference_steps)
  assert len(differences) == 23
  worst = max(differences, key=differences.get)
  assert differences[worst] < TOLERANCE, (worst, differences[worst])
  assert relative(params, reference) < TOLERANCE
  final, expected = summary['final'], reference_summary['final']
  assert final['test_error'] == expected['test_error']
  assert final['test_loss'] == pytest.approx(
      expected['test_loss'], rel=TOLERANCE
  )


def test_without_replicas_the_devices_change_the_training(
    runs, tmp_path, repo_dir
):
  _, _, steps = run_on(
      8,
      str(tmp_path / 'run'),
      repo_dir,
      '--config.optim.replica_batch_size=0',
      '--config.optim.num_steps=2',
  )
  differences = per_step_differences(steps, {s: runs[1][2][s] for s in steps})
  assert differences[1] > 1e7 * TOLERANCE


@pytest.mark.parametrize(
    'devices,layout',
    [
        (1, replicas.Layout(32, 2, 1, None)),
        (2, replicas.Layout(32, 1, 1, None)),
        (8, replicas.Layout(32, 1, 4, ((0, 1, 2, 3), (4, 5, 6, 7)))),
    ],
)
def test_layouts_of_the_smoke_config(devices, layout):
  assert replicas.layout(smoke.get_config().optim, 0, devices) == layout


def test_m_refines_the_groups_of_sam_but_not_of_sgd():
  config = smoke.get_config()
  config.sam.m = 8
  layout = lambda: replicas.layout(
      config.optim, methods.create(config.sam).m, 2
  )
  assert layout().group_size == 8
  config.sam.method = 'sgd'
  assert layout().group_size == 32


@pytest.mark.parametrize(
    'fields,devices,message',
    [
        (
            {'optim.replica_batch_size': 24},
            2,
            'must divide the per-device batch',
        ),
        ({'optim.replica_batch_size': 16}, 1, ''),
        (
            {'optim.replica_batch_size': 48},
            1,
            'must divide the per-device batch',
        ),
        ({'optim.replica_batch_size': 64}, 4, ''),
        ({'optim.replica_batch_size': 48}, 4, 'spans devices'),
        ({'optim.replica_batch_size': 96}, 2, 'spans devices'),
        (
            {'optim.replica_batch_size': 16, 'sam.sync_perturbation': True},
            2,
            'sam.sync_perturbation',
        ),
        (
            {'optim.replica_batch_size': 16, 'optim.accumulation_steps': 4},
            2,
            'must divide the micro-batch (8)',
        ),
    ],
)
def test_groups_that_do_not_fit(fields, devices, message):
  config = smoke.get_config()
  for field, value in fields.items():
    section, leaf = field.split('.')
    config[section][leaf] = value
  sam = methods.create(config.sam)
  problem = replicas.problem(
      config.optim, sam.m, sam.sync_perturbation, devices
  )
  assert (message in problem) and (bool(problem) == bool(message)), problem
