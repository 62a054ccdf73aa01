"""A sweep as Slurm job arrays (`python -m launch.sweep --slurm`).

Every run the sweep can define now is one task of a first array. The SAM
test runs of a rho grid wait for their rho, chosen on the validation runs:
they are a second array submitted with `--dependency=afterok` on the
validation tasks of the first, and each of its tasks reads the chosen rho
when it starts (`python -m launch.slurm_sweep INDEX`, which then execs
srun). Runs that wait for a teacher run of the first array (Table 4's
bootstrap runs) join the second array too.

As the local sweep does, a rerun skips finished runs, runs that a live
train.py holds, and runs for which a job of an earlier submission is still
queued or running (`<runs_dir>/slurm_jobs.json` keeps each run's last job
id); every other run is submitted again and resumes from its checkpoint.
Each array task's run list is part of its script, so the scripts (printed
by `--dry_run`) say everything the jobs will do.
"""

import dataclasses
import json
import os
import re
import shlex
import sys
from typing import Callable, Optional, Sequence

from absl import app
from etils import epath

from launch import local_runs
from launch import slurm
from launch import slurm_job
from results import cells
from results import runs
from sam.run import files

CHOSEN = 'CHOSEN'  # The rho of a test run that waits for its choice.


@dataclasses.dataclass(frozen=True)
class Task:
  """One array task: a run, and for a chosen-rho run its validation runs.

  Attributes:
    workdir: relative to the runs directory (rho'CHOSEN' until chosen).
    args: train.py and its arguments.
    grid: workdirs of the validation runs that choose its rho.
  """

  workdir: str
  args: tuple[str, ...]
  grid: tuple[str, ...] = ()


@dataclasses.dataclass
class Plan:
  """What a submission of the sweep does.

  Attributes:
    first: tasks of the first array.
    second: tasks of the array that waits for the first.
    needs: job ids the second array waits for: tasks of the first (by
      index) and of earlier submissions still queued.
    lines: the runs it skips or cannot submit, one line each.
    finished: runs already finished.
  """

  first: list[Task] = dataclasses.field(default_factory=list)
  second: list[Task] = dataclasses.field(default_factory=list)
  needs: set = dataclasses.field(default_factory=set)
  lines: list[str] = dataclasses.field(default_factory=list)
  finished: int = 0


def ledger_keys(workdir: str) -> tuple[str, str]:
  """A run's keys in the ledger.

  Args:
    workdir: the run's, relative to the runs directory.

  Returns:
    The workdir, and the one a test run had while it waited for its rho
    (the second array's key for it).
  """
  return workdir, re.sub(r'_rho[^/_]+_test/', f'_rho{CHOSEN}_test/', workdir)


class _Planner:
  """Sorts a sweep's runs into the two arrays (see `plan`)."""

  def __init__(self, runs_dir, job, extra, ledger, alive):
    self.runs_dir, self.job, self.extra = runs_dir, job, extra
    self.ledger, self.alive = ledger, alive
    self.plan = Plan()
    self.first_index = {}

  def queued_job(self, workdir: str) -> Optional[str]:
    for key in ledger_keys(workdir):
      if self.ledger.get(key) in self.alive:
        return self.ledger[key]
    return None

  def task(self, spec, grid=()) -> Task:
    config = spec.command(self.runs_dir)[2].removeprefix('--config=')
    workdir = os.path.join(self.runs_dir, spec.workdir)
    args = slurm_job.train_args(self.job, config, workdir, '', self.extra)
    return Task(spec.workdir, tuple(args), tuple(grid))

  def ready(self, workdir: str) -> bool:
    """Whether a run another waits for is finished or will have run by the
    time the second array starts; records the wait."""
    if local_runs.is_finished(os.path.join(self.runs_dir, workdir)):
      return True
    if workdir in self.first_index:
      self.plan.needs.add(self.first_index[workdir])
      return True
    job_id = self.queued_job(workdir)
    if job_id:
      self.plan.needs.add(job_id)
    return job_id is not None

  def skipped(self, workdir: str) -> bool:
    """Whether the run needs no job now (finished, queued, live)."""
    plan = self.plan
    if local_runs.is_finished(os.path.join(self.runs_dir, workdir)):
      plan.finished += 1
      return True
    job_id = self.queued_job(workdir)
    if job_id:
      plan.lines.append(f'skip {workdir}: job {job_id} is queued or running')
      return True
    holder = slurm.live_holder(epath.Path(self.runs_dir) / workdir)
    if holder is not None:
      plan.lines.append(f'skip {workdir}: a live run holds it, {holder}')
      return True
    return False


