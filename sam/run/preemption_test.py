"""Preemption on a multi-host run: two train.py processes joined by
jax.distributed on localhost (as launch/tpu.py --local_processes starts
them); only one gets SIGTERM, and both must checkpoint and stop at the same
step, then resume to the run an uninterrupted one gives.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import smoke
from launch import tpu
from sam.run import checkpoints
from sam.run import experiment

REPO = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _start(workdir, logs):
  """Two processes of one smoke run, one CPU device each."""
  env = {**os.environ, **tpu.local_process_env(1)}
  port = _free_port()
  processes = []
  for i, extra in enumerate(tpu.local_process_args(2, port)):
    log = open(logs / f'{workdir.name}_process{i}.log', 'w')
    command = [
        sys.executable,
        'train.py',
        '--config=configs/smoke.py',
        f'--workdir={workdir}',
        *extra,
    ]
    processes.append(
        subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    )
  return processes


def _wait(processes, timeout_s=300):
  return [p.wait(timeout=timeout_s) for p in processes]


def _parameters(workdir):
  *_, variables, _ = experiment.load_run(str(workdir))
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(variables)])


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """The same run uninterrupted, in this process on 2 devices."""
  workdir = tmp_path_factory.mktemp('reference')
  summary = experiment.train_and_evaluate(smoke.get_config(), str(workdir))
  return workdir, summary


def test_sigterm_to_one_host_stops_every_host_at_one_step(reference, tmp_path):
  workdir, logs = tmp_path / 'run', tmp_path
  processes = _start(workdir, logs)
  deadline = time.time() + 300
  while not (workdir / 'checkpoints' / '4').exists():
    assert time.time() < deadline
    assert all(p.poll() is None for p in processes), 'a process ended early'
    time.sleep(0.05)
  processes[1].send_signal(signal.SIGTERM)  # The non-primary host only.
  codes = _wait(processes)
  stopped = []
  for i in range(2):
    text = (logs / f'run_process{i}.log').read_text()
    found = re.findall(r'preempted: checkpointed step (\d+) of 23', text)
    assert found, text[-2000:]
    stopped.append(int(found[-1]))
  assert codes[0] != 0 and codes[1] != 0
  assert stopped[0] == stopped[1] and 4 <= stopped[0] < 23
  manager = checkpoints.create_manager(workdir, 2)
  assert manager.latest_step() == stopped[0]
  assert not (workdir / 'summary.json').exists()

  # The same command again resumes both hosts from that step and finishes.
  assert _wait(_start(workdir, logs)) == [0, 0]
  reference_dir, reference_summary = reference
  got, expected = _parameters(workdir), _parameters(reference_dir)
  # Two processes reduce over the same 2 devices as one process with 2;
  # the sums may run in another order (replicas_test.py's tolerance).
  assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 1e-4
  summary = experiment.train_and_evaluate(smoke.get_config(), str(workdir))
  assert summary['finished']
  assert summary['final']['test_error'] == (
      reference_summary['final']['test_error']
  )
