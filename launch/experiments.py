"""The paper's tables as experiment sets: rows x {SAM, SGD} x seeds x rho.

A set expands every row (launch/rows.py) into runs, following Section 3.1:
  * SAM on the test set at the paper's rho (default), or, with a rho grid,
    SAM on the 10% validation split at every rho of the grid, then on the test
    set at the rho with the lowest mean validation error (known only once the
    validation runs have finished: `chosen_rho`);
  * SGD on the test set at 1x and 2x the epochs of the SAM run (the paper's
    doubled-epoch baseline, `epochs_x=2`) for the from-scratch tables;
  * Table 4 adds mixup (alpha in {1, 8, 16, 32}) and the bootstrapped SAM and
    mixup runs, which start once their teacher run has finished;
  * 'fig3' (Figure 3, middle) is SAM only, one row per m, on the test set at
    every rho of the grid.
Every run has its own workdir, `<dataset>/<row>/<method>/seed<k>`, shared by
the tables that contain it (Table 10 reuses Table 1's SGD runs).
"""

import dataclasses
import os
from typing import Callable, Optional, Sequence

from launch import rows as rows_lib
from launch.rows import Row
from sam import methods


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One training run of a set."""

  workdir: str  # Relative to the runs directory.
  config: str  # `configs/x.py:knobs`, everything but the teacher's path.
  row: Row
  method: str  # 'sam', 'sgd', 'mixup', 'bootstrap_sam', 'bootstrap_mixup'.
  validation: bool = False
  after: str = ''  # Workdir of the teacher run that must finish first.

  def command(
      self,
      runs_dir: str,
      python: str = 'python',
      train_args: Sequence[str] = (),
  ) -> list[str]:
    """The train.py command line of this run under `runs_dir`."""
    config = self.config
    if self.after:
      config += ',teacher=' + os.path.join(runs_dir, self.after)
    return [
        python,
        'train.py',
        f'--config={config}',
        f'--workdir={os.path.join(runs_dir, self.workdir)}',
        *train_args,
    ]


def _knobs(row: Row, **knobs) -> str:
  extra = ','.join(
      f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}'
      for k, v in knobs.items()
  )
  return row.config + (',' if not row.config.endswith(':') else '') + extra


def _sam_runs(
    row: Row,
    method: str,
    rho: float,
    seeds: int,
    validation: bool,
    teacher: Optional[Callable[[int], str]] = None,
) -> list[RunSpec]:
  split = 'val' if validation else 'test'
  runs = []
  for seed in range(seeds):
    knobs = dict(
        opt=method.removeprefix('bootstrap_'), rho=float(rho), seed=seed
    )
    if validation:
      knobs['validation'] = 'true'
    runs.append(
        RunSpec(
            f'{row.name}/{method}_rho{rho:g}_{split}/seed{seed}',
            _knobs(row, **knobs),
            row,
            method,
            validation,
            teacher(seed) if teacher else '',
        )
    )
  return runs


def _sgd_runs(row: Row, seeds: int) -> list[RunSpec]:
  """SGD on test at every epoch multiplier of the row."""
  runs = []
  for x in row.sgd_epochs_x:
    for seed in range(seeds):
      knobs = dict(opt='sgd', seed=seed)
      if x != 1:
        knobs['epochs_x'] = float(x)
      runs.append(
          RunSpec(
              f'{row.name}/sgd_x{x:g}/seed{seed}',
              _knobs(row, **knobs),
              row,
              'sgd',
          )
      )
  return runs


def _mixup_runs(row: Row, seeds: int) -> list[RunSpec]:
  """Table 4: mixup at every alpha, and bootstrap on each mixup teacher."""
  runs = []
  for alpha in rows_lib.MIXUP_ALPHAS:
    for seed in range(seeds):
      mixup = f'{row.name}/mixup_a{alpha:g}/seed{seed}'
      knobs = _knobs(row, opt='sgd', mixup=alpha, seed=seed)
      runs.append(RunSpec(mixup, knobs, row, 'mixup'))
      runs.append(
          RunSpec(
              f'{row.name}/bootstrap_mixup_a{alpha:g}/seed{seed}',
              knobs,
              row,
              'bootstrap_mixup',
              after=mixup,
          )
      )
  return runs


def _teacher(row: Row, method: str, rho: float, split: str):
  """seed -> the SAM teacher workdir of a bootstrap run (None for SAM)."""
  if not method.startswith('bootstrap_'):
    return None
  return lambda seed: f'{row.name}/sam_rho{rho:g}_{split}/seed{seed}'


def method_grid(
    row: Row,
    method: str,
    rho_grid: Sequence[float],
    grid_scales: Optional[Sequence[float]] = None,
) -> tuple[float, ...]:
  """The rho grid of `method` in `row`: `rho_grid`, or with `grid_scales`
  the method's own rho (its --methods rho, else the row's) times each scale,
  so that MSAM (rho 3) and ASAM-ON (10) are searched at their own scale."""
  if grid_scales is None:
    return tuple(rho_grid)
  own = dict(row.methods).get(method) or row.rho
  return tuple(round(own * scale, 6) for scale in grid_scales)


def validation_workdirs(
    row: Row,
    method: str,
    rho_grid: Sequence[float],
    grid_seeds: int,
    grid_scales: Optional[Sequence[float]] = None,
) -> list[str]:
  """The validation runs whose best rho a method's test runs take.

  Args:
    row: the row.
    method: the method ('sam', 'bootstrap_sam', ...).
    rho_grid: the sweep's grid.
    grid_seeds: validation runs per rho.
    grid_scales: see `method_grid`.

  Returns:
    Their workdirs, `grid_seeds` per rho of the method's grid.
  """
  return [
      f'{row.name}/{method}_rho{rho:g}_val/seed{seed}'
      for rho in method_grid(row, method, rho_grid, grid_scales)
      for seed in range(grid_seeds)
  ]


def _searched_sam_runs(row, method, seeds, rho_grid, chosen_rho, grid_seeds):
  """(runs, waiting) of SAM (or bootstrap SAM) with rho chosen on
  validation: every grid rho on validation (grid_seeds runs each), then the
  chosen rho on test."""
  runs = []
  for rho in rho_grid:
    runs += _sam_runs(
        row, method, rho, grid_seeds, True, _teacher(row, method, rho, 'val')
    )
  rho = chosen_rho(method) if chosen_rho else None
  if rho is None:
    return runs, [
        RunSpec(
            f'{row.name}/{method}_rhoCHOSEN_test/seed{seed}',
            _knobs(
                row,
                opt=method.removeprefix('bootstrap_'),
                rho='CHOSEN',
                seed=seed,
            ),
            row,
            method,
        )
        for seed in range(seeds)
    ]
  runs += _sam_runs(
      row, method, rho, seeds, False, _teacher(row, method, rho, 'test')
  )
  if method.startswith('bootstrap_'):  # Its teachers, at its own rho.
    runs += _sam_runs(row, 'sam', rho, seeds, False)
  return runs, []


def expand_row(
    row: Row,
    seeds: int = 5,
    rho_grid: Optional[Sequence[float]] = None,
    chosen_rho: Optional[Callable[[str], Optional[float]]] = None,
    fixed_rho: Optional[float] = None,
    test_rho_grid: Optional[Sequence[float]] = None,
    grid_scales: Optional[Sequence[float]] = None,
    grid_seeds: Optional[int] = None,
) -> tuple[list[RunSpec], list[RunSpec]]:
  """The runs of one row.

  Args:
    row: the row.
    seeds: replicas per condition (the paper: 5).
    rho_grid: None: SAM only on test at the row's rho. A grid: SAM on the
      validation split at every rho, then on test at the chosen rho; a
      method that reads no rho (RWP) runs on test at its defaults.
    chosen_rho: method ('sam' or 'bootstrap_sam') -> rho chosen on the
      finished validation runs, or None while they are not all finished.
    fixed_rho: SAM on test at this rho only (Tables 10, 11).
    test_rho_grid: SAM on test at every rho of this grid (Figure 3, middle);
      replaces rho_grid and fixed_rho.
    grid_scales: each method's grid is its own rho times these
      (`method_grid`), instead of rho_grid.
    grid_seeds: validation runs per grid rho (default: seeds).

  Returns:
    (runs that can be defined now, test runs waiting for the rho choice; the
    latter have rho=CHOSEN in their config and are never run).
  """
  runs, waiting = [], []
  if test_rho_grid is not None:
    for rho in test_rho_grid:
      runs += _sam_runs(row, 'sam', rho, seeds, False)
  else:
    table4 = (('sam', None), ('bootstrap_sam', None))
    for method, own_rho in table4 if row.table4 else row.methods:
      searched = rho_grid is not None and methods.reads_rho(
          method.removeprefix('bootstrap_')
      )
      if fixed_rho is not None or not searched:
        rho = (own_rho or row.rho) if fixed_rho is None else fixed_rho
        runs += _sam_runs(
            row, method, rho, seeds, False, _teacher(row, method, rho, 'test')
        )
      else:
        found, wait = _searched_sam_runs(
            row,
            method,
            seeds,
            method_grid(row, method, rho_grid, grid_scales),
            chosen_rho,
            grid_seeds or seeds,
        )
        runs, waiting = runs + found, waiting + wait
  runs += _sgd_runs(row, seeds)
  if row.table4:
    runs += _mixup_runs(row, seeds)
  return runs, waiting


def experiment_set(
    table: str,
    dataset: Optional[str] = None,
    seeds: int = 5,
    rho_grid: Optional[Sequence[float]] = None,
    chosen_rho: Optional[Callable[[Row, str], Optional[float]]] = None,
    rows: Optional[Sequence[Row]] = None,
    grid_scales: Optional[Sequence[float]] = None,
    grid_seeds: Optional[int] = None,
) -> tuple[list[RunSpec], list[RunSpec]]:
  """All runs of a paper table (or of custom `rows`), without duplicates.

  Args:
    table: '1'-'5', '10', '11', 'fig3' (ignored when `rows` is given).
    dataset: only this dataset's rows.
    seeds: replicas per condition.
    rho_grid: see `expand_row`; ignored by Tables 10 and 11 (rho = 0.05);
      for 'fig3' the test grid (default rows.RHO_GRID).
    chosen_rho: (row, method) -> rho chosen on validation, or None.
    rows: custom rows instead of the table's.
    grid_scales, grid_seeds: see `expand_row`.

  Returns:
    (runs, runs waiting for the rho choice).
  """
  if seeds < 1:
    raise ValueError(f'seeds={seeds}; valid: an integer >= 1')
  if rows is None:
    rows = rows_lib.table_rows(table, dataset)
  fixed = rows_lib.FIXED_RHO if table in ('10', '11') else None
  runs, waiting = [], []
  test_grid = tuple(rho_grid or rows_lib.RHO_GRID) if table == 'fig3' else None
  for row in rows:
    r, w = expand_row(
        row,
        seeds,
        None if fixed else rho_grid,
        (lambda m, row=row: chosen_rho(row, m)) if chosen_rho else None,
        fixed,
        test_grid,
        grid_scales,
        grid_seeds,
    )
    runs += r
    waiting += w
  unique = list({r.workdir: r for r in runs}.values())
  return unique, list({r.workdir: r for r in waiting}.values())
