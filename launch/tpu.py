r"""Runs train.py on a Cloud TPU VM or pod slice, on every worker.

  python -m launch.tpu --name=sam-v3-32 --zone=europe-west4-a --project=P \
      --accelerator_type=v3-32 --data_dir=gs://BUCKET/tensorflow_datasets \
      --workdir=gs://BUCKET/runs/r50_e100_sam \
      --config=configs/imagenet.py:model=resnet50,epochs=100,opt=sam --dry_run

`--action=up` (default) creates the TPU VM unless it exists (`--spot` for a
preemptible one), copies the project to every worker (the files git tracks
or would add, as on disk, packed into a temporary archive of this launch;
uncommitted changes are refused unless `--allow_dirty`),
installs requirements.txt with the TPU build of jax, and starts the same
train.py on every worker (`ssh --worker=all`) with
`--config.run.distributed.enabled=True`, so that train.py joins
`jax.distributed`, which finds the coordinator and process ids of a TPU pod
by itself. The workdir and data_dir are GCS paths that every worker reads.
`--action=train` only restarts training (after a spot preemption: the run
resumes from its last checkpoint in the workdir); `up` and `train` start
nothing when a live run holds the workdir (its lock, sam/run/workdir_lock.py)
and say so, `--action=logs` follows
worker 0's log, `--action=delete` deletes the VM. `--dry_run` prints the exact
commands.

Quota-free check of the multi-host path: `--local_processes=N
[--local_devices=D]` runs N train.py processes on this machine's CPU with D
devices each, connected by jax.distributed on localhost: each gets the
coordinator and its process id as config overrides (logs in
WORKDIR/process_logs/); its result should equal one process with N*D
devices.
"""

import os
import re
import shlex
import subprocess
import sys
import tempfile
from typing import NamedTuple, Sequence

from absl import app
from absl import flags

from launch import archive
from sam.run import distributed
from sam.run import workdir_lock

JAX_TPU_INDEX = (
    'https://storage.googleapis.com/jax-releases/libtpu_releases.html'
)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REMOTE_DIR = '~/sam'
REMOTE_LOG = '~/sam_train.log'
DISTRIBUTED = '--config.run.distributed'


def jax_version(requirements: str = 'requirements.txt') -> str:
  """The pinned jax version of requirements.txt (the TPU build must match)."""
  with open(requirements) as f:
    match = re.search(r'^jax==(\S+)', f.read(), re.MULTILINE)
  if not match:
    raise ValueError(f'{requirements} pins no jax==VERSION')
  return match.group(1)


def train_command(
    config: str,
    workdir: str,
    data_dir: str,
    train_args: Sequence[str] = (),
    python: str = 'python3',
    background: bool = True,
) -> str:
  """The shell command every worker runs."""
  args = [
      python,
      'train.py',
      f'--config={config}',
      f'--workdir={workdir}',
      f'{DISTRIBUTED}.enabled=True',
  ]
  if data_dir:
    args.append(f'--config.data.data_dir={data_dir}')
  run = shlex.join([*args, *train_args])
  if background:  # ssh returns; the run survives the ssh session.
    run = f'nohup {run} > {REMOTE_LOG} 2>&1 &'
  return f'cd {REMOTE_DIR} && {run}'


class TpuVm(NamedTuple):
  """A Cloud TPU VM or pod slice, as gcloud names and creates it."""

  name: str
  zone: str
  project: str
  accelerator_type: str
  version: str
  spot: bool


class RemoteRun(NamedTuple):
  """The run every worker of a TPU VM starts."""

  config: str
  workdir: str
  data_dir: str
  train_args: Sequence[str] = ()


