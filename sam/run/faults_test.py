"""Runs that survive: kill -9 mid-run, SIGTERM, damaged checkpoints and
non-finite steps, on configs/smoke.py (a mini WRN on the digits).

A killed or preempted run, rerun with the same command, must end with the
parameters and metrics of an uninterrupted run, bit for bit (CPU).
"""

import glob
import json
import os
import random
import shutil
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from configs import smoke
from sam.run import checkpoints
from sam.run import experiment
from sam.run import loop
from sam.run import metrics_file


def final_state(workdir):
  *_, variables, _ = experiment.load_run(workdir)
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(variables)])


def final_metrics(workdir):
  with open(os.path.join(workdir, 'summary.json')) as f:
    return json.load(f)['final']


def wait_for(path_pattern, process, timeout_s=300):
  """Waits until a file matching `path_pattern` exists while `process`
  runs."""
  deadline = time.time() + timeout_s
  while not glob.glob(path_pattern):
    assert time.time() < deadline and process.poll() is None
    time.sleep(0.05)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """An uninterrupted run (23 steps)."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  experiment.train_and_evaluate(smoke.get_config(), workdir)
  return workdir


def assert_same_run(workdir, reference_workdir):
  np.testing.assert_array_equal(
      final_state(workdir), final_state(reference_workdir)
  )
  assert final_metrics(workdir) == final_metrics(reference_workdir)


@pytest.mark.parametrize('seed', [0, 1])
def test_kill_9_mid_run_then_rerun(reference, tmp_path, seed, start_smoke):
  workdir = str(tmp_path / 'run')
  process = start_smoke(workdir)
  # Training is under way once the first checkpoint is written (step 4 of
  # 23); then a random moment within the next steps.
  wait_for(os.path.join(workdir, 'checkpoints', '4'), process)
  time.sleep(random.Random(seed).uniform(0.0, 0.5))
  assert process.poll() is None, 'the run ended before it was killed'
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert process.returncode == -signal.SIGKILL
  assert not os.path.exists(os.path.join(workdir, 'summary.json'))
  # The same run again (in this process, to save a start-up).
  experiment.train_and_evaluate(smoke.get_config(), workdir)
  assert_same_run(workdir, reference)


def test_sigterm_checkpoints_the_current_step_then_resumes(
    reference, tmp_path, start_smoke
):
  workdir = str(tmp_path / 'run')
  process = start_smoke(workdir)
  # Wait until training is under way (the first checkpoint, step 4).
  wait_for(os.path.join(workdir, 'checkpoints', '4'), process)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=60)
  assert process.returncode != 0
  assert 'preempted: checkpointed step' in stderr
  step = int(stderr.split('preempted: checkpointed step ')[1].split()[0])
  manager = checkpoints.create_manager(workdir, 2)
  assert manager.latest_step() == step
  assert not os.path.exists(os.path.join(workdir, 'summary.json'))
  experiment.train_and_evaluate(smoke.get_config(), workdir)
  assert_same_run(workdir, reference)


def test_damaged_newest_checkpoint_falls_back_to_the_previous(
    reference, tmp_path
):
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference, workdir)
  os.remove(os.path.join(workdir, 'summary.json'))
  # Truncate every file of the newest step (23) to half its size.
  for path in glob.glob(
      os.path.join(workdir, 'checkpoints', '23', '**', '*'), recursive=True
  ):
    if os.path.isfile(path) and os.path.getsize(path) > 1:
      with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)
  experiment.train_and_evaluate(smoke.get_config(), workdir)
  assert os.listdir(os.path.join(workdir, 'checkpoints_damaged'))
  assert_same_run(workdir, reference)


def test_a_transient_restore_error_stops_and_keeps_checkpoints_and_metrics(
    reference, tmp_path, monkeypatch
):
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference, workdir)
  os.remove(os.path.join(workdir, 'summary.json'))
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    metrics = f.read()
  steps = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))

  def io_error(manager, step, abstract_state):
    raise OSError('[Errno 5] Input/output error')

  monkeypatch.setattr(checkpoints, '_restore_step', io_error)
  monkeypatch.setattr(checkpoints, 'RETRY_DELAYS_S', (0.0, 0.0))
  with pytest.raises(checkpoints.CheckpointReadError, match='after 3 attempts'):
    experiment.train_and_evaluate(smoke.get_config(), workdir)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    assert f.read() == metrics
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == steps
  assert not os.path.exists(os.path.join(workdir, 'checkpoints_damaged'))


def test_non_finite_loss_stops_naming_the_step_and_keeps_good_checkpoint(
    tmp_path,
):
  config = smoke.get_config()
  config.optim.learning_rate = 1e30
  config.optim.grad_clip_norm = 0.0
  config.run.checkpoint_every_steps = 1
  with pytest.raises(
      loop.NonFiniteError, match=r'non-finite loss or gradient at step (\d+)'
  ) as e:
    experiment.train_and_evaluate(config, str(tmp_path))
  bad_step = int(str(e.value).split('at step ')[1].split(';')[0])
  manager = checkpoints.create_manager(str(tmp_path), 2)
  assert manager.latest_step() == bad_step - 1
  _, state, _ = checkpoints.restore_latest(
      manager, experiment.build(config).abstract_state
  )
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.params))
  assert not os.path.exists(tmp_path / 'summary.json')


@pytest.fixture
def tiny_disk(tmp_path):
  """A 1.5 MB tmpfs: room for one mini checkpoint (~0.7 MB), not two."""
  mount_point = tmp_path / 'disk'
  mount_point.mkdir()
  result = subprocess.run(
      ['mount', '-t', 'tmpfs', '-o', 'size=1536k', 'tmpfs', str(mount_point)],
      capture_output=True,
  )
  if result.returncode:
    pytest.skip(f'cannot mount a tmpfs here: {result.stderr.decode()}')
  yield str(mount_point)
  # Lazy: the failed run's event-file writer may still hold a handle.
  subprocess.run(['umount', '-l', str(mount_point)], check=True)


def test_full_disk_is_a_clear_error_and_keeps_the_last_checkpoint(tiny_disk):
  config = smoke.get_config()
  workdir = os.path.join(tiny_disk, 'run')
  with pytest.raises((checkpoints.CheckpointWriteError, OSError)) as e:
    experiment.train_and_evaluate(config, workdir)
  assert 'No space left on device' in str(e.value) or (
      'No space left on device' in str(e.value.__cause__)
  )
  restored = checkpoints.restore_latest(
      checkpoints.create_manager(workdir, 2),
      experiment.build(config).abstract_state,
  )
  assert restored is not None and restored[0] >= 4
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(restored[1]))


def test_skip_option_skips_non_finite_steps_and_counts_them(tmp_path):
  config = smoke.get_config()
  config.optim.learning_rate = 1e30
  config.optim.grad_clip_norm = 0.0
  config.optim.skip_nonfinite_steps = True
  summary = experiment.train_and_evaluate(config, str(tmp_path))
  assert summary['finished']
  records = [
      r
      for r in metrics_file.read_metrics(str(tmp_path))
      if 'skipped_steps' in r
  ]
  assert records[-1]['skipped_steps'] > 0
  *_, variables, _ = experiment.load_run(str(tmp_path))
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(variables))
