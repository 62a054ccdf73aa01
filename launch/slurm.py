r"""Runs train.py on a Slurm cluster: one sbatch job, one task per GPU.

  python -m launch.slurm --nodes=2 --gpus_per_node=4 --partition=gpu \
      --account=ACCOUNT --time=1-00:00:00 --venv=$HOME/sam/.venv \
      --config=configs/cifar.py:model=wrn28_10,dataset=cifar10 \
      --workdir=/shared/runs/wrn_sam --dry_run

writes the sbatch script (`--dry_run` prints it) and submits it. The job
starts train.py through `srun`, one task per GPU (`--ntasks-per-node` =
`--gpus_per_node`), with `--config.run.distributed.enabled=True` when it has
more than one task: jax.distributed.initialize then finds the coordinator
(the first node), the process count and ids in the step's Slurm variables,
and gives each task the GPU of its local rank (jax's SlurmCluster sets
`local_device_ids` to SLURM_LOCALID), which is why one task per GPU and not
one per node: a task holding all the GPUs of its node would get one of them.
Every task sees all of its node's GPUs, so no `--gpus-per-task` or
`--gpu-bind`: jax picks its own. jax reads SLURM_JOB_ID, SLURM_STEP_NODELIST
(only set inside an srun step, hence srun), SLURM_NTASKS, SLURM_PROCID and
SLURM_LOCALID; its coordinator listens on the first node at port 61440 +
job id mod 4096 (JAX_COORDINATOR_PORT, exported by `--setup`, overrides it).

Preemption and time limits end in the exact resume of a SIGTERM on a TPU:
`scontrol requeue`, a preemption, or `scancel` send SIGTERM to every task
(and KillWait, or the partition's GraceTime, later SIGKILL); jax's
preemption sync makes every process checkpoint the same step and exit, and
the job (`--requeue`) runs again and resumes from that checkpoint.
`--requeue_before_s` seconds before the time limit Slurm signals the batch
shell (`--signal=B:USR1@S`): it stops the run the same way, without
KillWait's bound, and requeues the job once the checkpoint is written.

The job runs the checkout at `--repo` (this one by default) on the cluster's
shared filesystem, after `--setup` (e.g. `module load cuda/12.2`) and with
the venv at `--venv`. The workdir is on the shared filesystem or gs://;
Slurm writes the job's output to `--job_log_dir` (default: the workdir,
which must then be local). A workdir that holds a finished run, that a live
run holds, or for which an earlier job is still queued or running is not
submitted again (the job ids are kept in `<workdir>/slurm_jobs.json`).

`--gpus_per_node=0` runs CPU processes instead (`--cpu_tasks_per_node`
tasks, each with `--cpu_devices_per_task` XLA CPU devices): the tests run
the real path this way on a one-node cluster (launch/slurm_cluster.py).
`python -m launch.sweep --slurm` submits a sweep as job arrays
(launch/slurm_sweep.py).
"""

import dataclasses
import json
import os
import shlex
import subprocess
import sys
from typing import Optional, Sequence

from absl import app
from absl import flags
from etils import epath

from launch import slurm_job
from results import runs
from sam.run import files
from sam.run import workdir_lock

LEDGER = 'slurm_jobs.json'


def _slurm(command: list[str], script: str = '') -> subprocess.CompletedProcess:
  try:
    return subprocess.run(command, input=script, capture_output=True, text=True)
  except OSError as e:  # No Slurm client on this machine.
    raise RuntimeError(f'{command[0]}: {e.strerror}') from None


def submit(script: str) -> str:
  """Submits a job script with sbatch.

  Args:
    script: the script's text.

  Returns:
    The job id (of an array: the array's).

  Raises:
    RuntimeError: sbatch's own error line.
  """
  done = _slurm(['sbatch', '--parsable'], script)
  if done.returncode:
    lines = done.stderr.strip().splitlines() or [f'exit {done.returncode}']
    raise RuntimeError(f'sbatch: {lines[-1]}')
  return done.stdout.strip().split(';')[0]


