"""The sbatch script of a run: one task per GPU, srun, requeue on signals.

launch/slurm.py (one run) and launch/slurm_sweep.py (job arrays) write
their scripts with it; the module docstring of launch/slurm.py says what
the script does and why.
"""

import dataclasses
import os
import re
import shlex
from typing import Sequence

from launch import local_runs
from launch import tpu

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Slurm's time limit formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S.
_TIME = re.compile(r'^(\d+-\d+(:\d+){0,2}|\d+(:\d+){0,2})$')
_NAME = re.compile(r'^[\w.,@+-]*$')

# The end of every job script: wait for the run (a trapped signal interrupts
# `wait`; the run goes on until it has checkpointed), then requeue the job
# if the time limit stopped an unfinished run.
_WAIT_AND_REQUEUE = """\
run=$!
wait "$run"; code=$?
while kill -0 "$run" 2>/dev/null; do wait "$run"; code=$?; done
if (( near_limit && code != 0 )); then
  echo "[slurm] $(date '+%F %T'): requeueing job $SLURM_JOB_ID"
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$code"
"""

_TRAPS = """\
# USR1 (--signal=B:USR1@S, S seconds before the time limit): SIGTERM to the
# job's steps only, so every task checkpoints one step (jax's preemption
# sync) and exits; then the job requeues itself (below).
near_limit=0
on_usr1() {
  near_limit=1
  echo "[slurm] $(date '+%F %T'): time limit near; stopping the run"
  scancel --signal=TERM "$SLURM_JOB_ID"
}
trap on_usr1 USR1
# SIGTERM (scontrol requeue, preemption, scancel) reaches the tasks too; this
# shell stays to see them checkpoint and exit before KillWait runs out.
trap 'echo "[slurm] $(date "+%F %T"): SIGTERM; the run checkpoints"' TERM
echo "[slurm] $(date '+%F %T'): job $SLURM_JOB_ID (restart \
${SLURM_RESTART_COUNT:-0}) on $SLURM_JOB_NODELIST"
"""


@dataclasses.dataclass(frozen=True)
class Job:
  """Where a run's Slurm job runs and how its environment is set up.

  Attributes:
    nodes: nodes of the job.
    gpus_per_node: GPUs per node, one task each; 0 runs CPU processes.
    cpu_tasks_per_node: tasks per node when gpus_per_node is 0.
    cpu_devices_per_task: XLA CPU devices of each CPU task.
    cpus_per_task: CPU cores per task (0: the cluster's default).
    partition: Slurm partition ('' for the default; likewise below).
    account: account charged.
    qos: quality of service.
    time: time limit, in a Slurm format (D-HH:MM:SS).
    job_name: the job's name in squeue and in its log's name.
    venv: a virtual environment on the shared filesystem.
    setup: shell lines run first (`module load ...`).
    repo: the checkout the job runs, on the shared filesystem.
    log_dir: where Slurm writes the job's output.
    requeue_before_s: seconds before the time limit to stop and requeue.
    array_limit: tasks of a sweep's array running at once (0: no limit).
    sbatch_args: further sbatch options, e.g. ('--mem=0',).
  """

  nodes: int = 1
  gpus_per_node: int = 1
  cpu_tasks_per_node: int = 1
  cpu_devices_per_task: int = 1
  cpus_per_task: int = 0
  partition: str = ''
  account: str = ''
  qos: str = ''
  time: str = ''
  job_name: str = 'sam'
  venv: str = ''
  setup: str = ''
  repo: str = REPO
  log_dir: str = ''
  requeue_before_s: int = 300
  array_limit: int = 0
  sbatch_args: tuple[str, ...] = ()

  @property
  def tasks_per_node(self) -> int:
    return self.gpus_per_node or self.cpu_tasks_per_node

  @property
  def num_tasks(self) -> int:
    return self.nodes * self.tasks_per_node

  @property
  def python(self) -> str:
    return os.path.join(self.venv, 'bin', 'python') if self.venv else 'python3'


