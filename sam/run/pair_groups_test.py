"""SAMPa on two device groups against its sequential form, on 1, 2, 4 devices.

Each device count runs in its own process (a child of this file, with that
many fake CPU devices): the smoke config's wrn_mini and batch of 64 in four
replicas of 16, so that 1 device holds four groups (the sequential form), 2
hold two each and 4 one each (pairs of devices, `pair_groups.applies`). On 2
and 4 devices the child also compiles the step with
sam.sampa_device_groups = 'off', the sequential form on the same devices. Parameters are compared after every
step, where a difference would start, relative to how far they have moved
(||p_t - q_t|| / ||q_t - q_0||: parameters of norm ~30 move ~1 in three
steps, so a difference relative to the parameters would hide 30x).

The forms do the same float arithmetic in another order: a pair's pass sums
the gradient over its 2n examples in one reduction (a convolution kernel's
over 2n * H * W = 2,048 terms) where the sequential form sums each
replica's n and the step then averages, and the step averages pair means
over devices instead of replicas. A reordered sum of k terms moves by at
most k * u of the terms' absolute sum; u = 2^-53 = 1.1e-16 in float64, so
2.3e-13 for k <= 2,048. Three steps of lr 0.1 and momentum 0.9 grow a
difference by at most ~10x: 2.3e-12. TOLERANCE, 1e-10, leaves 40x of that
for cancellation (gradients whose sum is a 40th of their terms' absolute
sum); measured: <= 1.6e-15 at every step, on 2 and 4 devices, against the
1-device run and against the same devices' sequential form. It is 1000x
below float32 rounding, so a pass or a state kept in float32 anywhere fails
it: SAMPa's state was float32 in a float64 run, and the devices' order of
averaging it showed at 1.4e-9 from step 2 (it now follows the parameters'
dtype).

float64, because in float32 the comparison is a property of chance: the
same runs differ by 2e-7 to 8e-7 per step (u = 6e-8), and a ReLU input
within that distance of zero takes the other side in one run and moves the
gradient by its unit's whole contribution (sam/run/replicas_test.py).
"""

import os
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from configs import smoke
import models
from sam import methods
from sam import optim
from sam.run import distributed
from sam.run import state as state_lib
from sam.run import step as step_lib

STEPS = 3
IMAGE = (8, 8, 1)
NUM_CLASSES = 10
# Replicas of 16 of the smoke config's 64 examples: 4 groups on 1 device, 2
# on each of 2, one on each of 4, so the pairs form on 2 and on 4 devices.
REPLICA = 16
TOLERANCE = 1e-10


def sampa_config(dtype: str, sequential: bool = False):
  config = smoke.get_config('opt=sampa')
  config.optim.replica_batch_size = REPLICA
  config.model.dtype = dtype
  config.sam.sampa_device_groups = 'off' if sequential else 'on'
  return config


def batches(config):
  rng = np.random.default_rng(0)
  size = config.optim.batch_size
  return [
      {
          'image': rng.normal(size=(size,) + IMAGE).astype(np.float32),
          'label': rng.integers(0, NUM_CLASSES, size).astype(np.int32),
      }
      for _ in range(STEPS)
  ]


def run(num_devices: int, dtype: str, sequential: bool):
  """SAMPa's parameters after each of STEPS steps, as vectors [STEPS + 1, P],
  and whether the compiled step exchanges within pairs."""
  config = sampa_config(dtype, sequential)
  devices = jax.local_devices()[:num_devices]
  model = models.create_model(config.model.name, NUM_CLASSES, dtype)
  schedule = optax.constant_schedule(config.optim.learning_rate)
  tx = optim.create_optimizer(config.optim, schedule)
  sam = methods.create(
      config.sam, learning_rate=schedule, num_steps=1000, seed=config.seed
  )
  state = state_lib.create_train_state(
      model, IMAGE, tx, config.seed, sam.method.init
  )
  mesh = state_lib.device_mesh(devices)
  replicated = state_lib.replicate(state, mesh)
  step = jax.pmap(
      step_lib.make_train_step(config, model, NUM_CLASSES, num_devices, sam),
      axis_name=step_lib.AXIS,
      devices=devices,
  )
  vector = lambda s: np.concatenate(
      [np.ravel(x) for x in jax.tree.leaves(state_lib.unreplicate(s).params)]
  )
  params, exchanges = [vector(replicated)], None
  for batch in batches(config):
    sharded = state_lib.shard(
        jax.tree.map(
            lambda x: x.reshape((num_devices, -1) + x.shape[1:]), batch
        ),
        mesh,
    )
    if exchanges is None:
      text = step.lower(replicated, sharded).as_text()
      exchanges = 'collective_permute' in text
    replicated, _ = step(replicated, sharded)
    params.append(vector(replicated))
  return np.stack(params), exchanges


def run_on(devices: int, folder, repo_dir) -> dict[str, np.ndarray]:
  """This file's child on `devices` fake CPU devices: {form: [STEPS + 1, P],
  form_exchanges: bool}, 'pairs' the form the step picks."""
  out = os.path.join(folder, f'devices{devices}.npz')
  env = {**os.environ, 'XLA_FLAGS': distributed.cpu_devices_xla_flags(devices)}
  subprocess.run(
      [sys.executable, '-m', 'sam.run.pair_groups_test', str(devices), out],
      cwd=repo_dir,
      env=env,
      check=True,
      capture_output=True,
      timeout=1800,
  )
  with np.load(out) as record:
    return dict(record)


@pytest.fixture(scope='module')
def runs(tmp_path_factory, repo_dir):
  folder = tmp_path_factory.mktemp('pair_groups')
  return {n: run_on(n, str(folder), repo_dir) for n in (1, 2, 4)}


def differences(params, reference):
  """Per step, ||p_t - q_t|| / ||q_t - q_0||."""
  assert params.dtype == reference.dtype == np.float64
  moved = np.linalg.norm(reference[1:] - reference[0], axis=1)
  assert np.all(moved > 0.1), moved
  return np.linalg.norm(params[1:] - reference[1:], axis=1) / moved


def test_the_pairs_form_on_even_device_counts_only(runs):
  assert not runs[1]['pairs_exchanges']
  for devices in (2, 4):
    assert runs[devices]['pairs_exchanges']
    assert not runs[devices]['sequential_exchanges']


@pytest.mark.parametrize('devices', [2, 4])
@pytest.mark.parametrize('form', ['pairs', 'sequential'])
def test_sampa_steps_match_the_sequential_form_on_one_device(
    runs, devices, form
):
  found = differences(runs[devices][form], runs[1]['pairs'])
  assert np.all(found < TOLERANCE), found


@pytest.mark.parametrize('devices', [2, 4])
def test_pairs_match_the_sequential_form_on_the_same_devices(runs, devices):
  record = runs[devices]
  found = differences(record['pairs'], record['sequential'])
  assert np.all(found < TOLERANCE), found


def main(devices: int, out: str):
  """Writes `run_on`'s record; 'sequential' only where pairs could form."""
  jax.config.update('jax_enable_x64', True)
  record = {}
  for form in ('pairs', 'sequential') if devices > 1 else ('pairs',):
    params, exchanges = run(devices, 'float64', form == 'sequential')
    record[form], record[f'{form}_exchanges'] = params, exchanges
  np.savez(out, **record)


if __name__ == '__main__':
  main(int(sys.argv[1]), sys.argv[2])