def queued(job_ids: Sequence[str]) -> set[str]:
  """The jobs of a list that are still pending or running.

  Args:
    job_ids: '123', or an array task '123_4'.

  Returns:
    Those that squeue lists (each array task on its own).

  Raises:
    RuntimeError: squeue's error line.
  """
  parents = sorted({i.split('_')[0] for i in job_ids})
  if not parents:
    return set()
  done = _slurm(
      [
          'squeue',
          '--noheader',
          '--array',
          '--format=%i',
          f'--jobs={",".join(parents)}',
      ]
  )
  if done.returncode and 'Invalid job id' in done.stderr:
    return set()  # The only job asked for is gone from the queue.
  if done.returncode:
    raise RuntimeError(f'squeue: {done.stderr.strip()}')
  listed = set(done.stdout.split())
  return {i for i in job_ids if i in listed}


def read_ledger(directory: epath.PathLike) -> dict[str, str]:
  """The last job submitted for each run of a directory.

  Args:
    directory: a run's workdir, or a sweep's runs directory.

  Returns:
    Run (its workdir relative to `directory`; '.' for `directory` itself)
    -> job id, from `directory`/slurm_jobs.json.
  """
  path = epath.Path(directory) / LEDGER
  return files.read_json(path) if path.exists() else {}


def record_jobs(directory: epath.PathLike, jobs: dict[str, str]) -> None:
  """Adds submitted jobs to a directory's ledger.

  Args:
    directory: as for `read_ledger`.
    jobs: run -> job id.
  """
  path = epath.Path(directory)
  path.mkdir(parents=True, exist_ok=True)
  ledger = {**read_ledger(path), **jobs}
  files.write_text_atomically(path / LEDGER, json.dumps(ledger, indent=1))


def live_holder(workdir: epath.PathLike) -> Optional[workdir_lock.Holder]:
  """The live run that holds a workdir, if this machine can tell.

  Args:
    workdir: a run's workdir.

  Returns:
    Its holder, or None (also when the lock cannot be read from here).
  """
  try:
    return workdir_lock.live_holder(workdir)
  except Exception as e:  # pylint: disable=broad-except
    # No Cloud Storage credentials on the login node, say: train.py checks
    # the lock again when the job starts.
    print(f'# cannot check the lock of {workdir} here ({e}); train.py will')
    return None


def needs_no_job(workdir: str) -> tuple[str, int]:
  """Why `workdir` needs no job, and the exit status to say it with.

  Args:
    workdir: the run's workdir.

  Returns:
    ('', 0) if it needs one; else a line for a finished run (0), a live run
    holding it (75, as train.py's) or an earlier job of it that is still
    queued or running (0).
  """
  path = epath.Path(workdir)
  run = runs.load_run(path)
  if run is not None and run.finished:
    return f'skip: {workdir} holds a finished run; nothing submitted', 0
  holder = live_holder(path)
  if holder is not None:
    line = f'skip: a live run holds {workdir}, {holder}; nothing submitted'
    return line, workdir_lock.BUSY_EXIT_CODE
  earlier = read_ledger(path).get('.')
  if earlier and queued([earlier]):
    return f'skip: job {earlier} is queued or running for {workdir}', 0
  return '', 0


