"""The cells of the paper's tables from runs: ours over seeds, and the
paper's beside them.

Each cell follows Section 3.1 of the paper:
  * mean test error in percent over seeds with a 95% t-interval;
  * SAM (and every method with a rho): rho chosen by the lowest mean final
    validation_error over the runs with validation_split=True, then the
    test runs (validation_split=False) at that rho. Tables 10 and 11 instead
    fix rho = 0.05;
  * SGD (and mixup): the better of its 1x and 2x-epoch runs (and of the
    mixup alphas), on the test error, as the paper reports it.
"""

import collections
import csv
import dataclasses
import math
from typing import Any, Iterable, Optional

from etils import epath

from results import runs

PAPER_TABLES_CSV = epath.Path(__file__).with_name('paper_tables.csv')

# Paper names -> the model names of models/__init__.py.
PAPER_MODEL_NAMES = {
    'pyramidnet': 'pyramidnet_272_200',
    'pyramidnet_shakedrop': 'pyramidnet_272_200_shakedrop',
}
# Table 5's "Auto augment" line is AutoAugment + cutout for SVHN and cutout
# only for Fashion-MNIST (appendix B.1).
TABLE5_AUGMENT = {
    'svhn_cropped': 'autoaugment_cutout',
    'fashion_mnist': 'cutout',
}
FIXED_RHO = 0.05  # Tables 10 and 11.
# Methods without a rho: the best of their epoch multipliers is reported.
UNPERTURBED = ('sgd', 'mixup', 'bootstrap_sgd', 'bootstrap_mixup')


def _is_perturbing(method: str) -> bool:
  return method not in UNPERTURBED


# The fields that make a row of each table (the rest are blanked).
ROW_FIELDS = {
    '1': ('dataset', 'model', 'augment', 'epochs'),
    '2': ('dataset', 'model', 'epochs'),
    '3': ('dataset', 'model'),
    '4': ('label_noise', 'model'),
    '5': ('dataset', 'model', 'augment', 'epochs'),
    'other': ('dataset', 'model', 'augment', 'epochs', 'label_noise'),
}
ROW_FIELDS['10'], ROW_FIELDS['11'] = ROW_FIELDS['1'], ROW_FIELDS['3']
METRICS = {'2': ('top1_error', 'top5_error'), '4': ('top1_accuracy',)}


@dataclasses.dataclass(frozen=True)
class RowKey:
  table: str
  dataset: str = ''
  model: str = ''
  augment: str = ''
  epochs: Optional[int] = None
  label_noise: float = 0.0


@dataclasses.dataclass
class Cell:
  """One number of a table: ours over seeds, and the paper's."""

  row: RowKey
  method: str
  metric: str
  values: list[float] = dataclasses.field(default_factory=list)
  rho: Optional[float] = None
  choice: str = ''  # Which rho / epochs / alpha the cell reports, and why.
  unfinished: int = 0
  finished_runs: int = 0  # Of this row and method, any rho/epochs/split.
  paper: Optional[float] = None
  paper_text: str = ''  # As printed in the paper, e.g. '2.0'.
  paper_ci95: str = ''
  # The mean fraction of SAM steps its test runs' summaries record.
  sam_fraction: Optional[float] = None

  @property
  def mean(self):
    return runs.mean_and_ci95(self.values)[0] if self.values else None

  @property
  def ci95(self):
    return runs.mean_and_ci95(self.values)[1] if self.values else None


def row_key(run: runs.Run, table: str) -> RowKey:
  fields = {f: getattr(run, f) for f in ROW_FIELDS[table]}
  return RowKey(table=table, **fields)


def metric_value(
    run: runs.Run, metric: str, split: str = 'test'
) -> Optional[float]:
  """A final metric of a run in percent."""
  key = {'top5_error': f'{split}_top5_error'}.get(metric, f'{split}_error')
  if key not in run.final:
    return None
  error = 100.0 * float(run.final[key])
  return 100.0 - error if metric == 'top1_accuracy' else error


def _mean_by(group: Iterable[runs.Run], key, metric: str, split: str):
  groups = collections.defaultdict(list)
  for run in group:
    value = metric_value(run, metric, split)
    if value is not None:
      groups[key(run)].append(value)
  return {k: (sum(v) / len(v), v) for k, v in groups.items()}


