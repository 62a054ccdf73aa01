r"""Finished runs back into the paper's tables, with the paper's numbers beside.

  python -m results.tables --runs=DIR [--out=DIR]

reads every `summary.json` under DIR (and counts every run directory that has
no finished summary yet), and writes `tables.md`, one wide CSV per table in the
paper's layout (`table1.csv`, ...), the long form `cells.csv` and
`unfinished.txt` to `--out` (default `DIR/tables`).

A run's identity comes from `summary["config"]` only: dataset, model, augment,
num_epochs (the row) and epochs_multiplier, optimizer, sam.rho, seed,
validation_split, label_noise (and, for Table 4, mixup_alpha and
bootstrap_teacher_workdir). Each cell follows Section 3.1 of the paper:
  * mean test error in percent over seeds with a 95% t-interval;
  * SAM: rho chosen by the lowest mean final validation_error over the runs
    with validation_split=True, then the test runs (validation_split=False) at
    that rho. Tables 10 and 11 instead fix rho = 0.05;
  * SGD (and mixup): the better of its 1x and 2x-epoch runs (and of the mixup
    alphas), on the test error, as the paper reports it.
"""

import collections
import csv
import dataclasses
import json
import math
import os
import pathlib
from typing import Any, Iterable, Optional

from absl import app
from absl import flags

PAPER_TABLES_CSV = pathlib.Path(__file__).with_name('paper_tables.csv')

# Paper names -> the model names of models/__init__.py.
PAPER_MODEL_NAMES = {
    'pyramidnet': 'pyramidnet_272_200',
    'pyramidnet_shakedrop': 'pyramidnet_272_200_shakedrop',
}
# Table 5's "Auto augment" line is AutoAugment + cutout for SVHN and cutout
# only for Fashion-MNIST (appendix B.1).
TABLE5_AUGMENT = {'svhn_cropped': 'autoaugment_cutout', 'fashion_mnist': 'cutout'}
FIXED_RHO = 0.05  # Tables 10 and 11.


# ----------------------------------------------------------------------------
# Student-t confidence intervals (no scipy: the regularised incomplete beta).


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
  """Continued fraction of I_x(a, b), evaluated by the modified Lentz method."""
  tiny = 1e-300
  c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
  d = 1.0 / (d if abs(d) > tiny else tiny)
  h = d
  for m in range(1, 500):
    for coefficient in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                        -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
      d = 1.0 + coefficient * d
      d = 1.0 / (d if abs(d) > tiny else tiny)
      c = 1.0 + coefficient / c
      c = c if abs(c) > tiny else tiny
      h *= c * d
    if abs(c * d - 1.0) < 1e-15:
      break
  return h


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
  """I_x(a, b) for a, b > 0 and x in [0, 1]."""
  if x <= 0.0:
    return 0.0
  if x >= 1.0:
    return 1.0
  log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
               + a * math.log(x) + b * math.log1p(-x))
  # The fraction converges fast only on this side of the mode.
  if x < (a + 1.0) / (a + b + 2.0):
    return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
  return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def student_t_cdf(t: float, dof: float) -> float:
  """P(T <= t) for Student's t with `dof` degrees of freedom."""
  tail = 0.5 * regularized_incomplete_beta(dof / 2.0, 0.5, dof / (dof + t * t))
  return 1.0 - tail if t >= 0 else tail


def student_t_quantile(p: float, dof: float) -> float:
  """The p-quantile of Student's t, e.g. student_t_quantile(0.975, 4) = 2.776."""
  if not 0.0 < p < 1.0:
    raise ValueError(f'p must be in (0, 1), got {p}')
  if dof <= 0:
    raise ValueError(f'dof must be > 0, got {dof}')
  if p < 0.5:
    return -student_t_quantile(1.0 - p, dof)
  lo, hi = 0.0, 1.0
  while student_t_cdf(hi, dof) < p:
    lo, hi = hi, 2.0 * hi
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if student_t_cdf(mid, dof) < p else (lo, mid)
  return 0.5 * (lo + hi)


def mean_and_ci95(values: list[float]) -> tuple[float, Optional[float]]:
  """Mean and half-width of the two-sided 95% t-interval (None below 2 values)."""
  n = len(values)
  mean = sum(values) / n
  if n < 2:
    return mean, None
  std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
  return mean, student_t_quantile(0.975, n - 1) * std / math.sqrt(n)


# ----------------------------------------------------------------------------
# Runs.


