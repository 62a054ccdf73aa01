"""Tests for launch/sweep.py: dry-run output, the local runner (with a fake
train.py that writes summaries at once, so no training happens), and the
job arrays of --slurm as printed and planned (launch/slurm_test.py runs
them on a real Slurm)."""

import json
import os
import stat
import subprocess
import sys

import pytest

from launch import local_runs
from launch import slurm
from launch import slurm_job
from launch import slurm_sweep
from launch import sweep
from sam.run import workdir_lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAKE_TRAIN = r"""
import json, os, sys
args = dict(a[2:].split('=', 1) for a in sys.argv[1:])
path, _, knobs = args['config'].partition(':')
knobs = dict(kv.split('=', 1) for kv in knobs.split(',') if kv)
workdir = args['workdir']
os.makedirs(workdir, exist_ok=True)
with open(os.path.join(workdir, 'calls.txt'), 'a') as f:
  f.write('call\n')
if knobs.get('epochs') == '13':
  sys.exit(3)
if knobs.get('epochs') == '75':
  sys.exit(75)  # train.py's exit status for a workdir a live run holds.
rho = float(knobs.get('rho', 0.05))
validation = knobs.get('validation') == 'true'
config = {'data': {'dataset': 'fashion_mnist', 'augment': 'basic',
                   'validation_split': validation, 'label_noise': 0.0},
          'model': {'name': knobs.get('model', 'wrn28_10')},
          'optim': {'num_epochs': 200,
                    'epochs_multiplier': float(knobs.get('epochs_x', 1))},
          'sam': {'method': knobs['opt'], 'rho': rho},
          'seed': int(knobs['seed'])}
# Validation error is lowest at rho = 0.05; test error is not.
final = {'test_error': 0.04 + rho}
if validation:
  final['validation_error'] = 0.05 + abs(rho - 0.05)
with open(os.path.join(workdir, 'summary.json'), 'w') as f:
  json.dump({'config': config, 'finished': True, 'final': final}, f)
"""


def _fake_python(tmp_path):
  """An executable that drops 'train.py' and runs the fake trainer."""
  trainer = tmp_path / 'fake_train.py'
  trainer.write_text(FAKE_TRAIN)
  wrapper = tmp_path / 'fake_python'
  wrapper.write_text(
      f'#!/bin/sh\nshift\nexec {sys.executable} {trainer} "$@"\n'
  )
  wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
  return str(wrapper)


def _dry_run(*args):
  out = subprocess.run(
      [sys.executable, '-m', 'launch.sweep', '--dry_run', *args],
      cwd=REPO,
      capture_output=True,
      text=True,
      check=True,
  ).stdout
  return [
      line for line in out.splitlines() if line.startswith('python train.py')
  ], out


def test_dry_run_table1_cifar10():
  commands, out = _dry_run('--table=1', '--dataset=cifar10')
  assert len(commands) == 225
  assert sum('epochs_x=2' in c for c in commands) == 75
  assert sum('opt=sgd' in c for c in commands) == 150
  assert (
      'python train.py --config=configs/cifar.py:model=wrn28_10,'
      'dataset=cifar10,augment=basic,epochs=200,opt=sgd,seed=0,'
      'epochs_x=2 --workdir=runs/cifar10/wrn28_10_e200_basic/sgd_x2/seed0'
      in commands
  )
  assert out.strip().endswith('# 225 commands, 0 waiting for rho')


def test_dry_run_rho_grid():
  commands, out = _dry_run(
      '--table=1',
      '--dataset=cifar10',
      '--rho_grid',
      '--seeds=2',
      '--runs_dir=/r',
  )
  assert len(commands) == 15 * 6 * 2 + 15 * 2 * 2
  assert sum('validation=true' in c for c in commands) == 180
  assert '# 30 SAM test runs wait for the rho chosen' in out


