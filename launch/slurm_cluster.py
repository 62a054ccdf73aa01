"""A one-node Slurm cluster on this machine, for the tests of launch.slurm.

The real daemons of Debian's packages (slurmctld, slurmd, munge; the client
commands of slurm-client), brought up without systemd and without touching
/etc: its own munge key and socket, its own slurm.conf with free ports, and
state, spool and logs under one directory. No cgroups (proctrack/linuxproc,
task/none) and no accounting database (sacct has none to read; squeue and
scontrol show the jobs). KillWait is long enough for a checkpoint, and a
requeued job may start again after 10 s instead of 2 minutes. The node
declares `cpus` CPUs whatever the machine has (config_overrides), so that
several small jobs run side by side. slurmd must run as root to start jobs
as the submitting user; CI (.ci/run) runs as root and installs the packages.
"""

import dataclasses
import getpass
import os
import random
import shutil
import signal
import socket
import subprocess
import time

# Binary -> the Debian package that has it.
BINARIES = {
    'munged': 'munge',
    'slurmctld': 'slurmctld',
    'slurmd': 'slurmd',
    'sbatch': 'slurm-client',
    'squeue': 'slurm-client',
    'scontrol': 'slurm-client',
    'scancel': 'slurm-client',
    'srun': 'slurm-client',
    'sinfo': 'slurm-client',
}
NODE = 'localhost'
INSTALL_SCRIPT = os.path.join(os.path.dirname(__file__), 'install_slurm.sh')
# Seconds between SIGTERM and SIGKILL when a job ends early: a smoke run on
# a busy 2-core host checkpoints in a few seconds.
KILL_WAIT_S = 120


def missing_packages() -> list[str]:
  """The Debian packages whose binaries are not on PATH (or in sbin)."""
  path = os.environ.get('PATH', '') + ':/usr/sbin:/sbin'
  return sorted(
      {p for b, p in BINARIES.items() if shutil.which(b, path=path) is None}
  )


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def slurm_conf(root: str, cpus: int, ports: tuple[int, int]) -> str:
  """The cluster's slurm.conf.

  Args:
    root: its directory.
    cpus: CPUs the node declares.
    ports: slurmctld's and slurmd's ports.

  Returns:
    The file's text.
  """
  user = getpass.getuser()
  # Job ids start at random: jax.distributed's coordinator port under Slurm
  # is derived from the job id, and two test sessions on one host must not
  # share one.
  first_job = random.randrange(1, 1_000_000)
  lines = [
      'ClusterName=samtest',
      f'SlurmctldHost={NODE}(127.0.0.1)',
      f'SlurmctldPort={ports[0]}',
      f'SlurmdPort={ports[1]}',
      f'SlurmUser={user}',
      f'SlurmdUser={user}',
      'AuthType=auth/munge',
      'CredType=cred/munge',
      # A requeued job may start again once the credentials of its last
      # start have expired (120 s by default): 10 s here.
      f'AuthInfo=socket={root}/munge/munge.socket,cred_expire=10',
      f'StateSaveLocation={root}/state',
      f'SlurmdSpoolDir={root}/spool',
      f'SlurmctldPidFile={root}/slurmctld.pid',
      f'SlurmdPidFile={root}/slurmd.pid',
      f'SlurmctldLogFile={root}/log/slurmctld.log',
      f'SlurmdLogFile={root}/log/slurmd.log',
      'ProctrackType=proctrack/linuxproc',
      'TaskPlugin=task/none',
      'JobAcctGatherType=jobacct_gather/none',
      'AccountingStorageType=accounting_storage/none',
      'JobCompType=jobcomp/none',
      'SelectType=select/cons_tres',
      'SelectTypeParameters=CR_CPU',
      'MpiDefault=none',
      'SwitchType=switch/none',
      'ReturnToService=2',
      # The scheduler looks at the queue every second (default: 60), so a
      # job starts as soon as it may.
      'SchedulerParameters=sched_interval=1',
      'SlurmdParameters=config_overrides',
      f'KillWait={KILL_WAIT_S}',
      f'FirstJobId={first_job}',
      # Finished jobs stay listed (scontrol show job) for the tests to read.
      'MinJobAge=600',
      f'NodeName={NODE} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN',
      f'PartitionName=debug Nodes={NODE} Default=YES MaxTime=INFINITE '
      'State=UP',
  ]
  return '\n'.join(lines) + '\n'


