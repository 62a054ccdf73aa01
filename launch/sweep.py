r"""Runs a paper table's experiment set (or a custom one) on this host.

  python -m launch.sweep --table=1 --dataset=cifar10 --dry_run
  python -m launch.sweep --table=1 --dataset=cifar10 --rho_grid --seeds=5 \
      --runs_dir=runs --gpus_per_run=1
  python -m launch.sweep --config_file=configs/quickstart.py \
      --rows='model=wrn10_2;model=wrn10_1' --seeds=3 \
      --rho_grid --rho_values=0.02,0.05,0.1 --runs_dir=runs/quickstart

`--dry_run` prints every command. Otherwise the runs go one per GPU
(CUDA_VISIBLE_DEVICES; `--gpus_per_run=all` gives each run every GPU, one run
at a time), or `--parallel` at a time on a host without GPUs. A run whose
workdir holds a finished summary.json is skipped; an unfinished one is
relaunched with the same command, and train.py resumes it from its last
checkpoint, so rerunning the sweep after a crash or preemption continues it.
With `--rho_grid` the SAM test runs start once all validation runs of their
row have finished, at the rho with the lowest mean validation error. Each run
logs to `<workdir>/launch.log`; `<workdir>/launch.json` holds its command
and config, so `python -m results.tables` counts runs that have not started.

`--table=fig3` is Figure 3 (middle): SAM on ResNet-32, CIFAR-10, for each m
of rows.M_SHARPNESS_M at every rho of the grid (--rho_values with
--rho_grid, else rows.RHO_GRID), on test; `python -m results.figures`
then draws test error against rho per m.

The paper configs fix the examples per replica (config.optim.replica_batch_size,
32 on CIFAR), so a run on one GPU trains as the paper's 8 did. `--runs_dir`
may be a gs:// bucket: each run's output is spooled locally and appended to
its `launch.log` there when the run ends.
"""

import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from typing import Optional, Sequence

from absl import app
from absl import flags
from etils import epath

from launch import experiments
from launch import rows as rows_lib
from results import cells
from results import runs
from sam import methods
from sam.run import workdir_lock

flags.DEFINE_string(
    'table', None, f'Paper table: {", ".join(rows_lib.TABLES)}.'
)
flags.DEFINE_string('dataset', None, 'Only the rows of this dataset.')
flags.DEFINE_bool(
    'rho_grid',
    False,
    'Choose rho on the validation split over '
    'the grid, then run the chosen rho on test.',
)
flags.DEFINE_list(
    'rho_values', [str(r) for r in rows_lib.RHO_GRID], 'The rho grid.'
)
flags.DEFINE_integer('seeds', 5, 'Replicas per condition.')
flags.DEFINE_bool('dry_run', False, 'Print the commands, run nothing.')
flags.DEFINE_string('runs_dir', 'runs', 'Root of the run workdirs.')
flags.DEFINE_enum('gpus_per_run', '1', ['1', 'all'], 'GPUs per run.')
flags.DEFINE_integer('parallel', 1, 'Runs at a time on a host without GPUs.')
flags.DEFINE_string('config_file', None, 'Custom set: the config file.')
flags.DEFINE_string(
    'rows',
    '',
    "Custom set: ';'-separated knob strings, one "
    "per row ('' is the config's defaults).",
)
flags.DEFINE_list('epochs_x', ['1', '2'], 'Custom set: SGD epoch multipliers.')
flags.DEFINE_list(
    'methods',
    ['sam'],
    'Custom set: the perturbing methods (sam.methods names), each run at '
    "the row's rho or at its own as name:rho (e.g. sam,gsam,msam:0.5).",
)
flags.DEFINE_string(
    'train_args',
    '',
    'Extra train.py arguments for every run, '
    'e.g. "--config.data.data_dir=/data".',
)
flags.DEFINE_string('python', sys.executable, 'Python that runs train.py.')
flags.DEFINE_float('poll_s', 5.0, 'Seconds between checks of running runs.')


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


def rho_chooser(runs_dir: str, rho_values: Sequence[float], seeds: int):
  """(row, method) -> rho with the lowest mean validation error, once every
  validation run of the row and method has finished; else None."""

  def choose(row: experiments.Row, method: str) -> Optional[float]:
    found = []
    for rho in rho_values:
      for seed in range(seeds):
        workdir = os.path.join(
            runs_dir, row.name, f'{method}_rho{rho:g}_val', f'seed{seed}'
        )
        if not is_finished(workdir):
          return None
        found += runs.load_runs(workdir)
    return cells.select_rho(found)

  return choose