def test_dry_run_of_the_sam_family_runs_each_method_at_its_rho():
  commands, out = _dry_run(
      '--config_file=configs/quickstart.py',
      '--rows=noise=0.4',
      '--seeds=2',
      '--epochs_x=1',
      '--methods=sam,looksam,msam:3',
      '--runs_dir=/r',
  )
  assert out.strip().endswith('# 8 commands, 0 waiting for rho')
  assert (
      'python train.py --config=configs/quickstart.py:noise=0.4,opt=msam,'
      'rho=3,seed=1 --workdir=/r/digits/quickstart_noise0.4/msam_rho3_test/'
      'seed1' in commands
  )
  assert sum('opt=looksam,rho=0.05' in c for c in commands) == 2
  assert sum('opt=sgd' in c for c in commands) == 2


def test_unknown_methods_list_the_valid_ones():
  with pytest.raises(
      ValueError, match=r"unknown method 'adam'; valid: \['aesam'"
  ):
    sweep.parse_methods(['sam', 'adam'])
  with pytest.raises(ValueError, match='rho must be a number'):
    sweep.parse_methods(['sam:x'])
  assert sweep.parse_methods(['sam', 'msam:3']) == [
      ('sam', None),
      ('msam', 3.0),
  ]


def test_runner_chooses_rho_skips_finished_and_resumes(tmp_path):
  runs_dir = str(tmp_path / 'runs')
  config_file = os.path.join(REPO, 'configs', 'fashion_mnist.py')

  def build(seeds=2):
    return sweep.build_set(
        runs_dir,
        None,
        None,
        seeds,
        [0.02, 0.05, 0.1],
        config_file,
        'model=wrn28_10',
        (1.0, 2.0),
    )

  row = os.path.join(runs_dir, 'fashion_mnist', 'fashion_mnist_modelwrn28_10')
  # An unfinished run from an earlier, interrupted sweep.
  os.makedirs(os.path.join(row, 'sgd_x1', 'seed0'))
  with open(os.path.join(row, 'sgd_x1', 'seed0', 'summary.json'), 'w') as f:
    json.dump({'config': {}, 'finished': False}, f)

  python = _fake_python(tmp_path)
  counts = local_runs.run_set(build, runs_dir, [None, None], python, [], 0.01)
  # 6 validation + 4 SGD, then 2 SAM test runs at the chosen rho.
  assert counts == {'finished': 12, 'failed': 0, 'live': 0, 'waiting': 0}
  assert sorted(os.listdir(row)) == [
      'sam_rho0.02_val',
      'sam_rho0.05_test',
      'sam_rho0.05_val',
      'sam_rho0.1_val',
      'sgd_x1',
      'sgd_x2',
  ]
  with open(os.path.join(row, 'sam_rho0.05_test', 'seed1', 'launch.json')) as f:
    launch = json.load(f)
  assert launch['config']['sam']['rho'] == 0.05
  assert launch['config']['data']['dataset'] == 'fashion_mnist'

  # Rerun: nothing to do, nothing relaunched.
  assert local_runs.run_set(build, runs_dir, [None], python, [], 0.01) == counts
  calls = {
      d: open(os.path.join(row, d, 'seed0', 'calls.txt')).read().count('call')
      for d in os.listdir(row)
  }
  assert set(calls.values()) == {1}


def test_runner_reports_failures(tmp_path):
  runs_dir = str(tmp_path / 'runs')
  config_file = os.path.join(REPO, 'configs', 'fashion_mnist.py')

  def build():
    runs, waiting = sweep.build_set(
        runs_dir, None, None, 1, None, config_file, 'epochs=13', (1.0,)
    )
    return runs, waiting

  # The fake trainer fails for epochs=13: one SAM and one SGD run.
  counts = local_runs.run_set(
      build, runs_dir, [None], _fake_python(tmp_path), [], 0.01
  )
  assert counts['failed'] == 2 and counts['finished'] == 0


