"""One workdir, one run: two train.py processes on one workdir, kill -9, and
the lock's own rules (sam/run/workdir_lock.py).

The Cloud Storage lock is tested against the emulator in gcs_test.py.
"""

import json
import os
import signal
import socket
import time

import jax
import numpy as np
import pytest

from configs import smoke
from sam.run import experiment
from sam.run import metrics_file
from sam.run import workdir_lock


def run_to_the_end(start_smoke, workdir, timeout_s=600):
  """(exit status, stderr) of a smoke run in `workdir`."""
  process = start_smoke(workdir)
  _, stderr = process.communicate(timeout=timeout_s)
  return process.returncode, stderr


def wait_for_checkpoint(workdir, process, step=4, timeout_s=300):
  deadline = time.time() + timeout_s
  while not os.path.exists(os.path.join(workdir, 'checkpoints', str(step))):
    assert time.time() < deadline and process.poll() is None
    time.sleep(0.05)


def tree(workdir):
  """{relative path: (size, mtime)} of every file below `workdir`."""
  found = {}
  for folder, _, names in os.walk(workdir):
    for name in names:
      path = os.path.join(folder, name)
      stat = os.stat(path)
      found[os.path.relpath(path, workdir)] = (stat.st_size, stat.st_mtime_ns)
  return found


def final_parameters(workdir):
  *_, variables, _ = experiment.load_run(workdir)
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(variables)])


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """An uninterrupted smoke run's summary, metrics records and parameters."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  summary = experiment.train_and_evaluate(smoke.get_config(), workdir)
  return summary, metrics_file.read_metrics(workdir), final_parameters(workdir)


def test_a_second_run_on_a_live_workdir_is_refused_and_writes_nothing(
    reference, tmp_path, start_smoke
):
  workdir = str(tmp_path / 'run')
  first = start_smoke(workdir)
  wait_for_checkpoint(workdir, first)
  # Stop the first run while the second one tries (SIGSTOP holds the lock:
  # the process is alive), so that nothing the first run writes hides a
  # write of the second.
  first.send_signal(signal.SIGSTOP)
  try:
    before = tree(workdir)
    code, stderr = run_to_the_end(start_smoke, workdir)
    after = tree(workdir)
  finally:
    first.send_signal(signal.SIGCONT)
  assert code == workdir_lock.BUSY_EXIT_CODE, stderr
  last = stderr.strip().splitlines()[-1]
  assert last == (
      f'error: workdir {workdir!r} is in use by a live run: pid {first.pid} '
      f'on {socket.gethostname()} (since '
      f'{last.split("(since ")[1].split(")")[0]}); wait for it to finish, '
      'stop it, or use another workdir'
  )
  assert 'Traceback' not in stderr
  assert after == before
  _, stderr = first.communicate(timeout=300)
  assert first.returncode == 0, stderr[-3000:]
  # The first run's records: each step once, in order, as uninterrupted.
  summary, records, parameters = reference
  ours = metrics_file.read_metrics(workdir)
  steps = [r['step'] for r in ours if 'train_loss' in r]
  assert steps == sorted(set(steps)) == [5, 10, 15, 20, 23]
  assert [r for r in ours if 'test_error' in r] == [
      r for r in records if 'test_error' in r
  ]
  with open(os.path.join(workdir, 'summary.json')) as f:
    assert json.load(f)['final'] == summary['final']
  # Its checkpoints: the parameters of the uninterrupted run, bit for bit.
  np.testing.assert_array_equal(final_parameters(workdir), parameters)


def test_kill_9_leaves_no_lock_behind(tmp_path, start_smoke):
  workdir = str(tmp_path / 'run')
  process = start_smoke(workdir)
  wait_for_checkpoint(workdir, process)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert workdir_lock.live_holder(workdir) is None
  code, stderr = run_to_the_end(start_smoke, workdir)
  assert code == 0, stderr[-3000:]
  assert (
      f'Taking over the lock of workdir {workdir} from pid {process.pid}'
      in stderr
  )
  assert 'Resuming from the checkpoint' in stderr
  # A clean end removes the record: the next run starts silently.
  assert not os.path.exists(os.path.join(workdir, '.lock'))


def test_one_holder_at_a_time_within_a_process(tmp_path):
  workdir = tmp_path / 'run'
  lock = workdir_lock.acquire(workdir)
  assert workdir_lock.live_holder(workdir).startswith(
      f'pid {os.getpid()} on {socket.gethostname()} (since '
  )
  with pytest.raises(workdir_lock.WorkdirBusyError, match=f'pid {os.getpid()}'):
    workdir_lock.acquire(workdir)
  lock.release()
  assert workdir_lock.live_holder(workdir) is None
  workdir_lock.acquire(workdir).release()


def test_an_unlocked_workdir_has_no_holder_and_a_lock_leaves_no_trace(
    tmp_path,
):
  workdir = tmp_path / 'never_run'
  assert workdir_lock.live_holder(workdir) is None
  assert not workdir.exists()
  # A run that takes the lock and ends before writing anything (refused by
  # a later check) leaves the workdir as it found it.
  workdir_lock.acquire(workdir).release()
  assert not workdir.exists()
  workdir.mkdir()
  workdir_lock.acquire(workdir).release()
  assert os.listdir(workdir) == []