def parse_methods(specs: Sequence[str]) -> list[tuple[str, float | None]]:
  """--methods entries ('name' or 'name:rho') as (name, rho or None).

  Args:
    specs: the entries.

  Returns:
    The pairs, in order.

  Raises:
    ValueError: an unknown name (listing the valid ones) or a bad rho.
  """
  parsed = []
  for spec in specs:
    name, _, rho = spec.partition(':')
    if name not in methods.METHODS or name == 'sgd':
      valid = sorted(set(methods.METHODS) - {'sgd'})
      raise ValueError(f'--methods: unknown method {name!r}; valid: {valid}')
    try:
      parsed.append((name, float(rho) if rho else None))
    except ValueError:
      raise ValueError(f'--methods: {spec!r}: rho must be a number') from None
  return parsed


def build_set(
    runs_dir: str,
    table: Optional[str],
    dataset: Optional[str],
    seeds: int,
    rho_grid: Optional[Sequence[float]],
    config_file: Optional[str] = None,
    rows: str = '',
    epochs_x: Sequence[float] = (1.0, 2.0),
    method_specs: Sequence[str] = ('sam',),
):
  """(runs, runs waiting for their rho) of a table or a custom set."""
  custom = None
  if config_file:
    if not os.path.exists(config_file):
      raise ValueError(f'--config_file={config_file!r} does not exist')
    knob_sets = rows.split(';') if rows else ['']
    name = dataset or load_config(config_file + ':' + knob_sets[0]).data.dataset
    custom = rows_lib.custom_rows(
        config_file,
        knob_sets,
        lambda k: load_config(f'{config_file}:{k}').sam.rho,
        name,
        epochs_x,
        parse_methods(method_specs),
    )
  elif table is None:
    raise ValueError(
        'give --table (one of '
        f'{", ".join(rows_lib.TABLES)}) or --config_file'
    )
  chooser = rho_chooser(runs_dir, rho_grid, seeds) if rho_grid else None
  return experiments.experiment_set(
      table or 'custom', dataset, seeds, rho_grid, chooser, custom
  )


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


def _is_remote(path) -> bool:
  return '://' in str(path)


def _write_record(path: epath.Path, record: dict) -> None:
  """Writes a JSON record that a reader (results.tables) never sees half
  written: locally through a renamed temporary file; a Cloud Storage upload
  is all-or-nothing already (and a rename there is a copy)."""
  text = json.dumps(record, default=str)
  if _is_remote(path):
    path.write_text(text)
    return
  temporary = path.with_name(path.name + '.tmp')
  temporary.write_text(text)
  temporary.replace(path)


class RunLog:
  """A run's output, kept in `<workdir>/launch.log`.

  The child process needs a local file: for a remote workdir (gs://) the
  output goes to a local spool file, appended to the workdir's log when the
  run ends.
  """

  def __init__(self, workdir: epath.Path):
    self.target = workdir / 'launch.log'
    self.remote = _is_remote(workdir)
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
  _write_record(workdir / 'launch.json', {'command': command, 'config': config})
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
  except KeyboardInterrupt:  # Ctrl-C, or SIGTERM via `_raise_interrupt`.
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


def _raise_interrupt(signum, frame):
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


def print_dry_run(runs, waiting, runs_dir, python, train_args) -> None:
  for spec in runs:
    note = f'  # after {spec.after}' if spec.after else ''
    print(shlex.join(spec.command(runs_dir, python, train_args)) + note)
  if waiting:
    print(
        f'# {len(waiting)} SAM test runs wait for the rho chosen on their '
        'validation runs:'
    )
    for spec in waiting:
      print('# ' + shlex.join(spec.command(runs_dir, python, train_args)))
  print(f'# {len(runs)} commands, {len(waiting)} waiting for rho')


def main(argv):
  del argv
  f = flags.FLAGS
  rho_grid = [float(r) for r in f.rho_values] if f.rho_grid else None
  train_args = shlex.split(f.train_args)

  def build():
    return build_set(
        f.runs_dir,
        f.table,
        f.dataset,
        f.seeds,
        rho_grid,
        f.config_file,
        f.rows,
        [float(x) for x in f.epochs_x],
        f.methods,
    )

  python = 'python' if f.dry_run and f.python == sys.executable else f.python
  try:
    runs_and_waiting = build()
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  if f.dry_run:
    try:
      print_dry_run(*runs_and_waiting, f.runs_dir, python, train_args)
    except BrokenPipeError:
      # The reader stopped early (`--dry_run | head`): not an error. Point
      # stdout at /dev/null so that the flush at exit does not fail again.
      os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return
  slots = gpu_slots(f.gpus_per_run) or [None] * max(1, f.parallel)
  signal.signal(signal.SIGTERM, _raise_interrupt)
  counts = run_set(build, f.runs_dir, slots, python, train_args, f.poll_s)
  print(
      f'[sweep] {counts}; tables: python -m results.tables '
      f'--runs_dir={f.runs_dir}'
  )
  if counts['failed']:
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
