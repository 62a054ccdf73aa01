r"""Runs a paper table's experiment set (or a custom one) on this host.

  python -m launch.sweep --table=1 --dataset=cifar10 --dry_run
  python -m launch.sweep --table=1 --dataset=cifar10 --rho_grid --seeds=5 \
      --runs_dir=runs --gpus_per_run=1
  python -m launch.sweep --config_file=configs/quickstart.py \
      --rows='model=wrn10_2;model=wrn10_1' --seeds=3 \
      --rho_grid --rho_values=0.02,0.05,0.1 --runs_dir=runs/quickstart
  python -m launch.sweep --table=1 --dataset=cifar10 --rho_grid --seeds=5 \
      --runs_dir=/shared/runs --slurm --gpus_per_node=1 --partition=gpu \
      --time=2-00:00:00 --venv=$HOME/sam/.venv

`--dry_run` prints every command. Otherwise the runs go one per GPU
(CUDA_VISIBLE_DEVICES; `--gpus_per_run=all` gives each run every GPU, one run
at a time), or `--parallel` at a time on a host without GPUs. A run whose
workdir holds a finished summary.json is skipped; an unfinished one is
relaunched with the same command, and train.py resumes it from its last
checkpoint, so rerunning the sweep after a crash or preemption continues it;
a run that a live train.py holds is skipped and reported (the runner is
launch/local_runs.py). With `--rho_grid` the SAM test runs start once all validation runs of their
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

`--slurm` submits the set to a Slurm cluster instead, as job arrays, one run
per array task (launch/slurm_sweep.py): the runs it can define now in one
array, the SAM test runs of a rho grid in a second one that starts after
their validation tasks succeed (afterok) and reads the chosen rho then. The
job flags are launch/slurm.py's (nodes, GPUs per node, partition, account,
qos, time, venv or setup line); `--dry_run` prints the sbatch scripts.
Finished runs, live ones and runs whose earlier job is still queued are
skipped; rerunning the command resubmits the rest, which resume.
"""

import os
import shlex
import signal
import sys
from typing import Optional, Sequence

from absl import app
from absl import flags

from launch import experiments
from launch import local_runs
from launch import rows as rows_lib
from launch import slurm
from launch import slurm_sweep
from results import cells
from results import runs
from sam import methods
from sam.run import files

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
flags.DEFINE_list(
    'rho_scales',
    None,
    'With --rho_grid: each method searches its own rho (its --methods rho '
    'or its config default) times these, e.g. 0.5,1,2, instead of '
    '--rho_values.',
)
flags.DEFINE_integer(
    'grid_seeds', None, 'Validation runs per grid rho (default: --seeds).'
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
flags.DEFINE_bool(
    'slurm',
    False,
    'Submit the set to Slurm as job arrays (the job flags below) instead '
    'of running it on this host.',
)
slurm.define_job_flags()


def rho_chooser(
    runs_dir: str,
    rho_values: Sequence[float],
    seeds: int,
    grid_scales: Optional[Sequence[float]] = None,
):
  """(row, method) -> rho with the lowest mean validation error, once every
  validation run of the row and method (`seeds` per rho of its grid,
  `experiments.method_grid`) has finished; else None."""

  def choose(row: experiments.Row, method: str) -> Optional[float]:
    found = []
    for workdir in experiments.validation_workdirs(
        row, method, rho_values, seeds, grid_scales
    ):
      workdir = os.path.join(runs_dir, workdir)
      if not local_runs.is_finished(workdir):
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
    grid_scales: Optional[Sequence[float]] = None,
    grid_seeds: Optional[int] = None,
):
  """(runs, runs waiting for their rho) of a table or a custom set."""
  custom = None
  if config_file:
    if not os.path.exists(config_file):
      raise ValueError(f'--config_file={config_file!r} does not exist')
    knob_sets = rows.split(';') if rows else ['']
    name = (
        dataset
        or local_runs.load_config(config_file + ':' + knob_sets[0]).data.dataset
    )
    custom = rows_lib.custom_rows(
        config_file,
        knob_sets,
        lambda k, method: local_runs.load_config(
            f'{config_file}:{k},opt={method}'
            if k
            else f'{config_file}:opt={method}'
        ).sam.rho,
        name,
        epochs_x,
        parse_methods(method_specs),
    )
  elif table is None:
    raise ValueError(
        'give --table (one of '
        f'{", ".join(rows_lib.TABLES)}) or --config_file'
    )
  chooser = None
  if rho_grid:
    chooser = rho_chooser(runs_dir, rho_grid, grid_seeds or seeds, grid_scales)
  return experiments.experiment_set(
      table or 'custom',
      dataset,
      seeds,
      rho_grid,
      chooser,
      custom,
      grid_scales,
      grid_seeds,
  )


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