def gcloud_commands(
    action: str,
    vm: TpuVm,
    run: RemoteRun,
    jax_pin: str = '',
    tarball: str = 'ARCHIVE',
) -> list[list[str]]:
  """The commands of one action, in order.

  Args:
    action: 'up', 'train', 'logs' or 'delete'.
    vm: the TPU VM.
    run: the run its workers start.
    jax_pin: jax version for `jax[tpu]`.
    tarball: local path of the project archive (`archive.write_archive`
      writes it before these commands run).

  Returns:
    Argument lists; the first of 'up' is the existence check, whose failure
    means "create" (the second command).
  """
  tpu = ['gcloud', 'compute', 'tpus', 'tpu-vm']
  name = vm.name
  where = [f'--zone={vm.zone}']
  where += [f'--project={vm.project}'] if vm.project else []
  ssh_all = tpu + ['ssh', name, '--worker=all', *where]
  train = ssh_all + [
      '--command='
      + train_command(run.config, run.workdir, run.data_dir, run.train_args)
  ]
  if action == 'train':
    return [train]
  if action == 'logs':
    return [
        tpu
        + [
            'ssh',
            name,
            '--worker=0',
            *where,
            f'--command=tail -n 100 -f {REMOTE_LOG}',
        ]
    ]
  if action == 'delete':
    return [tpu + ['delete', name, *where, '--quiet']]
  if action != 'up':
    raise ValueError(f'action={action!r}; valid: up, train, logs, delete')
  install = (
      f'mkdir -p {REMOTE_DIR} && tar xzf ~/sam_project.tar.gz -C '
      f'{REMOTE_DIR} && cd {REMOTE_DIR} && python3 -m pip install -q '
      f'-r requirements.txt "jax[tpu]=={jax_pin}" -f {JAX_TPU_INDEX}'
  )
  return [
      tpu + ['describe', name, *where, '--format=value(state)'],
      tpu
      + [
          'create',
          name,
          *where,
          f'--accelerator-type={vm.accelerator_type}',
          f'--version={vm.version}',
      ]
      + (['--spot'] if vm.spot else []),
      tpu
      + [
          'scp',
          tarball,
          f'{name}:~/sam_project.tar.gz',
          '--worker=all',
          *where,
      ],
      ssh_all + ['--command=' + install],
      train,
  ]


def local_process_args(num_processes: int, port: int) -> list[list[str]]:
  """The config overrides that join each local process to one run."""
  return [
      [
          f'{DISTRIBUTED}.enabled=True',
          f'{DISTRIBUTED}.coordinator_address=localhost:{port}',
          f'{DISTRIBUTED}.num_processes={num_processes}',
          f'{DISTRIBUTED}.process_id={i}',
      ]
      for i in range(num_processes)
  ]


def local_process_env(devices_per_process: int = 1) -> dict[str, str]:
  """jax's own environment of each local process: D CPU devices."""
  return {
      'JAX_PLATFORMS': 'cpu',
      'XLA_FLAGS': distributed.cpu_devices_xla_flags(devices_per_process),
  }


def run_local(
    command: Sequence[str],
    num_processes: int,
    port: int,
    log_dir: str,
    timeout_s: float = 3600,
    devices_per_process: int = 1,
) -> list[int]:
  """Runs `command` as `num_processes` local processes; returns exit codes.

  Each process gets `local_process_args` appended to `command`.
  """
  os.makedirs(log_dir, exist_ok=True)
  processes = []
  env = {**os.environ, **local_process_env(devices_per_process)}
  for i, extra in enumerate(local_process_args(num_processes, port)):
    log = open(os.path.join(log_dir, f'process{i}.log'), 'w')
    processes.append(
        (
            subprocess.Popen(
                [*command, *extra],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            ),
            log,
        )
    )
  codes = []
  for process, log in processes:
    try:
      codes.append(process.wait(timeout=timeout_s))
    except subprocess.TimeoutExpired:
      process.kill()
      codes.append(process.wait())
    log.close()
  return codes