def _get(config: dict[str, Any], dotted: str, default=None):
  node = config
  for part in dotted.split('.'):
    if not isinstance(node, dict) or part not in node or node[part] is None:
      return default
    node = node[part]
  return node


@dataclasses.dataclass(frozen=True)
class Run:
  """One run directory: its identity (from its config) and final numbers."""
  workdir: str
  config: dict[str, Any]
  finished: bool
  final: dict[str, float]

  dataset = property(lambda self: _get(self.config, 'dataset', ''))
  model = property(lambda self: _get(self.config, 'model', ''))
  augment = property(lambda self: _get(self.config, 'augment', ''))
  epochs = property(lambda self: _get(self.config, 'num_epochs'))
  epochs_multiplier = property(
      lambda self: _get(self.config, 'epochs_multiplier', 1))
  total_epochs = property(
      lambda self: (self.epochs or 0) * self.epochs_multiplier)
  optimizer = property(lambda self: _get(self.config, 'optimizer', 'sam'))
  rho = property(lambda self: float(_get(self.config, 'sam.rho', 0.0)))
  m = property(lambda self: _get(self.config, 'sam.m'))
  seed = property(lambda self: _get(self.config, 'seed', 0))
  validation = property(
      lambda self: bool(_get(self.config, 'validation_split', False)))
  label_noise = property(
      lambda self: float(_get(self.config, 'label_noise', 0.0)))
  mixup_alpha = property(
      lambda self: float(_get(self.config, 'mixup_alpha', 0.0)))
  bootstrap = property(
      lambda self: bool(_get(self.config, 'bootstrap_teacher_workdir', '')))

  @property
  def method(self) -> str:
    """'sam', 'sgd', 'mixup', 'bootstrap_sam', 'bootstrap_mixup', 'sam_m32'..."""
    name = 'sam' if self.optimizer == 'sam' else self.optimizer
    if name == 'sam' and self.m:  # An explicit m-sharpness m (Figure 3).
      name = f'sam_m{self.m}'
    if name == 'sgd' and self.mixup_alpha > 0:
      name = 'mixup'
    return 'bootstrap_' + name if self.bootstrap else name

  @property
  def table(self) -> str:
    """The paper table this run belongs to ('other' for none of them)."""
    if self.label_noise > 0 or self.bootstrap or self.mixup_alpha > 0:
      return '4'
    if self.model.startswith('efficientnet'):
      return '3'
    if self.dataset == 'imagenet2012':
      return '2'
    if self.dataset in TABLE5_AUGMENT:
      return '5'
    if self.dataset in ('cifar10', 'cifar100'):
      return '1'
    return 'other'


def load_runs(runs_dir: str) -> list[Run]:
  """Every run under `runs_dir`: a directory with a summary.json, config.json
  or launch.json (written by launch.sweep before a run starts)."""
  runs = []
  for root, dirs, files in os.walk(runs_dir):
    dirs.sort()
    if 'summary.json' in files:
      try:
        with open(os.path.join(root, 'summary.json')) as f:
          summary = json.load(f)
      except ValueError:  # Being written: not finished yet.
        summary = {}
      runs.append(Run(root, summary.get('config', {}),
                      bool(summary.get('finished', False)),
                      summary.get('final', {}) or {}))
    elif 'config.json' in files or 'launch.json' in files:
      name = 'config.json' if 'config.json' in files else 'launch.json'
      with open(os.path.join(root, name)) as f:
        config = json.load(f)
      runs.append(Run(root, config.get('config', config), False, {}))
    else:
      continue
    dirs.clear()  # Checkpoints and logs below a run hold no other runs.
  return runs


# ----------------------------------------------------------------------------
# Cells.

