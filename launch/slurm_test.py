"""Tests for launch/slurm.py and launch.sweep --slurm, on a real Slurm.

The scripts' text is checked as written; the runs go through a one-node
cluster of Debian's slurmctld, slurmd and munge started on this machine
(launch/slurm_cluster.py; .ci/run installs the packages, and without them
these tests fail naming them). On it: a smoke run of 2 tasks, each one
process of one CPU device joined by jax.distributed from Slurm's variables,
requeued mid-run (`scontrol requeue`), against one process of 2 devices;
and a rho-grid sweep as two job arrays, one of its tasks stopped near its
time limit (USR1, as `--signal=B:USR1@S` sends it), through to
results.tables. The two cluster tests take about 3 minutes on 2 busy cores.
"""

import json
import os
import re
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import smoke
from launch import slurm_cluster
from launch import slurm_job
from launch import slurm_sweep
from results import cells
from results import runs
from sam.run import experiment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU_JOB = ('--gpus_per_node=0', f'--venv={sys.prefix}')
# Epochs of the runs the tests requeue or signal once their first checkpoint
# (step 4) is written. At one epoch the rest of the run took about a second,
# and on a busy host the requeue came after the run had ended (a fresh-clone
# suite beside busy processes failed so). Six epochs leave about seven times
# that for the test to see the checkpoint and for Slurm to deliver the
# signal, and a slower host slows the run as much as the test.
REQUEUED_EPOCHS = 6


def test_gpu_job_script_runs_one_task_per_gpu():
  job = slurm_job.Job(
      nodes=2,
      gpus_per_node=4,
      cpus_per_task=8,
      partition='gpu',
      account='lab',
      qos='normal',
      time='1-00:00:00',
      venv='/shared/venv',
      setup='module load cuda/12.2',
      repo='/shared/sam',
  )
  script = slurm_job.run_script(
      job, 'configs/cifar.py:model=wrn28_10', '/shared/runs/wrn', '/data'
  )
  directives = re.findall(r'^#SBATCH (.*)$', script, re.MULTILINE)
  assert directives == [
      '--job-name=sam',
      '--nodes=2',
      '--ntasks-per-node=4',
      '--gpus-per-node=4',
      '--cpus-per-task=8',
      '--partition=gpu',
      '--account=lab',
      '--qos=normal',
      '--time=1-00:00:00',
      '--output=/shared/runs/wrn/sam-%j.log',
      '--open-mode=append',
      '--requeue',
      '--signal=B:USR1@300',
  ]
  lines = script.splitlines()
  assert lines[lines.index('cd /shared/sam || exit 1') + 1 :][:2] == [
      'module load cuda/12.2',
      'source /shared/venv/bin/activate',
  ]
  assert (
      'srun --label --cpus-per-task=8 /shared/venv/bin/python train.py '
      '--config=configs/cifar.py:model=wrn28_10 --workdir=/shared/runs/wrn '
      '--config.run.distributed.enabled=True --config.data.data_dir=/data &'
  ) in lines
  assert 'XLA_FLAGS' not in script  # GPUs: jax's own devices.


def test_one_gpu_needs_no_jax_distributed():
  job = slurm_job.Job(venv='/v', repo='/r')
  script = slurm_job.run_script(job, 'configs/smoke.py', '/w')
  assert '--config.run.distributed' not in script
  assert (
      'srun /v/bin/python train.py --config=configs/smoke.py --workdir=/w &'
      in script.splitlines()
  )


@pytest.mark.parametrize(
    'field, line',
    [
        (dict(time='1h'), "--time='1h': not a Slurm time limit"),
        (dict(time='5'), '--requeue_before_s=300: not within the time limit'),
        (dict(nodes=0), '--nodes=0: must be >= 1'),
        (dict(venv='/nonexistent'), "--venv='/nonexistent': no bin/python"),
        (dict(partition='a b'), "--partition='a b': not a Slurm name"),
        (dict(sbatch_args=('mem=0',)), "--sbatch_args: 'mem=0' is not an"),
    ],
)
def test_a_job_slurm_would_refuse_is_one_line(field, line):
  with pytest.raises(ValueError) as raised:
    slurm_job.check_job(slurm_job.Job(**field))
  assert str(raised.value).startswith(line)
  assert '\n' not in str(raised.value)