def select_rho(
    group: list[runs.Run], metric: str = 'top1_error'
) -> Optional[float]:
  """The rho with the lowest mean final validation error (ties: smaller
  rho)."""
  means = _mean_by(
      [r for r in group if r.validation],
      lambda r: r.rho,
      'top1_error' if metric == 'top1_accuracy' else metric,
      'validation',
  )
  return min(means, key=lambda rho: (means[rho][0], rho)) if means else None


def sam_cell(
    cell: Cell, group: list[runs.Run], fixed_rho: Optional[float]
) -> None:
  """Fills a SAM cell: rho from validation (or fixed), values from test
  runs."""
  test = [r for r in group if not r.validation]
  test_rhos = sorted({r.rho for r in test})
  if fixed_rho is not None:
    cell.rho, cell.choice = fixed_rho, f'rho={fixed_rho:g} fixed'
  elif (rho := select_rho(group)) is not None:
    cell.rho, cell.choice = rho, f'rho={rho:g} on validation'
  elif len(test_rhos) == 1:
    cell.rho = test_rhos[0]
    cell.choice = f'rho={test_rhos[0]:g}, no validation runs'
  elif test_rhos:
    cell.choice = 'no validation runs to choose among test rho ' + ', '.join(
        f'{r:g}' for r in test_rhos
    )
    return
  values = [
      metric_value(r, cell.metric)
      for r in test
      if math.isclose(r.rho, cell.rho or 0.0)
  ]
  cell.values = [v for v in values if v is not None]
  if not cell.values and cell.rho is not None and group:
    cell.choice += '; no finished test runs at it'


def best_of_cell(cell: Cell, group: list[runs.Run]) -> None:
  """Fills an SGD/mixup cell: the best test mean over epochs x and
  alpha."""
  means = _mean_by(
      [r for r in group if not r.validation],
      lambda r: (r.epochs_multiplier, r.mixup_alpha),
      cell.metric,
      'test',
  )
  if not means:
    return
  sign = -1.0 if cell.metric == 'top1_accuracy' else 1.0
  (multiplier, alpha), (_, values) = min(
      means.items(), key=lambda kv: (sign * kv[1][0], kv[0])
  )
  cell.values = values
  tried = sorted(means)
  parts = []
  multipliers = sorted({m for m, _ in tried})
  if len(multipliers) > 1 or multiplier != 1:
    parts.append(
        f'{multiplier:g}x epochs (best of '
        + '/'.join(f'{m:g}x' for m in multipliers)
        + ')'
    )
  if alpha > 0:
    parts.append(f'alpha={alpha:g}')
  cell.choice = ', '.join(parts)


def _canonical_paper_row(row: dict[str, str]) -> dict[str, Any]:
  out = dict(row)
  out['model'] = PAPER_MODEL_NAMES.get(row['model'], row['model'])
  if row['table'] == '5' and row['augmentation'] == 'autoaugment':
    out['augmentation'] = TABLE5_AUGMENT[row['dataset']]
  out['epochs'] = int(row['epochs']) if row['epochs'] else None
  out['label_noise'] = 0.0
  if row['dataset'].startswith('cifar10_noise'):
    out['label_noise'] = int(row['dataset'][len('cifar10_noise') :]) / 100.0
    out['dataset'] = 'cifar10'
  return out


def load_paper(path: epath.PathLike = PAPER_TABLES_CSV) -> list[dict[str, Any]]:
  """The paper's numbers (results/paper_tables.csv), one dict per cell."""
  with epath.Path(path).open() as f:
    return [_canonical_paper_row(row) for row in csv.DictReader(f)]


def paper_matches(paper: dict[str, Any], key: RowKey) -> bool:
  """Whether a paper row belongs to `key` (a blank paper epoch matches any)."""
  fields = ROW_FIELDS[key.table]
  if paper['table'] != key.table:
    return False
  if 'dataset' in fields and paper['dataset'] != key.dataset:
    return False
  if 'model' in fields and paper['model'] != key.model:
    return False
  if 'augment' in fields and paper['augmentation'] != key.augment:
    return False
  if 'label_noise' in fields and not math.isclose(
      paper['label_noise'], key.label_noise
  ):
    return False
  return not (
      'epochs' in fields
      and paper['epochs'] is not None
      and paper['epochs'] != key.epochs
  )


