"""Replicas: the same config trains the same on 1, 2 or 8 devices.

configs/smoke.py has replicas of 32 examples (batch 64): on one device two
replicas are slices of its batch, on two each device holds one, and on eight
each replica spans four devices (BatchNorm statistics and the perturbation
are averaged over them). The runs are separate processes, each with its own
number of fake CPU devices.

Tolerance: the three runs do the same arithmetic in a different order (a
mean over 32 examples is one sum, or four partial sums averaged across
devices), so they differ by float32 rounding, about 1e-7 relative per step,
which 23 steps of training at learning rate 0.1 grow to at most ~1e-4 of
the parameters' norm. Without replicas the 8-device run normalises over 8
examples instead of 32 and differs by far more (checked below).
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import smoke
from sam.run import experiment
from sam.run import replicas

RELATIVE_TOLERANCE = 1e-4


def run_on(devices, workdir, repo_dir, *overrides):
  env = {
      **os.environ,
      'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}',
  }
  subprocess.run(
      [
          sys.executable,
          'train.py',
          '--config=configs/smoke.py',
          f'--workdir={workdir}',
          *overrides,
      ],
      cwd=repo_dir,
      env=env,
      check=True,
      capture_output=True,
      timeout=900,
  )
  *_, variables, _ = experiment.load_run(workdir)
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  params = np.concatenate([np.ravel(x) for x in jax.tree.leaves(variables)])
  return params, summary


@pytest.fixture(scope='module')
def runs(tmp_path_factory, repo_dir):
  root = tmp_path_factory.mktemp('replicas')
  return {n: run_on(n, str(root / f'devices{n}'), repo_dir) for n in (1, 2, 8)}


def relative(a, b):
  return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize('devices', [2, 8])
def test_same_training_on_1_2_and_8_devices(runs, devices):
  params, summary = runs[devices]
  reference, reference_summary = runs[1]
  assert summary['num_devices'] == devices
  assert relative(params, reference) < RELATIVE_TOLERANCE
  final, expected = summary['final'], reference_summary['final']
  assert final['test_error'] == expected['test_error']
  assert final['test_loss'] == pytest.approx(
      expected['test_loss'], rel=RELATIVE_TOLERANCE
  )


def test_without_replicas_the_devices_change_the_training(
    runs, tmp_path, repo_dir
):
  per_device, _ = run_on(
      8, str(tmp_path / 'run'), repo_dir, '--config.optim.replica_batch_size=0'
  )
  assert relative(per_device, runs[1][0]) > 100 * RELATIVE_TOLERANCE


@pytest.mark.parametrize(
    'devices,layout',
    [
        (1, replicas.Layout(32, 2, 1, None)),
        (2, replicas.Layout(32, 1, 1, None)),
        (8, replicas.Layout(32, 1, 4, ((0, 1, 2, 3), (4, 5, 6, 7)))),
    ],
)
def test_layouts_of_the_smoke_config(devices, layout):
  assert replicas.layout(smoke.get_config(), devices) == layout


def test_m_refines_the_groups_of_sam_but_not_of_sgd():
  config = smoke.get_config()
  config.sam.m = 8
  assert replicas.layout(config, 2).group_size == 8
  config.sam.method = 'sgd'
  assert replicas.layout(config, 2).group_size == 32


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
  problem = replicas.problem(config, devices)
  assert (message in problem) and (bool(problem) == bool(message)), problem