def define_job_flags() -> None:
  """The flags of a job's resources and environment (launch.slurm and
  launch.sweep --slurm)."""
  flags.DEFINE_integer('nodes', 1, 'Nodes per run.')
  flags.DEFINE_integer(
      'gpus_per_node', 1, 'GPUs per node, one task each; 0: CPU tasks.'
  )
  flags.DEFINE_integer(
      'cpu_tasks_per_node', 1, 'Tasks per node with --gpus_per_node=0.'
  )
  flags.DEFINE_integer(
      'cpu_devices_per_task', 1, 'XLA CPU devices per CPU task.'
  )
  flags.DEFINE_integer('cpus_per_task', 0, 'CPU cores per task (0: default).')
  flags.DEFINE_string('partition', '', 'Slurm partition.')
  flags.DEFINE_string('account', '', 'Slurm account.')
  flags.DEFINE_string('qos', '', 'Slurm quality of service.')
  flags.DEFINE_string('time', '', 'Time limit per job (D-HH:MM:SS).')
  flags.DEFINE_string('job_name', 'sam', 'Job name.')
  flags.DEFINE_string(
      'venv',
      sys.prefix if sys.prefix != sys.base_prefix else '',
      'Virtual environment on the shared disk (default: the one this '
      "launcher runs in; '' for python3 after --setup).",
  )
  flags.DEFINE_string(
      'setup', '', 'Shell line run first, e.g. "module load cuda/12.2".'
  )
  flags.DEFINE_string(
      'repo', slurm_job.REPO, 'The checkout jobs run (shared disk).'
  )
  flags.DEFINE_string(
      'job_log_dir', '', 'Where Slurm writes job output (shared disk).'
  )
  flags.DEFINE_integer(
      'requeue_before_s',
      300,
      'Seconds before the time limit to checkpoint and requeue.',
  )
  flags.DEFINE_integer(
      'array_limit', 0, 'Sweep tasks running at once (0: no limit).'
  )
  flags.DEFINE_string('sbatch_args', '', 'Further sbatch options.')


def job_from_flags(log_dir: str = '') -> slurm_job.Job:
  """The Job that define_job_flags' flags describe.

  Args:
    log_dir: used when --job_log_dir is not given.

  Returns:
    The job, checked (ValueError: one line).
  """
  f = flags.FLAGS
  job = slurm_job.Job(
      **{
          field.name: f[field.name].value
          for field in dataclasses.fields(slurm_job.Job)
          if field.name not in ('log_dir', 'sbatch_args', 'repo')
      },
      repo=os.path.abspath(f.repo),
      log_dir=f.job_log_dir or log_dir,
      sbatch_args=tuple(shlex.split(f.sbatch_args)),
  )
  slurm_job.check_job(job)
  if not job.log_dir:
    raise ValueError(
        '--job_log_dir: a gs:// workdir needs a log directory on the shared '
        'filesystem (Slurm writes the job output there)'
    )
  return job


def main(argv):
  del argv
  f = flags.FLAGS
  workdir = str(files.resolve(f.workdir))
  try:
    job = job_from_flags('' if files.is_remote(workdir) else workdir)
    slurm_job.check_config(f.config, job.repo)
  except ValueError as e:
    sys.exit(f'error: {e}')
  script = slurm_job.run_script(
      job, f.config, workdir, f.data_dir, shlex.split(f.train_args)
  )
  if f.dry_run:
    print(script, end='')
    return
  try:
    line, code = needs_no_job(workdir)
    if line:
      print(line)
      sys.exit(code)
    os.makedirs(job.log_dir, exist_ok=True)
    job_id = submit(script)
  except RuntimeError as e:
    sys.exit(f'error: {e}')
  record_jobs(workdir, {'.': job_id})
  print(f'submitted job {job_id}: {workdir}')


def _define_flags() -> None:
  define_job_flags()
  flags.DEFINE_string('config', None, 'train.py --config value.')
  flags.DEFINE_string('workdir', None, 'Run workdir (shared disk or gs://).')
  flags.DEFINE_string('data_dir', '', 'tfds data_dir every node reads.')
  flags.DEFINE_string('train_args', '', 'Extra train.py arguments.')
  flags.DEFINE_bool('dry_run', False, 'Print the sbatch script only.')
  flags.mark_flags_as_required(['config', 'workdir'])


if __name__ == '__main__':
  _define_flags()
  app.run(main)