# The fields that make a row of each table (the rest are blanked).
ROW_FIELDS = {
    '1': ('dataset', 'model', 'augment', 'epochs'),
    '2': ('dataset', 'model', 'epochs'),
    '3': ('dataset', 'model'),
    '4': ('label_noise', 'model'),
    '5': ('dataset', 'model', 'augment', 'epochs'),
    'other': ('dataset', 'model', 'augment', 'epochs'),
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

  @property
  def mean(self):
    return mean_and_ci95(self.values)[0] if self.values else None

  @property
  def ci95(self):
    return mean_and_ci95(self.values)[1] if self.values else None


def row_key(run: Run, table: str) -> RowKey:
  fields = {f: getattr(run, f) for f in ROW_FIELDS[table]}
  return RowKey(table=table, **fields)


def metric_value(run: Run, metric: str, split: str = 'test') -> Optional[float]:
  """A final metric of a run in percent."""
  key = {'top5_error': f'{split}_top5_error'}.get(metric, f'{split}_error')
  if key not in run.final:
    return None
  error = 100.0 * float(run.final[key])
  return 100.0 - error if metric == 'top1_accuracy' else error


def _mean_by(runs: Iterable[Run], key, metric: str, split: str):
  groups = collections.defaultdict(list)
  for run in runs:
    value = metric_value(run, metric, split)
    if value is not None:
      groups[key(run)].append(value)
  return {k: (sum(v) / len(v), v) for k, v in groups.items()}


def select_rho(runs: list[Run], metric: str = 'top1_error') -> Optional[float]:
  """The rho with the lowest mean final validation error (ties: smaller rho)."""
  means = _mean_by([r for r in runs if r.validation], lambda r: r.rho,
                   'top1_error' if metric == 'top1_accuracy' else metric,
                   'validation')
  return min(means, key=lambda rho: (means[rho][0], rho)) if means else None


def sam_cell(cell: Cell, runs: list[Run], fixed_rho: Optional[float]) -> None:
  """Fills a SAM cell: rho from validation (or fixed), values from test runs."""
  test = [r for r in runs if not r.validation]
  test_rhos = sorted({r.rho for r in test})
  if fixed_rho is not None:
    cell.rho, cell.choice = fixed_rho, f'rho={fixed_rho:g} fixed'
  elif (rho := select_rho(runs)) is not None:
    cell.rho, cell.choice = rho, f'rho={rho:g} on validation'
  elif len(test_rhos) == 1:
    cell.rho, cell.choice = test_rhos[0], f'rho={test_rhos[0]:g}, no validation runs'
  elif test_rhos:
    cell.choice = ('no validation runs to choose among test rho '
                   + ', '.join(f'{r:g}' for r in test_rhos))
    return
  values = [metric_value(r, cell.metric) for r in test
            if math.isclose(r.rho, cell.rho or 0.0)]
  cell.values = [v for v in values if v is not None]
  if not cell.values and cell.rho is not None and runs:
    cell.choice += '; no finished test runs at it'


def best_of_cell(cell: Cell, runs: list[Run]) -> None:
  """Fills an SGD/mixup cell: the best test mean over epochs x and alpha."""
  means = _mean_by([r for r in runs if not r.validation],
                   lambda r: (r.epochs_multiplier, r.mixup_alpha),
                   cell.metric, 'test')
  if not means:
    return
  sign = -1.0 if cell.metric == 'top1_accuracy' else 1.0
  (multiplier, alpha), (_, values) = min(
      means.items(), key=lambda kv: (sign * kv[1][0], kv[0]))
  cell.values = values
  tried = sorted(means)
  parts = []
  multipliers = sorted({m for m, _ in tried})
  if len(multipliers) > 1 or multiplier != 1:
    parts.append(f'{multiplier:g}x epochs (best of '
                 + '/'.join(f'{m:g}x' for m in multipliers) + ')')
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
    out['label_noise'] = int(row['dataset'][len('cifar10_noise'):]) / 100.0
    out['dataset'] = 'cifar10'
  return out


def load_paper(path: os.PathLike = PAPER_TABLES_CSV) -> list[dict[str, Any]]:
  with open(path) as f:
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
  if 'label_noise' in fields and not math.isclose(paper['label_noise'],
                                                  key.label_noise):
    return False
  return not ('epochs' in fields and paper['epochs'] is not None
              and paper['epochs'] != key.epochs)


def _paper_row_key(paper: dict[str, Any]) -> RowKey:
  fields = ROW_FIELDS[paper['table']]
  values = {'dataset': paper['dataset'], 'model': paper['model'],
            'augment': paper['augmentation'], 'epochs': paper['epochs'],
            'label_noise': paper['label_noise']}
  return RowKey(table=paper['table'], **{f: values[f] for f in fields})


def build_cells(runs: list[Run], paper: list[dict[str, Any]]) -> list[Cell]:
  """Every cell of every table that has runs, plus the paper's empty cells
  for the datasets (Table 4: noise rates' table) that have runs."""
  by_row = collections.defaultdict(list)
  for run in runs:
    by_row[row_key(run, run.table)].append(run)
    if run.table in ('1', '3'):  # Tables 10/11 reuse Tables 1/3's runs.
      by_row[row_key(run, {'1': '10', '3': '11'}[run.table])].append(run)
  for derived in ('10', '11'):  # Only with SAM test runs at rho = 0.05.
    if not any(r.method == 'sam' and not r.validation and r.finished
               and math.isclose(r.rho, FIXED_RHO)
               for key, rs in by_row.items() if key.table == derived
               for r in rs):
      for key in [k for k in by_row if k.table == derived]:
        del by_row[key]

  keys = list(by_row)
  datasets = {(k.table, k.dataset) for k in keys}
  for p in paper:
    if (p['table'], p['dataset']) in datasets or (
        p['table'] == '4' and any(k.table == '4' for k in keys)):
      if not any(paper_matches(p, k) for k in keys):
        keys.append(_paper_row_key(p))
        by_row.setdefault(keys[-1], [])

  def paper_order(key):
    return next((i for i, p in enumerate(paper) if paper_matches(p, key)),
                len(paper))

  cells = []
  for key in sorted(dict.fromkeys(keys), key=paper_order):
    rows_runs = by_row[key]
    methods = list(dict.fromkeys(
        [p['method'] for p in paper if paper_matches(p, key)]
        + sorted({r.method for r in rows_runs})))
    for method in methods:
      for metric in METRICS.get(key.table, ('top1_error',)):
        cell = Cell(key, method, metric)
        runs_m = [r for r in rows_runs if r.method == method]
        finished = [r for r in runs_m if r.finished]
        cell.finished_runs = len(finished)
        if method.endswith('sam') or method.startswith('sam_m'):
          fixed = FIXED_RHO if key.table in ('10', '11') else None
          sam_cell(cell, finished, fixed)
          # Unfinished runs that could still change this cell.
          cell.unfinished = sum(
              not r.finished and (
                  (r.validation and fixed is None) or
                  (not r.validation and (cell.rho is None
                                         or math.isclose(r.rho, cell.rho))))
              for r in runs_m)
        else:
          best_of_cell(cell, finished)
          cell.unfinished = len(runs_m) - len(finished)
        if finished and all(metric_value(r, metric) is None for r in finished):
          cell.choice = f'no {metric} in the summaries'
        for p in paper:
          if (paper_matches(p, key) and p['method'] == method
              and p['metric'] == metric):
            cell.paper, cell.paper_ci95 = float(p['value']), p['ci95']
            cell.paper_text = p['value']
        cells.append(cell)
  return cells


# ----------------------------------------------------------------------------
# Layout and output.

# Table -> (fields naming a line, fields naming a column group).
LAYOUT = {
    '1': (('model', 'epochs', 'augment'), ('dataset', 'method')),
    '2': (('model', 'epochs'), ('method', 'metric')),
    '3': (('dataset',), ('model', 'method')),
    '4': (('method',), ('label_noise',)),
    '5': (('model', 'augment'), ('dataset', 'method')),
    'other': (('model', 'epochs', 'augment'), ('dataset', 'method')),
}
LAYOUT['10'], LAYOUT['11'] = LAYOUT['1'], LAYOUT['3']
TITLES = {
    '1': 'Table 1: CIFAR test error (%), rho chosen on validation',
    '2': 'Table 2: ImageNet test error (%)',
    '3': 'Table 3: finetuning test error (%)',
    '4': 'Table 4: CIFAR-10 test accuracy (%) under label noise',
    '5': 'Table 5: SVHN and Fashion-MNIST test error (%)',
    '10': 'Table 10: CIFAR test error (%) with rho = 0.05',
    '11': 'Table 11: finetuning test error (%) with rho = 0.05',
    'other': 'Other settings: test error (%)',
}


def _field(cell: Cell, name: str):
  if name in ('method', 'metric'):
    return getattr(cell, name)
  value = getattr(cell.row, name)
  if name == 'label_noise':
    return f'{value * 100:g}% noise'
  if name == 'epochs' and value is not None:
    return f'{value} epoch' + ('s' if value != 1 else '')
  return value if value is not None else ''


def format_ours(cell: Cell) -> str:
  if not cell.values:
    text = (f'no result ({cell.choice})' if cell.finished_runs and cell.choice
            else 'no runs')
  else:
    ci = cell.ci95
    text = f'{cell.mean:.2f} ± {ci:.2f}' if ci is not None else f'{cell.mean:.2f}'
    notes = [f'n={len(cell.values)}'] + ([cell.choice] if cell.choice else [])
    text += f' ({", ".join(notes)})'
  if cell.unfinished:
    text += f' [{cell.unfinished} unfinished]'
  return text


def format_paper(cell: Cell) -> str:
  if cell.paper is None:
    return '-'
  if not cell.paper_ci95:
    return cell.paper_text
  return f'{cell.paper_text} ± {cell.paper_ci95}'  # Keeps the paper's '<0.1'.


def format_diff(cell: Cell) -> str:
  if cell.paper is None or not cell.values:
    return '-'
  return f'{cell.mean - cell.paper:+.2f}'


def wide_table(cells: list[Cell]) -> tuple[list[str], list[list[str]]]:
  """The paper's layout: one line per row, ours/paper/diff per column."""
  line_fields, col_fields = LAYOUT[cells[0].row.table]
  lines = list(dict.fromkeys(tuple(_field(c, f) for f in line_fields)
                             for c in cells))
  cols = list(dict.fromkeys(tuple(_field(c, f) for f in col_fields)
                            for c in cells))
  grid = {(tuple(_field(c, f) for f in line_fields),
           tuple(_field(c, f) for f in col_fields)): c for c in cells}
  header = [f for f in line_fields]
  for col in cols:
    name = ' '.join(str(v) for v in col)
    header += [name, f'{name} paper', f'{name} diff']
  body = []
  for line in lines:
    out = [str(v) for v in line]
    for col in cols:
      cell = grid.get((line, col))
      out += ([format_ours(cell), format_paper(cell), format_diff(cell)]
              if cell else ['not in this table', '-', '-'])
    body.append(out)
  return header, body


def _table_order(name: str):
  return (0, int(name)) if name.isdigit() else (1, name)


def write_tables(runs: list[Run], out_dir: str,
                 paper_csv: os.PathLike = PAPER_TABLES_CSV) -> str:
  """Writes tables.md, table<N>.csv, cells.csv and unfinished.txt.

  Args:
    runs: from `load_runs`.
    out_dir: created if needed.
    paper_csv: the paper's numbers.

  Returns:
    The Markdown text.
  """
  os.makedirs(out_dir, exist_ok=True)
  cells = build_cells(runs, load_paper(paper_csv))
  unfinished = [r for r in runs if not r.finished]
  md = [f'# Results: {len(runs) - len(unfinished)} finished runs, '
        f'{len(unfinished)} unfinished (not averaged; see unfinished.txt)', '']
  by_table = collections.defaultdict(list)
  for cell in cells:
    by_table[cell.row.table].append(cell)
  for table in sorted(by_table, key=_table_order):
    header, body = wide_table(by_table[table])
    md += [f'## {TITLES[table]}', '',
           '| ' + ' | '.join(header) + ' |',
           '|' + '---|' * len(header)]
    md += ['| ' + ' | '.join(line) + ' |' for line in body]
    md.append('')
    with open(os.path.join(out_dir, f'table{table}.csv'), 'w', newline='') as f:
      csv.writer(f).writerows([header] + body)
  with open(os.path.join(out_dir, 'cells.csv'), 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['table', 'dataset', 'model', 'augment', 'epochs',
                     'label_noise', 'method', 'metric', 'n', 'mean', 'ci95',
                     'rho', 'choice', 'unfinished', 'paper', 'paper_ci95',
                     'diff'])
    for c in cells:
      ci = c.ci95
      writer.writerow([
          c.row.table, c.row.dataset, c.row.model, c.row.augment,
          c.row.epochs or '', c.row.label_noise, c.method, c.metric,
          len(c.values), '' if c.mean is None else f'{c.mean:.4f}',
          '' if ci is None else f'{ci:.4f}', '' if c.rho is None else c.rho,
          c.choice, c.unfinished, '' if c.paper is None else c.paper,
          c.paper_ci95, format_diff(c)])
  with open(os.path.join(out_dir, 'unfinished.txt'), 'w') as f:
    f.writelines(f'{r.workdir}\n' for r in unfinished)
  text = '\n'.join(md)
  with open(os.path.join(out_dir, 'tables.md'), 'w') as f:
    f.write(text)
  return text


def _define_flags():
  flags.DEFINE_string('runs', None, 'Directory holding run workdirs (searched '
                      'recursively for summary.json).')
  flags.DEFINE_string('out', None, 'Output directory; default RUNS/tables.')


def main(argv):
  del argv
  runs_dir = flags.FLAGS.runs
  if not runs_dir or not os.path.isdir(runs_dir):
    raise app.UsageError(f'--runs must be an existing directory, got {runs_dir!r}')
  print(write_tables(load_runs(runs_dir),
                     flags.FLAGS.out or os.path.join(runs_dir, 'tables')))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