def plan(
    runs_and_waiting,
    runs_dir: str,
    job: slurm_job.Job,
    extra: Sequence[str],
    grid_of: Callable,
    alive: Callable[[Sequence[str]], set],
) -> Plan:
  """Sorts a sweep's runs into the first array and the second.

  Args:
    runs_and_waiting: launch.sweep.build_set's (runs, waiting for rho).
    runs_dir: the absolute runs directory.
    job: every run's resources.
    extra: train.py arguments of every run.
    grid_of: a waiting RunSpec -> the validation workdirs of its rho.
    alive: job ids -> those still queued or running (slurm.queued).

  Returns:
    The plan. A run that waits for a run neither finished nor in this
    plan's arrays (held by a live run outside Slurm, or waiting itself, as
    Table 4's bootstrap runs of a rho grid do) is left for a later rerun.
  """
  all_runs, waiting = runs_and_waiting
  ledger = slurm.read_ledger(runs_dir)
  planner = _Planner(runs_dir, job, extra, ledger, alive(list(ledger.values())))
  result = planner.plan
  later = []
  for spec in all_runs:
    if planner.skipped(spec.workdir):
      continue
    if spec.after and not local_runs.is_finished(
        os.path.join(runs_dir, spec.after)
    ):
      later.append(spec)
      continue
    planner.first_index[spec.workdir] = len(result.first)
    result.first.append(planner.task(spec))
  rerun = 'rerun the sweep when it has finished'
  for spec in later:
    if planner.ready(spec.after):
      result.second.append(planner.task(spec))
    else:
      result.lines.append(
          f'wait {spec.workdir}: its teacher {spec.after} is not in this '
          f'submission (a live run holds it, or it waits itself); {rerun}'
      )
  for spec in waiting:
    job_id = planner.queued_job(spec.workdir)
    if job_id:
      result.lines.append(f'skip {spec.workdir}: job {job_id} is queued')
    elif spec.method.startswith('bootstrap_'):
      result.lines.append(
          f'wait {spec.workdir}: its teacher runs at the rho its validation '
          f'runs choose; {rerun.replace("it has", "they have")}'
      )
    elif all([planner.ready(w) for w in grid_of(spec)]):
      result.second.append(planner.task(spec, grid_of(spec)))
    else:
      result.lines.append(
          f'wait {spec.workdir}: live runs outside Slurm hold some of its '
          f'validation runs; {rerun.replace("it has", "they have")}'
      )
  return result


def dependency(needs: set, first_id: str, first_size: int) -> str:
  """The afterok list of the second array.

  Args:
    needs: Plan.needs: indices of tasks of the first array, and ids of
      earlier jobs.
    first_id: the first array's job id.
    first_size: its number of tasks.

  Returns:
    'A' (the whole first array, when it needs all of its tasks) or 'A_0:A_2'
    (the tasks it needs), then the earlier jobs, ':'-separated.
  """
  tasks = sorted(n for n in needs if isinstance(n, int))
  ids = sorted(n for n in needs if isinstance(n, str))
  if tasks and len(tasks) == first_size:
    ids.insert(0, first_id)
  else:
    ids = [f'{first_id}_{i}' for i in tasks] + ids
  return ':'.join(ids)


def array_script(
    job: slurm_job.Job,
    tasks: Sequence[Task],
    runs_dir: str,
    after: str,
    name: str,
) -> str:
  """The sbatch script of one array; its tasks' list is part of it.

  Args:
    job: every task's resources (job.log_dir holds the logs).
    tasks: the runs, task i the i-th.
    runs_dir: the absolute runs directory.
    after: the afterok dependency ('' for none).
    name: the array's job name.

  Returns:
    The script's text.
  """
  job = dataclasses.replace(job, job_name=name)
  head = json.dumps(
      {
          'runs_dir': runs_dir,
          'python': job.python,
          'srun': slurm_job.srun_command(job, '', [])[:-1],
      }
  )
  # One task a line, the first line task 0.
  listing = (
      head[:-1]
      + ', "tasks": [\n'
      + ',\n'.join(json.dumps(dataclasses.asdict(t)) for t in tasks)
      + '\n]}'
  )
  command = (
      f'{shlex.quote(job.python)} -m launch.slurm_sweep '
      f'"$SLURM_ARRAY_TASK_ID" "$SLURM_ARRAY_JOB_ID" <<\'TASKS\' &\n'
      f'{listing}\nTASKS'
  )
  output = os.path.join(job.log_dir, f'{name}-%A_%a.log')
  what = f'{len(tasks)} run(s) of {runs_dir}, one per array task'
  if after:
    what += ', each at the rho its validation runs chose'
  return slurm_job.batch_script(
      job, command, output, what, f'0-{len(tasks) - 1}', after
  )