def test_runs_held_by_live_processes_are_skipped_and_reported(tmp_path, capsys):
  runs_dir = str(tmp_path / 'runs')
  config_file = os.path.join(REPO, 'configs', 'fashion_mnist.py')

  def build(epochs):
    return lambda: sweep.build_set(
        runs_dir, None, None, 1, None, config_file, f'epochs={epochs}', (1.0,)
    )

  runs, _ = build(200)()
  held = os.path.join(runs_dir, runs[0].workdir)
  # A live run of another sweep holds the first workdir.
  lock = workdir_lock.acquire(held)
  try:
    counts = local_runs.run_set(
        build(200), runs_dir, [None], _fake_python(tmp_path), [], 0.01
    )
    assert sorted(os.listdir(held)) == ['.lock']  # Nothing written beside it.
  finally:
    lock.release()
  assert counts == {'finished': 1, 'failed': 0, 'live': 1, 'waiting': 0}
  out = capsys.readouterr().out
  assert f'[sweep] skip {runs[0].workdir}: a live run holds it, pid ' in out

  # A run refused by train.py itself (taken between the check and the
  # start) is reported the same way, not as a failure.
  counts = local_runs.run_set(
      build(75), runs_dir, [None], _fake_python(tmp_path), [], 0.01
  )
  assert counts == {'finished': 0, 'failed': 0, 'live': 2, 'waiting': 0}


def test_stop_runs_sends_sigterm_then_waits(tmp_path):
  marker = tmp_path / 'checkpointed'
  child = (
      f'import signal, sys, time\n'
      f'def stop(*_):\n'
      f'  open({str(marker)!r}, "w").write("final checkpoint")\n'
      f'  sys.exit(0)\n'
      f'signal.signal(signal.SIGTERM, stop)\n'
      f'print("ready", flush=True)\n'
      f'time.sleep(60)\n'
  )
  log = open(tmp_path / 'log', 'w')
  process = subprocess.Popen(
      [sys.executable, '-c', child], stdout=subprocess.PIPE, text=True
  )
  assert process.stdout.readline().strip() == 'ready'
  local_runs.stop_runs({'run': (process, log, 0)}, grace_s=30)
  assert process.returncode == 0
  assert marker.read_text() == 'final checkpoint'


def test_dry_run_into_a_reader_that_stops_early_is_quiet():
  # `python -m launch.sweep ... --dry_run | head -1`
  process = subprocess.Popen(
      [
          sys.executable,
          '-m',
          'launch.sweep',
          '--table=1',
          '--rho_grid',
          '--seeds=5',
          '--runs_dir=runs',
          '--dry_run',
      ],
      cwd=REPO,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )
  first = process.stdout.readline()
  process.stdout.close()
  stderr = process.stderr.read()
  assert process.wait(timeout=120) == 0, stderr
  assert first.startswith('python train.py --config=configs/cifar.py')
  assert 'Traceback' not in stderr and 'BrokenPipe' not in stderr


