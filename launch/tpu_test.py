"""Tests for launch/tpu.py: the gcloud commands and the multi-host path on
several local CPU processes (jax.distributed over localhost)."""

import os
import shlex
import socket
import subprocess
import sys

import pytest

from configs import base
from launch import tpu
from sam.run import distributed
from sam.run import workdir_lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VM = tpu.TpuVm(
    name='sam-v3',
    zone='europe-west4-a',
    project='proj',
    accelerator_type='v3-32',
    version='tpu-vm-base',
    spot=True,
)
RUN = tpu.RemoteRun(
    config='configs/imagenet.py:model=resnet50,epochs=100,opt=sam',
    workdir='gs://bucket/runs/r50',
    data_dir='gs://bucket/tfds',
)


def test_up_commands():
  commands = tpu.gcloud_commands('up', VM, RUN, jax_pin='0.10.2')
  assert commands[0][:5] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'describe']
  assert commands[1] == [
      'gcloud',
      'compute',
      'tpus',
      'tpu-vm',
      'create',
      'sam-v3',
      '--zone=europe-west4-a',
      '--project=proj',
      '--accelerator-type=v3-32',
      '--version=tpu-vm-base',
      '--spot',
  ]
  assert commands[2][4] == 'scp' and '--worker=all' in commands[2]
  assert commands[2][5] == 'ARCHIVE'
  install, train = commands[3][-1], commands[4][-1]
  assert '--worker=all' in commands[3] and '--worker=all' in commands[4]
  assert '"jax[tpu]==0.10.2"' in install and 'requirements.txt' in install
  assert train == (
      '--command=cd ~/sam && nohup python3 train.py '
      '--config=configs/imagenet.py:model=resnet50,epochs=100,opt=sam '
      '--workdir=gs://bucket/runs/r50 '
      '--config.run.distributed.enabled=True '
      '--config.data.data_dir=gs://bucket/tfds '
      '> ~/sam_train.log 2>&1 &'
  )


def test_other_actions():
  assert tpu.gcloud_commands('delete', VM, RUN) == [
      [
          'gcloud',
          'compute',
          'tpus',
          'tpu-vm',
          'delete',
          'sam-v3',
          '--zone=europe-west4-a',
          '--project=proj',
          '--quiet',
      ]
  ]
  (train,) = tpu.gcloud_commands('train', VM, RUN)
  assert train[4:7] == ['ssh', 'sam-v3', '--worker=all']
  with pytest.raises(ValueError, match='action'):
    tpu.gcloud_commands('start', VM, RUN)


def test_jax_version_from_requirements(tmp_path):
  path = tmp_path / 'requirements.txt'
  path.write_text('flax==0.12.8\njax==0.10.2\njaxlib==0.10.2\n')
  assert tpu.jax_version(str(path)) == '0.10.2'


def test_dry_run_prints_gcloud_commands():
  out = subprocess.run(
      [
          sys.executable,
          '-m',
          'launch.tpu',
          '--dry_run',
          '--name=sam-v4',
          '--zone=us-central2-b',
          '--accelerator_type=v4-32',
          '--config=configs/cifar.py:model=wrn28_10,dataset=cifar10',
          '--workdir=gs://b/runs/wrn',
          '--data_dir=gs://b/tfds',
          '--allow_dirty',
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      check=True,
  ).stdout
  lines = out.splitlines()
  assert len(lines) == 5
  # A temporary archive of this launch, not a path shared by every user.
  assert lines[0].startswith('# archive of the working tree (')
  archive_path = lines[0].split(' -> ')[1]
  assert '/sam_tpu_' in archive_path and archive_path in lines[2]
  assert lines[1].startswith(
      'gcloud compute tpus tpu-vm describe sam-v4 --zone=us-central2-b '
      "'--format=value(state)' >/dev/null 2>&1 || gcloud compute tpus tpu-vm "
      'create sam-v4 --zone=us-central2-b --accelerator-type=v4-32'
  )
  assert shlex.split(lines[-1])[:7] == [
      'gcloud',
      'compute',
      'tpus',
      'tpu-vm',
      'ssh',
      'sam-v4',
      '--worker=all',
  ]


def test_local_processes_join_one_distributed_run(tmp_path):
  # The probe reads the config overrides train.py would get and joins the
  # run as train.py does.
  probe = tmp_path / 'probe.py'
  probe.write_text(
      f'import sys\nsys.path.insert(0, {REPO!r})\n'
      'from configs import base\n'
      'from sam.run import distributed\n'
      'c = base.base_config().run.distributed\n'
      'for arg in sys.argv[1:]:\n'
      '  key, value = arg.split("=")\n'
      '  field = key.split(".")[-1]\n'
      '  c[field] = type(c[field])(value == "True" if field == "enabled"\n'
      '                            else value)\n'
      'assert distributed.initialize(c)\n'
      'import jax, jax.numpy as jnp\n'
      'from jax.experimental import multihost_utils\n'
      'x = multihost_utils.process_allgather(\n'
      '    jnp.array([jax.process_index() + 1.0]))\n'
      'print("RESULT", jax.process_count(), jax.process_index(),\n'
      '      jax.device_count(), x.ravel().tolist())\n'
  )
  with socket.socket() as s:  # A free port for the coordinator.
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  codes = tpu.run_local(
      [sys.executable, str(probe)],
      2,
      port,
      str(tmp_path / 'logs'),
      timeout_s=120,
      devices_per_process=2,
  )
  assert codes == [0, 0]
  for i in range(2):
    log = (tmp_path / 'logs' / f'process{i}.log').read_text()
    # 2 processes x 2 CPU devices: one run over 4 devices.
    assert f'RESULT 2 {i} 4 [1.0, 2.0]' in log, log


def test_a_live_workdir_starts_nothing(tmp_path):
  workdir = tmp_path / 'run'
  lock = workdir_lock.acquire(workdir)
  try:
    result = subprocess.run(
        [
            sys.executable,
            '-m',
            'launch.tpu',
            '--local_processes=2',
            '--config=configs/smoke.py',
            f'--workdir={workdir}',
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sorted(os.listdir(workdir)) == ['.lock']
  finally:
    lock.release()
  assert result.returncode == workdir_lock.BUSY_EXIT_CODE, result.stderr
  assert result.stdout.strip() == (
      f'skip: a live run holds {workdir}, pid {os.getpid()} on '
      f'{socket.gethostname()} (since '
      f'{result.stdout.split("(since ")[1].split(")")[0]}); nothing started'
  )


def test_not_distributed_by_default():
  assert not distributed.initialize(base.base_config().run.distributed)


def test_local_dry_run_gives_each_process_its_id():
  out = subprocess.run(
      [
          sys.executable,
          '-m',
          'launch.tpu',
          '--dry_run',
          '--local_processes=2',
          '--config=configs/smoke.py',
          '--workdir=/tmp/w',
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      check=True,
  ).stdout.splitlines()
  assert len(out) == 2
  for i, line in enumerate(out):
    assert line.startswith('JAX_PLATFORMS=cpu XLA_FLAGS=')
    assert f'--config.run.distributed.process_id={i}' in line
    assert '--config.run.distributed.num_processes=2' in line