def first_script(the_plan: Plan, job: slurm_job.Job, runs_dir: str) -> str:
  """The script of the first array, named as the job.

  Args:
    the_plan: the submission's plan.
    job: every task's resources.
    runs_dir: the absolute runs directory.

  Returns:
    The script's text.
  """
  return array_script(job, the_plan.first, runs_dir, '', job.job_name)


def second_script(
    the_plan: Plan, job: slurm_job.Job, runs_dir: str, first_id: str
) -> str:
  """The script of the second array, after the tasks it needs.

  Args:
    the_plan: the submission's plan.
    job: every task's resources.
    runs_dir: the absolute runs directory.
    first_id: the first array's job id.

  Returns:
    The script's text.
  """
  after = dependency(the_plan.needs, first_id, len(the_plan.first))
  return array_script(
      job, the_plan.second, runs_dir, after, f'{job.job_name}-after'
  )


def _launch_record(runs_dir: str, task: Task, job_id: str) -> None:
  """launch.json, as the local sweep writes it: results.tables counts the
  run before it starts."""
  workdir = epath.Path(runs_dir) / task.workdir
  workdir.mkdir(parents=True, exist_ok=True)
  config = task.args[1].removeprefix('--config=')
  try:
    record = local_runs.load_config(config).to_dict()
  except Exception:  # pylint: disable=broad-except
    record = {}  # A teacher's config is read when it has finished.
  files.write_text_atomically(
      workdir / 'launch.json',
      json.dumps(
          {'command': list(task.args), 'config': record, 'slurm_job': job_id},
          default=str,
      ),
  )


def submit(the_plan: Plan, job: slurm_job.Job, runs_dir: str) -> list[str]:
  """Submits the plan's arrays and records their runs.

  Args:
    the_plan: the submission's plan.
    job: every task's resources.
    runs_dir: the absolute runs directory.

  Returns:
    The arrays' job ids.

  Raises:
    RuntimeError: sbatch's error line.
  """
  ids, ledger = [], {}
  first_id = ''
  if the_plan.first:
    first_id = slurm.submit(first_script(the_plan, job, runs_dir))
    ids.append(first_id)
    for i, task in enumerate(the_plan.first):
      ledger[task.workdir] = f'{first_id}_{i}'
      _launch_record(runs_dir, task, ledger[task.workdir])
  if the_plan.second:
    second_id = slurm.submit(second_script(the_plan, job, runs_dir, first_id))
    ids.append(second_id)
    for i, task in enumerate(the_plan.second):
      ledger[task.workdir] = f'{second_id}_{i}'
      if not task.grid:
        _launch_record(runs_dir, task, ledger[task.workdir])
  slurm.record_jobs(runs_dir, ledger)
  return ids


def resolve(listing: dict, index: int, array_id: str) -> tuple[list[str], str]:
  """An array task's command, its rho read from its validation runs.

  Args:
    listing: the array's task list (`array_script`).
    index: SLURM_ARRAY_TASK_ID.
    array_id: SLURM_ARRAY_JOB_ID.

  Returns:
    (the srun command, a line saying what it runs).

  Raises:
    ValueError: a validation run is not finished, or chose no rho.
  """
  task = Task(**listing['tasks'][index])
  runs_dir = listing['runs_dir']
  workdir, args = task.workdir, list(task.args)
  line = f'[slurm] task {index}: {workdir}'
  if task.grid:
    found = []
    for grid_workdir in task.grid:
      path = os.path.join(runs_dir, grid_workdir)
      if not local_runs.is_finished(path):
        raise ValueError(f'{grid_workdir} has not finished: no rho chosen')
      found += runs.load_runs(path)
    rho = cells.select_rho(found)
    if rho is None:
      raise ValueError(f'no validation error in {task.grid[0]} and the rest')
    workdir = workdir.replace(f'_rho{CHOSEN}_', f'_rho{rho:g}_')
    args = [
        a.replace(f'_rho{CHOSEN}_', f'_rho{rho:g}_').replace(
            f'rho={CHOSEN}', f'rho={rho:g}'
        )
        for a in args
    ]
    task = Task(workdir, tuple(args))
    _launch_record(runs_dir, task, f'{array_id}_{index}')
    line = f'{line} at rho={rho:g}, chosen on {len(found)} validation runs'
  return [*listing['srun'], listing['python'], *args], line


def main(argv):
  # Run by an array task's script: argv is its index and its array's id.
  index, array_id = int(argv[1]), argv[2]
  try:
    command, line = resolve(json.loads(sys.stdin.read()), index, array_id)
  except ValueError as e:
    sys.exit(f'error: {e}')
  print(line, flush=True)
  os.execvp(command[0], command)


if __name__ == '__main__':
  app.run(main)