def _slurm_dry_run(*args):
  done = subprocess.run(
      [
          sys.executable,
          '-m',
          'launch.sweep',
          '--slurm',
          '--dry_run',
          '--config_file=configs/quickstart.py',
          '--rho_grid',
          '--rho_values=0.02,0.05',
          '--epochs_x=1',
          *args,
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=120,
  )
  scripts = done.stdout.split('#!/bin/bash\n')[1:]
  return done, scripts


def _tasks(script):
  listing = script.split("<<'TASKS' &\n")[1].split('\nTASKS\n')[0]
  return json.loads(listing)['tasks']


def test_slurm_dry_run_prints_two_arrays_the_second_after_validation(
    tmp_path,
):
  runs_dir = tmp_path / 'runs'
  done, (first, second) = _slurm_dry_run(
      '--seeds=2', f'--runs_dir={runs_dir}', '--partition=gpu', '--time=1-0'
  )
  assert done.returncode == 0, done.stderr
  assert done.stdout.strip().endswith(
      '# 6 runs now, 2 after them, 0 finished, 0 skipped or waiting'
  )
  # 2 rho x 2 seeds on validation and 2 SGD runs, one GPU each.
  assert '#SBATCH --array=0-5\n' in first
  assert '#SBATCH --gpus-per-node=1\n#SBATCH --partition=gpu\n' in first
  assert [t['workdir'].split('/', 2)[2] for t in _tasks(first)] == [
      'sam_rho0.02_val/seed0',
      'sam_rho0.02_val/seed1',
      'sam_rho0.05_val/seed0',
      'sam_rho0.05_val/seed1',
      'sgd_x1/seed0',
      'sgd_x1/seed1',
  ]
  # The test runs wait for the validation tasks only, not the SGD ones.
  assert '#SBATCH --array=0-1\n' in second
  assert '#SBATCH --dependency=afterok:FIRST_0:FIRST_1:FIRST_2:FIRST_3\n' in (
      second
  )
  task, _ = _tasks(second)
  row = 'digits/quickstart_default'
  assert task == {
      'workdir': f'{row}/sam_rhoCHOSEN_test/seed0',
      'args': [
          'train.py',
          '--config=configs/quickstart.py:opt=sam,rho=CHOSEN,seed=0',
          f'--workdir={runs_dir}/{row}/sam_rhoCHOSEN_test/seed0',
      ],
      'grid': [
          f'{row}/sam_rho0.02_val/seed0',
          f'{row}/sam_rho0.02_val/seed1',
          f'{row}/sam_rho0.05_val/seed0',
          f'{row}/sam_rho0.05_val/seed1',
      ],
  }
  assert not runs_dir.exists()  # A dry run writes nothing.


def test_slurm_plan_skips_finished_and_queued_runs(tmp_path):
  runs_dir = str(tmp_path / 'runs')
  config_file = os.path.join(REPO, 'configs', 'fashion_mnist.py')

  def build():
    return sweep.build_set(
        runs_dir, None, None, 1, [0.02, 0.05], config_file, '', (1.0,)
    )

  row = 'fashion_mnist/fashion_mnist_default'
  finished = os.path.join(runs_dir, row, 'sam_rho0.02_val', 'seed0')
  os.makedirs(finished)
  with open(os.path.join(finished, 'summary.json'), 'w') as f:
    json.dump({'config': {}, 'finished': True, 'final': {}}, f)
  # An earlier submission's task still runs the other validation run.
  slurm.record_jobs(runs_dir, {f'{row}/sam_rho0.05_val/seed0': '7_1'})
  job = slurm_job.Job(gpus_per_node=1, log_dir='/logs')
  plan = slurm_sweep.plan(
      build(),
      runs_dir,
      job,
      [],
      lambda spec: [f'{row}/sam_rho{r}_val/seed0' for r in ('0.02', '0.05')],
      lambda ids: {'7_1'} & set(ids),
  )
  assert [t.workdir for t in plan.first] == [f'{row}/sgd_x1/seed0']
  assert [t.workdir for t in plan.second] == [f'{row}/sam_rhoCHOSEN_test/seed0']
  assert plan.finished == 1
  assert plan.lines == [
      f'skip {row}/sam_rho0.05_val/seed0: job 7_1 is queued or running'
  ]
  # The test run waits for the earlier job, not for the SGD task.
  assert slurm_sweep.dependency(plan.needs, '9', len(plan.first)) == '7_1'


def test_slurm_bad_job_flag_is_one_line_before_anything_is_submitted(
    tmp_path,
):
  done, scripts = _slurm_dry_run(
      '--seeds=1', f'--runs_dir={tmp_path}', '--time=1h'
  )
  assert done.returncode == 2 and not scripts
  assert done.stderr.strip().splitlines() == [
      "error: --time='1h': not a Slurm time limit (MM, HH:MM:SS, "
      'D-HH:MM:SS, ...)'
  ]
