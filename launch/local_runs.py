"""Runs a set of train.py runs as local processes (launch.sweep's runner).

One run per GPU (CUDA_VISIBLE_DEVICES), or `len(slots)` at a time on a host
without GPUs. A run whose workdir holds a finished summary.json is skipped;
an unfinished one is started with the same command, and train.py resumes it
from its last checkpoint. A run whose workdir a live train.py holds (another
sweep, or a pod job) is skipped and reported, never started beside it
(sam/run/workdir_lock.py). Each run logs to `<workdir>/launch.log`, and
`<workdir>/launch.json` holds its command and config, so `python -m
results.tables` counts runs that have not started; on a gs:// runs_dir the
output is spooled locally and appended to the workdir's log at the end.
"""

import importlib.util
import json
import os
import shlex
import signal
import subprocess
import tempfile
import time
from typing import Optional, Sequence

from etils import epath

from results import runs
from sam.run import files
from sam.run import workdir_lock


def is_finished(workdir: epath.PathLike) -> bool:
  """Whether `workdir` holds a finished run."""
  run = runs.load_run(epath.Path(workdir))
  return run is not None and run.finished


def load_config(config: str):
  """Builds the ConfigDict of 'configs/x.py:knobs' as train.py would."""
  path, _, arg = config.partition(':')
  spec = importlib.util.spec_from_file_location(
      os.path.splitext(os.path.basename(path))[0], path
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def gpu_slots(gpus_per_run: str) -> list[Optional[str]]:
  """CUDA_VISIBLE_DEVICES values, one per concurrent run ([] without GPUs)."""
  visible = os.environ.get('CUDA_VISIBLE_DEVICES')
  if visible is not None:
    gpus = [g for g in visible.split(',') if g]
  else:
    try:
      out = subprocess.run(
          ['nvidia-smi', '--query-gpu=index', '--format=csv,noheader'],
          capture_output=True,
          text=True,
          check=True,
          timeout=30,
      ).stdout
      gpus = out.split()
    except (OSError, subprocess.SubprocessError):
      gpus = []
  if not gpus:
    return []
  return [','.join(gpus)] if gpus_per_run == 'all' else gpus


class RunLog:
  """A run's output, kept in `<workdir>/launch.log`.

  The child process needs a local file: for a remote workdir (gs://) the
  output goes to a local spool file, appended to the workdir's log when the
  run ends.
  """

  def __init__(self, workdir: epath.Path):
    self.target = workdir / 'launch.log'
    self.remote = files.is_remote(workdir)
    if self.remote:
      spool = tempfile.mkdtemp(prefix='sam_sweep_log_')
      self.local = epath.Path(spool) / 'launch.log'
    else:
      self.local = self.target
    self.file = self.local.open('a')

  def close(self) -> None:
    self.file.close()
    if self.remote:
      previous = self.target.read_text() if self.target.exists() else ''
      self.target.write_text(previous + self.local.read_text())
      self.local.unlink()
      self.local.parent.rmdir()


def _launch(spec, runs_dir, python, train_args, gpus):
  workdir = epath.Path(runs_dir) / spec.workdir
  workdir.mkdir(parents=True, exist_ok=True)
  command = spec.command(runs_dir, python, train_args)
  try:
    config = load_config(
        spec.command(runs_dir)[2][len('--config=') :]
    ).to_dict()
  except Exception:  # pylint: disable=broad-except
    config = {}  # The lead's config file may not exist yet; the run says so.
  # Atomic: a reader (results.tables) sees no half-written record.
  files.write_text_atomically(
      workdir / 'launch.json',
      json.dumps({'command': command, 'config': config}, default=str),
  )
  env = dict(os.environ)
  if gpus is not None:
    env['CUDA_VISIBLE_DEVICES'] = gpus
  log = RunLog(workdir)
  print(
      f'[sweep] start {spec.workdir} (gpus={gpus}): {shlex.join(command)}',
      flush=True,
  )
  return (
      subprocess.Popen(
          command, env=env, stdout=log.file, stderr=subprocess.STDOUT
      ),
      log,
  )


def run_set(
    build,
    runs_dir: str,
    slots: list[Optional[str]],
    python: str,
    train_args: Sequence[str],
    poll_s: float = 5.0,
) -> dict[str, int]:
  """Runs every unfinished run, `len(slots)` at a time; re-expands the set
  after each finished run (the chosen rho and teachers become known).

  A run whose workdir a live train.py holds (another sweep, or the same
  command started twice) is skipped and reported, never started beside it.

  Returns:
    Counts: finished, failed, live (held by a run this sweep did not start),
    waiting (never became runnable).
  """
  running, ended = {}, {'failed': set(), 'live': set()}
  try:
    return _run_loop(
        build, runs_dir, slots, python, train_args, poll_s, running, ended
    )
  except KeyboardInterrupt:  # Ctrl-C, or SIGTERM via `raise_interrupt`.
    stop_runs(running)
    print('[sweep] stopped; the same command resumes the set', flush=True)
    raise


def stop_runs(running: dict, grace_s: float = 300.0) -> None:
  """SIGTERM to every run (train.py checkpoints and exits), SIGKILL after
  `grace_s`."""
  for process, _, _ in running.values():
    if process.poll() is None:
      process.send_signal(signal.SIGTERM)
  deadline = time.time() + grace_s
  for process, log, _ in running.values():
    try:
      process.wait(timeout=max(0.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()
    log.close()


def raise_interrupt(signum, frame):
  """A SIGTERM handler that stops `run_set` as Ctrl-C does."""
  del signum, frame
  raise KeyboardInterrupt


def _is_live(runs_dir, spec, live: set) -> bool:
  """Whether another process holds the run's workdir (reported once)."""
  holder = workdir_lock.live_holder(epath.Path(runs_dir) / spec.workdir)
  if holder is None:
    return False
  print(
      f'[sweep] skip {spec.workdir}: a live run holds it, {holder}', flush=True
  )
  live.add(spec.workdir)
  return True


def _run_loop(
    build, runs_dir, slots, python, train_args, poll_s, running, ended
):
  while True:
    runs, waiting = build()
    todo = [
        r
        for r in runs
        if r.workdir not in running
        and r.workdir not in ended['failed'] | ended['live']
        and not is_finished(os.path.join(runs_dir, r.workdir))
        and (not r.after or is_finished(os.path.join(runs_dir, r.after)))
    ]
    busy = {slot for _, _, slot in running.values()}
    free = [i for i in range(len(slots)) if i not in busy]
    while todo and free:
      spec = todo.pop(0)
      if _is_live(runs_dir, spec, ended['live']):
        continue
      slot = free.pop(0)
      process, log = _launch(spec, runs_dir, python, train_args, slots[slot])
      running[spec.workdir] = (process, log, slot)
    if not running:
      return _counts(runs, waiting, runs_dir, ended)
    time.sleep(poll_s)
    for workdir, (process, log, _) in list(running.items()):
      if process.poll() is not None:
        log.close()
        del running[workdir]
        print(
            f'[sweep] {_ended(workdir, process.returncode, ended)}', flush=True
        )


def _ended(workdir: str, code: int, ended: dict) -> str:
  """Records how a run ended; the line the sweep prints for it."""
  if code == 0:
    return f'done: {workdir}'
  if code == workdir_lock.BUSY_EXIT_CODE:
    # Another process took the workdir between the check and the start.
    ended['live'].add(workdir)
    return f'skip {workdir}: a live run holds it (see launch.log)'
  ended['failed'].add(workdir)
  return f'FAILED (exit {code}, see launch.log): {workdir}'


def _counts(runs, waiting, runs_dir, ended) -> dict[str, int]:
  finished = sum(is_finished(os.path.join(runs_dir, r.workdir)) for r in runs)
  blocked = [
      r
      for r in runs
      if not is_finished(os.path.join(runs_dir, r.workdir))
      and r.workdir not in ended['failed'] | ended['live']
  ]
  return {
      'finished': finished,
      'failed': len(ended['failed']),
      'live': len(ended['live']),
      'waiting': len(waiting) + len(blocked),
  }