def time_limit_s(limit: str) -> int:
  """Seconds of a Slurm time limit ('' for none: 0).

  Args:
    limit: M, M:S, H:M:S, D-H, D-H:M or D-H:M:S.

  Returns:
    The seconds.

  Raises:
    ValueError: not a Slurm time limit.
  """
  if not limit:
    return 0
  if not _TIME.match(limit):
    raise ValueError(
        f'--time={limit!r}: not a Slurm time limit (MM, HH:MM:SS, '
        'D-HH:MM:SS, ...)'
    )
  days, _, clock = limit.rpartition('-')
  parts = [int(p) for p in clock.split(':')]
  if days:  # D-H, D-H:M, D-H:M:S
    hours, minutes, seconds = (parts + [0, 0])[:3]
  elif len(parts) == 3:  # H:M:S
    hours, minutes, seconds = parts
  else:  # M, M:S
    hours, (minutes, seconds) = 0, (parts + [0])[:2]
  return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds


def check_job(job: Job) -> None:
  """Refuses a job that sbatch or the run would refuse later.

  Args:
    job: the job.

  Raises:
    ValueError: one line naming the option.
  """
  for name in ('nodes', 'cpu_tasks_per_node', 'cpu_devices_per_task'):
    if getattr(job, name) < 1:
      raise ValueError(f'--{name}={getattr(job, name)}: must be >= 1')
  for name in (
      'gpus_per_node',
      'cpus_per_task',
      'requeue_before_s',
      'array_limit',
  ):
    if getattr(job, name) < 0:
      raise ValueError(f'--{name}={getattr(job, name)}: must be >= 0')
  for name in ('partition', 'account', 'qos', 'job_name'):
    if not _NAME.match(getattr(job, name)):
      raise ValueError(f'--{name}={getattr(job, name)!r}: not a Slurm name')
  limit = time_limit_s(job.time)
  if limit and job.requeue_before_s >= limit:
    raise ValueError(
        f'--requeue_before_s={job.requeue_before_s}: not within the time '
        f'limit ({job.time} = {limit} s)'
    )
  if job.venv and not os.path.isfile(os.path.join(job.venv, 'bin', 'python')):
    raise ValueError(f'--venv={job.venv!r}: no bin/python there')
  if not os.path.isfile(os.path.join(job.repo, 'train.py')):
    raise ValueError(f'--repo={job.repo!r}: no train.py there')
  for arg in job.sbatch_args:
    if not arg.startswith('--'):
      raise ValueError(f'--sbatch_args: {arg!r} is not an sbatch --option')


def check_config(config: str, repo: str) -> None:
  """Refuses a config string that train.py would refuse.

  Args:
    config: 'configs/x.py:knobs', relative to `repo`.
    repo: the checkout the job runs.

  Raises:
    ValueError: one line (a missing file, an unknown knob, a bad value).
  """
  path, _, knobs = config.partition(':')
  try:
    local_runs.load_config(os.path.join(repo, path) + ':' + knobs)
  except Exception as e:  # pylint: disable=broad-except
    line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise ValueError(f'--config={config}: {line}') from None


def train_args(
    job: Job,
    config: str,
    workdir: str,
    data_dir: str = '',
    extra: Sequence[str] = (),
) -> list[str]:
  """train.py and its arguments, as every task of the job runs it.

  Args:
    job: the job (several tasks join jax.distributed).
    config: train.py's --config.
    workdir: train.py's --workdir.
    data_dir: the tfds data_dir ('' for the config's).
    extra: further train.py arguments.

  Returns:
    The arguments, 'train.py' first.
  """
  args = ['train.py', f'--config={config}', f'--workdir={workdir}']
  if job.num_tasks > 1:  # The rest comes from the step's Slurm variables.
    args.append(f'{tpu.DISTRIBUTED}.enabled=True')
  if data_dir:
    args.append(f'--config.data.data_dir={data_dir}')
  return args + list(extra)