def submit_to_slurm(runs_and_waiting, runs_dir, grid_of, train_args, dry_run):
  """launch.sweep --slurm: the plan's arrays, printed or submitted.

  Args:
    runs_and_waiting: build_set's (runs, waiting for rho).
    runs_dir: the absolute runs directory.
    grid_of: a waiting run -> the validation workdirs of its rho.
    train_args: train.py arguments of every run.
    dry_run: print the sbatch scripts instead of submitting them.

  Returns:
    The exit status.
  """
  default_logs = '' if files.is_remote(runs_dir) else runs_dir + '/slurm_logs'
  try:
    job = slurm.job_from_flags(default_logs)
    plan = slurm_sweep.plan(
        runs_and_waiting, runs_dir, job, train_args, grid_of, slurm.queued
    )
  except (ValueError, RuntimeError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  for line in plan.lines:
    print(f'[sweep] {line}')
  counts = (
      f'{len(plan.first)} runs now, {len(plan.second)} after them, '
      f'{plan.finished} finished, {len(plan.lines)} skipped or waiting'
  )
  if dry_run:
    if plan.first:
      print(slurm_sweep.first_script(plan, job, runs_dir))
    if plan.second:
      print(slurm_sweep.second_script(plan, job, runs_dir, 'FIRST'))
    print(f'# {counts}')
    return 0
  try:
    os.makedirs(job.log_dir, exist_ok=True)
    ids = slurm_sweep.submit(plan, job, runs_dir)
  except RuntimeError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(
      f'[sweep] slurm: {counts}; job arrays: {" ".join(ids) or "none"}; '
      f'tables: python -m results.tables --runs_dir={runs_dir}'
  )
  return 0


def main(argv):
  del argv
  f = flags.FLAGS
  rho_grid = [float(r) for r in f.rho_values] if f.rho_grid else None
  train_args = shlex.split(f.train_args)
  # Jobs run in the checkout on the cluster: an absolute runs directory.
  runs_dir = str(files.resolve(f.runs_dir)) if f.slurm else f.runs_dir
  grid_seeds = f.grid_seeds or f.seeds
  grid_scales = [float(x) for x in f.rho_scales] if f.rho_scales else None

  def build():
    return build_set(
        runs_dir,
        f.table,
        f.dataset,
        f.seeds,
        rho_grid,
        f.config_file,
        f.rows,
        [float(x) for x in f.epochs_x],
        f.methods,
        grid_scales,
        f.grid_seeds,
    )

  python = 'python' if f.dry_run and f.python == sys.executable else f.python
  try:
    runs_and_waiting = build()
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  if f.slurm:
    sys.exit(
        submit_to_slurm(
            runs_and_waiting,
            runs_dir,
            lambda spec: experiments.validation_workdirs(
                spec.row, spec.method, rho_grid, grid_seeds, grid_scales
            ),
            train_args,
            f.dry_run,
        )
    )
  if f.dry_run:
    try:
      print_dry_run(*runs_and_waiting, f.runs_dir, python, train_args)
    except BrokenPipeError:
      # The reader stopped early (`--dry_run | head`): not an error. Point
      # stdout at /dev/null so that the flush at exit does not fail again.
      os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return
  slots = local_runs.gpu_slots(f.gpus_per_run) or [None] * max(1, f.parallel)
  signal.signal(signal.SIGTERM, local_runs.raise_interrupt)
  counts = local_runs.run_set(
      build, f.runs_dir, slots, python, train_args, f.poll_s
  )
  print(
      f'[sweep] {counts}; tables: python -m results.tables '
      f'--runs_dir={f.runs_dir}'
  )
  if counts['failed']:
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