def _define_flags():
  flags.DEFINE_enum(
      'action', 'up', ['up', 'train', 'logs', 'delete'], 'What to do.'
  )
  flags.DEFINE_string('name', 'sam-tpu', 'TPU VM name.')
  flags.DEFINE_string('zone', 'us-central2-b', 'Zone.')
  flags.DEFINE_string('project', '', 'GCP project (default: gcloud config).')
  flags.DEFINE_string('accelerator_type', 'v4-32', 'e.g. v3-8, v3-32, v4-32.')
  flags.DEFINE_string('version', 'tpu-ubuntu2204-base', 'TPU VM runtime.')
  flags.DEFINE_bool('spot', False, 'Preemptible (spot) VM.')
  flags.DEFINE_string('config', None, 'train.py --config value.')
  flags.DEFINE_string('workdir', None, 'Run workdir (gs:// on a pod).')
  flags.DEFINE_string('data_dir', '', 'tfds data_dir (gs:// on a pod).')
  flags.DEFINE_string('train_args', '', 'Extra train.py arguments.')
  flags.DEFINE_bool('dry_run', False, 'Print the commands, run nothing.')
  flags.DEFINE_bool(
      'allow_dirty',
      False,
      'Ship uncommitted changes (the working tree as it is) instead of '
      'refusing them.',
  )
  flags.DEFINE_integer(
      'local_processes',
      0,
      'Instead of a TPU: run this many '
      'local CPU processes joined by jax.distributed.',
  )
  flags.DEFINE_integer('port', 12355, 'Coordinator port for local processes.')
  flags.DEFINE_integer('local_devices', 1, 'CPU devices per local process.')


def live_run_line(workdir: str) -> str:
  """A line saying that a live run holds `workdir`, or '' if none does (or
  the lock cannot be read from here: train.py checks it again on the
  workers, and worker 0 refuses a held workdir for all of them)."""
  try:
    holder = workdir_lock.live_holder(workdir)
  except Exception as e:  # pylint: disable=broad-except
    # No credentials for Cloud Storage on this machine, say.
    print(f'# cannot check the workdir lock from here ({e}); train.py will')
    return ''
  if holder is None:
    return ''
  return f'skip: a live run holds {workdir}, {holder}; nothing started'


def main(argv):
  del argv
  f = flags.FLAGS
  train_args = shlex.split(f.train_args)
  if f.action in ('up', 'train') or f.local_processes:
    if not f.config or not f.workdir:
      raise app.UsageError('--config and --workdir are required')
    line = '' if f.dry_run else live_run_line(f.workdir)
    if line:
      print(line)
      sys.exit(workdir_lock.BUSY_EXIT_CODE)
  if f.local_processes:
    command = [
        sys.executable,
        'train.py',
        f'--config={f.config}',
        f'--workdir={f.workdir}',
    ] + ([f'--config.data.data_dir={f.data_dir}'] if f.data_dir else [])
    command += train_args
    if f.dry_run:
      env = ' '.join(
          f'{k}={shlex.quote(v)}'
          for k, v in local_process_env(f.local_devices).items()
      )
      for extra in local_process_args(f.local_processes, f.port):
        print(env, shlex.join(command + extra))
      return
    codes = run_local(
        command,
        f.local_processes,
        f.port,
        os.path.join(f.workdir, 'process_logs'),
        devices_per_process=f.local_devices,
    )
    print(f'exit codes: {codes}')
    sys.exit(max(codes, key=abs))
  if f.action == 'up':
    try:
      changes = archive.check_committed(REPO, f.allow_dirty)
    except ValueError as e:
      sys.exit(f'error: {e}')
  with tempfile.TemporaryDirectory(prefix='sam_tpu_') as scratch:
    tarball = os.path.join(scratch, 'sam_project.tar.gz')
    vm = TpuVm(f.name, f.zone, f.project, f.accelerator_type, f.version, f.spot)
    commands = gcloud_commands(
        f.action,
        vm,
        RemoteRun(f.config, f.workdir, f.data_dir, train_args),
        jax_pin=jax_version() if f.action == 'up' else '',
        tarball=tarball,
    )
    if f.action == 'up':
      shipped = f'{len(changes)} uncommitted changes' if changes else 'clean'
      print(f'# archive of the working tree ({shipped}) -> {tarball}')
      if not f.dry_run:
        archive.write_archive(REPO, tarball)
    _run_or_print(f.action, commands, f.dry_run)


def _run_or_print(action, commands, dry_run):
  if dry_run:
    if action == 'up':  # Create only where describe fails.
      print(
          shlex.join(commands[0])
          + ' >/dev/null 2>&1 || '
          + shlex.join(commands[1])
      )
      commands = commands[2:]
    for command in commands:
      print(shlex.join(command))
    return
  if action == 'up':
    exists = subprocess.run(commands[0], capture_output=True).returncode == 0
    commands = commands[2:] if exists else commands[1:]
  for command in commands:
    print('+', shlex.join(command), flush=True)
    subprocess.run(command, check=True)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