def srun_command(job: Job, python: str, args: Sequence[str]) -> list[str]:
  """srun of a command on every task of the job's allocation.

  Args:
    job: the job.
    python: the interpreter.
    args: its arguments.

  Returns:
    The srun command line.
  """
  command = ['srun']
  if job.num_tasks > 1:
    command.append('--label')  # Lines prefixed with the task's rank.
  if job.cpus_per_task:  # srun does not take it from sbatch (since 22.05).
    command.append(f'--cpus-per-task={job.cpus_per_task}')
  return command + [python, *args]


def _directives(job: Job, output: str, array: str, after: str) -> list[str]:
  lines = [
      f'--job-name={job.job_name}',
      f'--nodes={job.nodes}',
      f'--ntasks-per-node={job.tasks_per_node}',
  ]
  if job.gpus_per_node:
    lines.append(f'--gpus-per-node={job.gpus_per_node}')
  if job.cpus_per_task:
    lines.append(f'--cpus-per-task={job.cpus_per_task}')
  for name in ('partition', 'account', 'qos', 'time'):
    if getattr(job, name):
      lines.append(f'--{name}={getattr(job, name)}')
  if array:
    limit = f'%{job.array_limit}' if job.array_limit else ''
    lines.append(f'--array={array}{limit}')
  if after:  # Never left waiting on a dependency that failed.
    lines += [f'--dependency=afterok:{after}', '--kill-on-invalid-dep=yes']
  lines += [
      f'--output={output}',
      '--open-mode=append',  # A requeued job appends to its log.
      '--requeue',
      f'--signal=B:USR1@{job.requeue_before_s}',
      *job.sbatch_args,
  ]
  return [f'#SBATCH {shlex.quote(line)}' for line in lines]


def batch_script(
    job: Job,
    command: str,
    output: str,
    what: str,
    array: str = '',
    after: str = '',
) -> str:
  """The sbatch script that runs `command` (a shell line ending in `&`).

  Args:
    job: resources and environment.
    command: starts the run in the background.
    output: Slurm's --output pattern.
    what: a comment line saying what the job runs.
    array: the --array range ('' for a single job).
    after: job id whose success the job waits for (afterok).

  Returns:
    The script's text.
  """
  lines = ['#!/bin/bash', f'# {what} (written by launch/slurm.py)']
  lines += _directives(job, output, array, after)
  lines.append(f'cd {shlex.quote(job.repo)} || exit 1')
  if job.setup:
    lines.append(job.setup)
  if job.venv:
    lines.append(
        f'source {shlex.quote(os.path.join(job.venv, "bin", "activate"))}'
    )
  if not job.gpus_per_node:
    environment = tpu.local_process_env(job.cpu_devices_per_task)
    lines.append(
        'export '
        + ' '.join(f'{k}={shlex.quote(v)}' for k, v in environment.items())
    )
  return '\n'.join(lines) + '\n' + _TRAPS + command + '\n' + _WAIT_AND_REQUEUE


def run_script(
    job: Job,
    config: str,
    workdir: str,
    data_dir: str = '',
    extra: Sequence[str] = (),
) -> str:
  """The sbatch script of one train.py run.

  Args:
    job: resources and environment.
    config: train.py's --config.
    workdir: train.py's --workdir (its log goes there unless job.log_dir).
    data_dir: the tfds data_dir ('' for the config's).
    extra: further train.py arguments.

  Returns:
    The script's text.
  """
  output = os.path.join(job.log_dir or workdir, f'{job.job_name}-%j.log')
  run = srun_command(
      job, job.python, train_args(job, config, workdir, data_dir, extra)
  )
  what = f'{workdir}: {job.nodes} node(s) x {job.tasks_per_node} ' + (
      'task(s), one per GPU' if job.gpus_per_node else 'CPU task(s)'
  )
  return batch_script(job, shlex.join(run) + ' &', output, what)
