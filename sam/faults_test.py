"""Runs that survive: kill -9 at random moments, SIGTERM, damaged
checkpoints and non-finite steps, on the digits quickstart with a mini WRN.

A killed or preempted run, rerun with the same command, must end with the
parameters and metrics of an uninterrupted run, bit for bit (CPU).
"""

import glob
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import quickstart
from sam import checkpointing
from sam import training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KNOBS = 'model=wrn_mini,epochs=1'
OVERRIDES = ['--config.checkpoint_every_steps=4', '--config.log_every_steps=5']


def mini_config():
  config = quickstart.get_config(KNOBS)
  config.checkpoint_every_steps = 4
  config.log_every_steps = 5
  return config


def start_run(workdir):
  return subprocess.Popen(
      [sys.executable, 'train.py', f'--config=configs/quickstart.py:{KNOBS}',
       f'--workdir={workdir}'] + OVERRIDES,
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def final_state(workdir):
  *_, variables, _ = training.load_run(workdir)
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(variables)])


def final_metrics(workdir):
  return training._read_json(os.path.join(workdir, 'summary.json'))['final']


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """An uninterrupted run (23 steps)."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  training.train_and_evaluate(mini_config(), workdir)
  return workdir


def assert_same_run(workdir, reference_workdir):
  np.testing.assert_array_equal(final_state(workdir),
                                final_state(reference_workdir))
  assert final_metrics(workdir) == final_metrics(reference_workdir)


@pytest.mark.parametrize('seed', [0, 1])
def test_kill_9_at_a_random_moment_then_rerun(reference, tmp_path, seed):
  workdir = str(tmp_path / 'run')
  # Anywhere from start-up to the last steps (a run takes ~15-30 s here).
  delay = random.Random(seed).uniform(4.0, 20.0)
  process = start_run(workdir)
  try:
    process.wait(timeout=delay)
  except subprocess.TimeoutExpired:
    process.send_signal(signal.SIGKILL)
    process.wait()
  # The same run again (in this process, to save a start-up).
  training.train_and_evaluate(mini_config(), workdir)
  assert_same_run(workdir, reference)


def test_sigterm_checkpoints_the_current_step_then_resumes(reference,
                                                           tmp_path):
  workdir = str(tmp_path / 'run')
  process = start_run(workdir)
  # Wait until training is under way (the first checkpoint, step 4).
  deadline = time.time() + 300
  while not glob.glob(os.path.join(workdir, 'checkpoints', '4')):
    assert time.time() < deadline and process.poll() is None
    time.sleep(0.2)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=60)
  assert process.returncode != 0
  assert 'preempted: checkpointed step' in stderr
  step = int(stderr.split('preempted: checkpointed step ')[1].split()[0])
  manager = checkpointing.create_manager(workdir, 2)
  assert manager.latest_step() == step
  assert not os.path.exists(os.path.join(workdir, 'summary.json'))
  training.train_and_evaluate(mini_config(), workdir)
  assert_same_run(workdir, reference)


def test_damaged_newest_checkpoint_falls_back_to_the_previous(reference,
                                                              tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference, workdir)
  os.remove(os.path.join(workdir, 'summary.json'))
  # Truncate every file of the newest step (23) to half its size.
  for path in glob.glob(os.path.join(workdir, 'checkpoints', '23', '**', '*'),
                        recursive=True):
    if os.path.isfile(path) and os.path.getsize(path) > 1:
      with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)
  training.train_and_evaluate(mini_config(), workdir)
  assert os.listdir(os.path.join(workdir, 'checkpoints_damaged'))
  assert_same_run(workdir, reference)


def test_non_finite_loss_stops_naming_the_step_and_keeps_good_checkpoint(
    tmp_path):
  config = mini_config()
  config.learning_rate = 1e30
  config.grad_clip_norm = 0.0
  config.checkpoint_every_steps = 1
  with pytest.raises(training.NonFiniteError,
                     match=r'non-finite loss or gradient at step (\d+)') as e:
    training.train_and_evaluate(config, str(tmp_path))
  bad_step = int(str(e.value).split('at step ')[1].split(';')[0])
  manager = checkpointing.create_manager(str(tmp_path), 2)
  assert manager.latest_step() == bad_step - 1
  _, state, _ = checkpointing.restore_latest(
      manager, training.build(config)[3])
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.params))
  assert not os.path.exists(tmp_path / 'summary.json')


@pytest.fixture
def tiny_disk(tmp_path):
  """A 1.5 MB tmpfs: room for one mini checkpoint (~0.7 MB), not two."""
  mount_point = tmp_path / 'disk'
  mount_point.mkdir()
  result = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1536k',
                           'tmpfs', str(mount_point)], capture_output=True)
  if result.returncode:
    pytest.skip(f'cannot mount a tmpfs here: {result.stderr.decode()}')
  yield str(mount_point)
  # Lazy: the failed run's event-file writer may still hold a handle.
  subprocess.run(['umount', '-l', str(mount_point)], check=True)


def test_full_disk_is_a_clear_error_and_keeps_the_last_checkpoint(tiny_disk):
  config = mini_config()
  workdir = os.path.join(tiny_disk, 'run')
  with pytest.raises((checkpointing.CheckpointWriteError, OSError)) as e:
    training.train_and_evaluate(config, workdir)
  assert 'No space left on device' in str(e.value) or (
      'No space left on device' in str(e.value.__cause__))
  restored = checkpointing.restore_latest(
      checkpointing.create_manager(workdir, 2), training.build(config)[3])
  assert restored is not None and restored[0] >= 4
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(restored[1]))


def test_skip_option_skips_non_finite_steps_and_counts_them(tmp_path):
  config = mini_config()
  config.learning_rate = 1e30
  config.grad_clip_norm = 0.0
  config.skip_nonfinite_steps = True
  summary = training.train_and_evaluate(config, str(tmp_path))
  assert summary['finished']
  records = [r for r in training.writers.read_metrics(str(tmp_path))
             if 'skipped_steps' in r]
  assert records[-1]['skipped_steps'] > 0
  *_, variables, _ = training.load_run(str(tmp_path))
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(variables))