@dataclasses.dataclass
class Cluster:
  """A running cluster: its directory, the environment its clients need
  (SLURM_CONF) and the daemons this process started."""

  root: str
  env: dict
  daemons: list

  def run(self, *command: str, check: bool = True, timeout: float = 60):
    """Runs a client command (sbatch, squeue, ...) against the cluster.

    Args:
      *command: the command and its arguments.
      check: raise CalledProcessError on a non-zero exit.
      timeout: seconds it may take.

    Returns:
      The finished process, its output as text.
    """
    return subprocess.run(
        command,
        env=self.env,
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
    )

  def log_tail(self, lines: int = 30) -> str:
    """The end of the daemons' logs, for a failure's message.

    Args:
      lines: lines of each log.

    Returns:
      The text.
    """
    text = []
    for name in ('munge/munged.log', 'log/slurmctld.log', 'log/slurmd.log'):
      path = os.path.join(self.root, name)
      if os.path.exists(path):
        with open(path) as f:
          text.append(f'== {name}\n' + ''.join(f.readlines()[-lines:]))
    return '\n'.join(text)

  def stop(self, timeout_s: float = 180) -> None:
    """Cancels every job, waits for them to end, stops the daemons.

    Args:
      timeout_s: how long the jobs may take to end.
    """
    if all(d.poll() is None for d in self.daemons):
      self.run('scancel', f'--user={getpass.getuser()}', check=False)
      deadline = time.time() + timeout_s
      while time.time() < deadline:
        listed = self.run('squeue', '--noheader', check=False)
        if listed.returncode or not listed.stdout.strip():
          break
        time.sleep(1)
    for daemon in reversed(self.daemons):  # slurmd, slurmctld, munged.
      if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
      try:
        daemon.wait(timeout=30)
      except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()

  def step_sockets(self) -> list[str]:
    """slurmstepd's sockets in the spool: one per job step still alive."""
    spool = os.path.join(self.root, 'spool')
    return [n for n in os.listdir(spool) if n.startswith(f'{NODE}_')]


def _wait_for(condition, timeout_s: float, what: str, cluster: Cluster):
  deadline = time.time() + timeout_s
  while not condition():
    if time.time() > deadline or any(
        d.poll() is not None for d in cluster.daemons
    ):
      cluster.stop()
      raise RuntimeError(f'{what}\n{cluster.log_tail()}')
    time.sleep(0.2)


def start(root: str, cpus: int = 4, timeout_s: float = 60) -> Cluster:
  """Starts munged, slurmctld and slurmd for a one-node cluster.

  Args:
    root: an empty directory for its files.
    cpus: CPUs the node declares.
    timeout_s: how long the node may take to become idle.

  Returns:
    The cluster, its node idle.

  Raises:
    RuntimeError: a package is missing, or a daemon did not come up (with
      the end of its log).
  """
  missing = missing_packages()
  if missing and os.geteuid() == 0 and shutil.which('apt-get'):
    # A fresh Debian machine: the README's test command installs them.
    subprocess.run(['bash', INSTALL_SCRIPT], check=False, timeout=900)
    missing = missing_packages()
  if missing:
    raise RuntimeError(
        'the Slurm tests need the Debian packages '
        f'{" ".join(missing)}: apt-get install -y {" ".join(missing)} '
        f'(as root, {INSTALL_SCRIPT} installs them)'
    )
  for sub in ('munge', 'state', 'spool', 'log'):
    os.makedirs(os.path.join(root, sub), mode=0o700, exist_ok=True)
  key = os.path.join(root, 'munge', 'munge.key')
  with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o600), 'wb') as f:
    f.write(os.urandom(1024))
  conf = os.path.join(root, 'slurm.conf')
  with open(conf, 'w') as f:
    f.write(slurm_conf(root, cpus, (_free_port(), _free_port())))
  env = {**os.environ, 'SLURM_CONF': conf}
  path = env.get('PATH', '') + ':/usr/sbin:/sbin'
  munge = os.path.join(root, 'munge')
  commands = [
      [
          shutil.which('munged', path=path),
          '--foreground',
          '--force',  # Root, and a socket directory only root may enter.
          f'--key-file={key}',
          f'--socket={munge}/munge.socket',
          f'--pid-file={munge}/munged.pid',
          f'--log-file={munge}/munged.log',
          f'--seed-file={munge}/munged.seed',
      ],
      [shutil.which('slurmctld', path=path), '-D', '-i', '-f', conf],
      [shutil.which('slurmd', path=path), '-D', '-N', NODE, '-f', conf],
  ]
  cluster = Cluster(root, env, [])
  for command in commands:
    cluster.daemons.append(
        subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Not in pytest's process group.
        )
    )
    if command[0].endswith('munged'):
      _wait_for(
          lambda: os.path.exists(f'{munge}/munge.socket'),
          timeout_s,
          'munged did not start',
          cluster,
      )
  _wait_for(
      lambda: cluster.run(
          'sinfo', '--noheader', '--format=%t', check=False
      ).stdout.strip()
      == 'idle',
      timeout_s,
      'the Slurm node did not become idle',
      cluster,
  )
  return cluster