def test_bad_input_is_one_line_and_submits_and_writes_nothing(tmp_path):
  workdir = tmp_path / 'run'
  done = subprocess.run(
      [
          sys.executable,
          '-m',
          'launch.slurm',
          '--config=configs/smoke.py:epoch=1',
          f'--workdir={workdir}',
          '--gpus_per_node=0',
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert done.returncode == 1
  assert done.stderr.strip().splitlines() == [
      'error: --config=configs/smoke.py:epoch=1: configs/smoke.py: bad knob '
      "'epoch=1'; valid knobs: opt=, rho=, epochs_x=, validation=, seed=, "
      'model=, epochs=, noise='
  ]
  assert not workdir.exists()


def test_time_limits_in_every_slurm_format():
  limits = ['30', '30:15', '2:00:00', '1-0', '1-2:30', '1-02:03:04']
  assert [slurm_job.time_limit_s(t) for t in limits] == [
      1800,
      1815,
      7200,
      86400,
      95400,
      93784,
  ]


def test_second_array_waits_for_the_tasks_it_needs():
  assert slurm_sweep.dependency({0, 1}, '7', 2) == '7'
  assert slurm_sweep.dependency({0, 2}, '7', 3) == '7_0:7_2'
  assert slurm_sweep.dependency({1, '5_3'}, '7', 2) == '7_1:5_3'
  assert slurm_sweep.ledger_keys('r/sam_rho0.05_test/seed1') == (
      'r/sam_rho0.05_test/seed1',
      'r/sam_rhoCHOSEN_test/seed1',
  )


def test_missing_slurm_packages_are_named(tmp_path, monkeypatch):
  # sbatch and the other clients are in /usr/bin: as if slurm-client were
  # not installed.
  monkeypatch.setenv('PATH', str(tmp_path))
  with pytest.raises(RuntimeError) as raised:
    slurm_cluster.start(str(tmp_path / 'cluster'))
  assert re.fullmatch(
      r'the Slurm tests need the Debian packages ([\w-]+ )*slurm-client'
      r'( [\w-]+)*: apt-get install -y .*slurm-client.* \(as root, '
      r'\S+/launch/install_slurm\.sh installs them\)',
      str(raised.value),
  )
  assert not (tmp_path / 'cluster').exists()  # Nothing started or written.


# On the cluster.


@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
  """A one-node cluster with 4 CPUs declared: two 2-task jobs side by side."""
  root = tmp_path_factory.mktemp('slurm')
  try:
    started = slurm_cluster.start(str(root), cpus=4)
  except RuntimeError as e:
    pytest.fail(str(e))
  yield started
  started.stop()
  # Every job step ended with the cluster.
  assert not started.step_sockets()


def _launch(cluster, module, *args, check=True):
  done = subprocess.run(
      [sys.executable, '-m', module, *args],
      cwd=REPO,
      env=cluster.env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  if check:
    assert done.returncode == 0, done.stdout + done.stderr
  return done.stdout


def _job(cluster, job_id) -> dict[str, str]:
  """scontrol's record of a job (of an array task: 'ID_TASK')."""
  out = cluster.run('scontrol', '--oneliner', 'show', 'job', job_id).stdout
  return dict(re.findall(r'(\w+)=(\S*)', out.splitlines()[0]))


def _wait(condition, timeout_s, what):
  deadline = time.time() + timeout_s
  while not condition():
    assert time.time() < deadline, f'timed out waiting for {what}'
    time.sleep(0.2)


def _checkpointed(workdir) -> bool:
  # A committed step's directory is its number (orbax writes it under a
  # temporary name first); the first one, step 4, may be gone already.
  steps = workdir / 'checkpoints'
  return steps.exists() and any(p.name.isdigit() for p in steps.iterdir())


def _wait_checkpoint(cluster, job_id, workdir, log):
  """Waits for the run's first checkpoint: training is under way; fails at
  once, with the job's log, if the job ends first."""
  # The directory is looked at every 50 ms, the job's state (a scontrol
  # call, slow on a busy host) every 2 s: the caller signals the run as soon
  # as a checkpoint is there.
  deadline = time.time() + 600
  state_read = 0.0
  while not _checkpointed(workdir):
    assert time.time() < deadline, f'no first checkpoint in {workdir}'
    if time.time() - state_read > 2:
      state = _job(cluster, job_id)['JobState']
      assert state in ('PENDING', 'RUNNING'), f'{state}: ' + (
          log.read_text()[-3000:] if log.exists() else 'no log'
      )
      state_read = time.time()
    time.sleep(0.05)


def _wait_ended(cluster, job_ids, timeout_s=900):
  _wait(
      lambda: not cluster.run(
          'squeue', '--noheader', f'--jobs={",".join(job_ids)}', check=False
      ).stdout.strip(),
      timeout_s,
      f'jobs {job_ids}',
  )


def _parameters(workdir):
  *_, variables, _ = experiment.load_run(str(workdir))
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(variables)])


def test_two_tasks_equal_one_process_and_resume_exactly_after_requeue(
    cluster, tmp_path
):
  started = time.time()
  workdir = tmp_path / 'two_tasks'
  out = _launch(
      cluster,
      'launch.slurm',
      *CPU_JOB,
      '--cpu_tasks_per_node=2',
      f'--config=configs/smoke.py:epochs={REQUEUED_EPOCHS}',
      f'--workdir={workdir}',
  )
  job_id = re.fullmatch(r'submitted job (\d+): .*\n', out).group(1)
  log = workdir / f'sam-{job_id}.log'
  _wait_checkpoint(cluster, job_id, workdir, log)
  cluster.run('scontrol', 'requeue', job_id)
  # The same config in one process of 2 CPU devices, meanwhile.
  reference = tmp_path / 'one_process'
  summary = experiment.train_and_evaluate(
      smoke.get_config(f'epochs={REQUEUED_EPOCHS}'), str(reference)
  )
  _wait_ended(cluster, [job_id])
  record = _job(cluster, job_id)
  assert (record['JobState'], record['Restarts']) == ('COMPLETED', '1')
  text = log.read_text()
  steps = 23 * REQUEUED_EPOCHS
  # Both tasks stopped at one step (jax's preemption sync), then resumed.
  stopped = re.findall(
      rf'^(\d): preempted: checkpointed step (\d+) of {steps} in ', text, re.M
  )
  assert sorted(task for task, _ in stopped) == ['0', '1'], text[-3000:]
  assert stopped[0][1] == stopped[1][1] and 4 <= int(stopped[0][1]) < steps
  assert f'job {job_id} (restart 1)' in text

  two, one = _parameters(workdir), _parameters(reference)
  difference = np.abs(two - one).max()
  print(
      f'2 tasks (requeued at step {stopped[0][1]}) vs 1 process: max '
      f'parameter difference {difference:.3g}; {time.time() - started:.0f} s'
  )
  # Bit for bit: with 2 devices every cross-device sum (gradients,
  # BatchNorm statistics) adds two numbers, the same in either order, so
  # 2 processes of 1 device compute what 1 process of 2 does; a resume that
  # was not exact would differ too.
  assert difference == 0
  assert runs.load_run(workdir).final == summary['final']


def test_sweep_as_two_job_arrays_through_to_tables(cluster, tmp_path):
  started = time.time()
  runs_dir = tmp_path / 'runs'
  sweep = [
      '--slurm',
      *CPU_JOB,
      '--cpu_devices_per_task=2',
      '--config_file=configs/smoke.py',
      f'--rows=noise=0,epochs={REQUEUED_EPOCHS};noise=0.2',
      '--rho_grid',
      '--rho_values=0.02,0.05',
      '--seeds=1',
      '--epochs_x=',  # No SGD runs: the grid and the test runs only.
      f'--runs_dir={runs_dir}',
  ]
  out = _launch(cluster, 'launch.sweep', *sweep)
  first, second = re.search(r'job arrays: (\d+) (\d+);', out).groups()
  assert '4 runs now, 2 after them, 0 finished' in out
  # The second array waits on the first (the scheduler's next pass names
  # the reason).
  squeue = ('squeue', '--noheader', '--array', '--format=%i %j %T %r %E')
  _wait(
      lambda: 'Dependency' in cluster.run(*squeue, f'--jobs={second}').stdout,
      60,
      'the dependency',
  )
  queue = cluster.run(*squeue, f'--jobs={first},{second}').stdout
  for task in (0, 1):
    assert (
        f'{second}_{task} sam-after PENDING Dependency '
        f'afterok:{first}_*(unfulfilled)' in queue.splitlines()
    ), queue
  print(queue)
  # Rerun while queued: nothing submitted twice.
  again = _launch(cluster, 'launch.sweep', *sweep)
  assert '0 runs now, 0 after them, 0 finished, 6 skipped' in again
  assert 'job arrays: none' in again

  # Task 0's time limit nears: Slurm's USR1 to its batch shell.
  rows = runs_dir / 'digits'
  signalled_row = f'smoke_noise0_epochs{REQUEUED_EPOCHS}'
  val = rows / signalled_row / 'sam_rho0.02_val' / 'seed0'
  log = runs_dir / 'slurm_logs' / f'sam-{first}_0.log'
  _wait_checkpoint(cluster, f'{first}_0', val, log)
  cluster.run('scancel', '--batch', '--signal=USR1', f'{first}_0')
  _wait_ended(cluster, [first, second])
  for job_id in [f'{first}_{i}' for i in range(4)] + [f'{second}_0']:
    assert _job(cluster, job_id)['JobState'] == 'COMPLETED'
  assert _job(cluster, f'{second}_1')['JobState'] == 'COMPLETED'
  text = log.read_text()
  assert 'time limit near; stopping the run' in text
  # 21 steps an epoch: the validation split holds out a tenth.
  stop = rf'preempted: checkpointed step \d+ of {21 * REQUEUED_EPOCHS} in '
  assert re.search(stop, text), text
  assert 'requeueing job' in text and '(restart 1)' in text

  # Each row's test run took the rho of its lower validation error.
  tables = _launch(cluster, 'results.tables', f'--runs_dir={runs_dir}')
  (sam_line,) = [line for line in tables.splitlines() if line[:7] == '| sam |']
  test_runs = []
  for row in (signalled_row, 'smoke_noise0.2'):
    validation = runs.load_runs(rows / row)
    rho = cells.select_rho([r for r in validation if r.validation])
    test_dir = rows / row / f'sam_rho{rho:g}_test' / 'seed0'
    test_run = runs.load_run(test_dir)
    assert test_run.finished and test_run.rho == rho
    error = 100 * test_run.final['test_error']
    assert f' {error:.2f} (n=1, rho={rho:g} on validation) |' in sam_line
    test_runs.append((test_dir, test_run))

  # A rerun resumes what is unfinished (here a test run, from its last
  # checkpoint), and skips the rest.
  test_dir, test_run = test_runs[0]
  (test_dir / 'summary.json').unlink()
  out = _launch(cluster, 'launch.sweep', *sweep)
  assert '1 runs now, 0 after them, 5 finished' in out
  (resumed,) = re.search(r'job arrays: (\d+);', out).groups()
  _wait_ended(cluster, [resumed])
  assert runs.load_run(test_dir).final == test_run.final
  ledger = json.loads((runs_dir / 'slurm_jobs.json').read_text())
  key = str(test_dir.relative_to(runs_dir))
  assert ledger[key] == f'{resumed}_0'
  print(f'sweep: arrays {first}, {second}; {time.time() - started:.0f} s')