def _paper_row_key(paper: dict[str, Any]) -> RowKey:
  fields = ROW_FIELDS[paper['table']]
  values = {
      'dataset': paper['dataset'],
      'model': paper['model'],
      'augment': paper['augmentation'],
      'epochs': paper['epochs'],
      'label_noise': paper['label_noise'],
  }
  return RowKey(table=paper['table'], **{f: values[f] for f in fields})


def _runs_by_row(all_runs: list[runs.Run]) -> dict[RowKey, list[runs.Run]]:
  """Runs grouped by table row; Tables 10/11 reuse Tables 1/3's runs, and
  exist only with SAM test runs at rho = 0.05."""
  by_row = collections.defaultdict(list)
  for run in all_runs:
    by_row[row_key(run, run.table)].append(run)
    if run.table in ('1', '3'):
      by_row[row_key(run, {'1': '10', '3': '11'}[run.table])].append(run)
  for derived in ('10', '11'):
    if not any(
        r.method == 'sam'
        and not r.validation
        and r.finished
        and math.isclose(r.rho, FIXED_RHO)
        for key, rs in by_row.items()
        if key.table == derived
        for r in rs
    ):
      for key in [k for k in by_row if k.table == derived]:
        del by_row[key]
  return by_row


def _add_paper_rows(by_row: dict, paper: list[dict[str, Any]]) -> None:
  """Adds the paper's rows of every (table, dataset) that has runs (Table 4:
  every noise rate once one has runs)."""
  keys = list(by_row)
  datasets = {(k.table, k.dataset) for k in keys}
  for p in paper:
    if (p['table'], p['dataset']) in datasets or (
        p['table'] == '4' and any(k.table == '4' for k in keys)
    ):
      if not any(paper_matches(p, k) for k in by_row):
        by_row.setdefault(_paper_row_key(p), [])


def _fill(
    cell: Cell, method_runs: list[runs.Run], paper: list[dict[str, Any]]
) -> Cell:
  """Our numbers for one cell from its method's runs, and the paper's."""
  finished = [r for r in method_runs if r.finished]
  cell.finished_runs = len(finished)
  if _is_perturbing(cell.method):
    fixed = FIXED_RHO if cell.row.table in ('10', '11') else None
    sam_cell(cell, finished, fixed)
    # Unfinished runs that could still change this cell.
    cell.unfinished = sum(
        not r.finished
        and (
            (r.validation and fixed is None)
            or (
                not r.validation
                and (cell.rho is None or math.isclose(r.rho, cell.rho))
            )
        )
        for r in method_runs
    )
  else:
    best_of_cell(cell, finished)
    cell.unfinished = len(method_runs) - len(finished)
  reported = [
      r.sam_fraction
      for r in finished
      if not r.validation
      and r.sam_fraction is not None
      and (cell.rho is None or math.isclose(r.rho, cell.rho))
  ]
  if reported:
    cell.sam_fraction = sum(reported) / len(reported)
  if finished and all(metric_value(r, cell.metric) is None for r in finished):
    cell.choice = f'no {cell.metric} in the summaries'
  for p in paper:
    if (
        paper_matches(p, cell.row)
        and p['method'] == cell.method
        and p['metric'] == cell.metric
    ):
      cell.paper, cell.paper_ci95 = float(p['value']), p['ci95']
      cell.paper_text = p['value']
  return cell


def build_cells(
    all_runs: list[runs.Run], paper: list[dict[str, Any]]
) -> list[Cell]:
  """Every cell of every table that has runs, plus the paper's empty cells
  for the datasets (Table 4: noise rates' table) that have runs.

  Args:
    all_runs: from `runs.load_runs`.
    paper: from `load_paper`.

  Returns:
    The cells, in the paper's order of rows.
  """
  by_row = _runs_by_row(all_runs)
  _add_paper_rows(by_row, paper)

  def paper_order(key):
    return next(
        (i for i, p in enumerate(paper) if paper_matches(p, key)), len(paper)
    )

  cells = []
  for key in sorted(by_row, key=paper_order):
    row_runs = by_row[key]
    methods = list(
        dict.fromkeys(
            [p['method'] for p in paper if paper_matches(p, key)]
            + sorted({r.method for r in row_runs})
        )
    )
    for method in methods:
      for metric in METRICS.get(key.table, ('top1_error',)):
        cells.append(
            _fill(
                Cell(key, method, metric),
                [r for r in row_runs if r.method == method],
                paper,
            )
        )
  return cells
