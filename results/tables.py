r"""Finished runs back into the paper's tables, with the paper's numbers beside.

  python -m results.tables --runs_dir=DIR [--output_dir=DIR]

reads every `summary.json` under DIR (and counts every run directory that has
no finished summary yet), and writes `tables.md`, one wide CSV per table in the
paper's layout (`table1.csv`, ...), the long form `cells.csv` and
`unfinished.txt` to `--output_dir` (default `DIR/tables`). How each cell is
chosen (rho on validation, SGD the better of 1x and 2x epochs, mean and 95%
t-interval over seeds) is in results/cells.py.
"""

import collections
import csv
import io
from typing import Any

from absl import app
from absl import flags
from etils import epath

from results import cells as cells_lib
from results import runs

# Table -> (fields naming a line, fields naming a column group).
LAYOUT = {
    '1': (('model', 'epochs', 'augment'), ('dataset', 'method')),
    '2': (('model', 'epochs'), ('method', 'metric')),
    '3': (('dataset',), ('model', 'method')),
    '4': (('method',), ('label_noise',)),
    '5': (('model', 'augment'), ('dataset', 'method')),
    'other': (('method',), ('dataset', 'model', 'epochs', 'label_noise')),
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
    'other': (
        "Other settings: test error (%) of this code's runs (no paper"
        ' numbers apply)'
    ),
}


def _field(cell: cells_lib.Cell, name: str):
  if name in ('method', 'metric'):
    return getattr(cell, name)
  value = getattr(cell.row, name)
  if name == 'label_noise':
    return f'{value * 100:g}% noise'
  if name == 'epochs' and value is not None:
    return f'{value} epoch' + ('s' if value != 1 else '')
  return value if value is not None else ''


def format_ours(cell: cells_lib.Cell) -> str:
  if not cell.values:
    text = (
        f'no result ({cell.choice})'
        if cell.finished_runs and cell.choice
        else 'no runs'
    )
  else:
    ci = cell.ci95
    text = (
        f'{cell.mean:.2f} ± {ci:.2f}' if ci is not None else f'{cell.mean:.2f}'
    )
    notes = [f'n={len(cell.values)}'] + ([cell.choice] if cell.choice else [])
    if cell.sam_fraction is not None and 0 < cell.sam_fraction < 1:
      notes.append(f'SAM steps {cell.sam_fraction:.0%}')
    text += f' ({", ".join(notes)})'
  if cell.unfinished:
    text += f' [{cell.unfinished} unfinished]'
  return text


def format_paper(cell: cells_lib.Cell) -> str:
  if cell.paper is None:
    return '-'
  if not cell.paper_ci95:
    return cell.paper_text
  return f'{cell.paper_text} ± {cell.paper_ci95}'  # Keeps the paper's '<0.1'.


def format_diff(cell: cells_lib.Cell) -> str:
  if cell.paper is None or not cell.values:
    return '-'
  return f'{cell.mean - cell.paper:+.2f}'


def wide_table(
    cells: list[cells_lib.Cell],
) -> tuple[list[str], list[list[str]]]:
  """The paper's layout: one line per row, ours/paper/diff per column."""
  line_fields, col_fields = LAYOUT[cells[0].row.table]
  lines = list(
      dict.fromkeys(tuple(_field(c, f) for f in line_fields) for c in cells)
  )
  cols = list(
      dict.fromkeys(tuple(_field(c, f) for f in col_fields) for c in cells)
  )
  grid = {
      (
          tuple(_field(c, f) for f in line_fields),
          tuple(_field(c, f) for f in col_fields),
      ): c
      for c in cells
  }
  # A table none of whose cells the paper reports (another dataset's)
  # shows ours alone.
  with_paper = any(c.paper is not None for c in cells)
  header = [f for f in line_fields]
  for col in cols:
    name = ' '.join(str(v) for v in col)
    header += [name, f'{name} paper', f'{name} diff'] if with_paper else [name]
  body = []
  for line in lines:
    out = [str(v) for v in line]
    for col in cols:
      cell = grid.get((line, col))
      if not with_paper:
        out.append(format_ours(cell) if cell else 'not in this table')
      elif cell:
        out += [format_ours(cell), format_paper(cell), format_diff(cell)]
      else:
        out += ['not in this table', '-', '-']
    body.append(out)
  return header, body


def _table_order(name: str):
  return (0, int(name)) if name.isdigit() else (1, name)


def _csv_text(rows: list[list[Any]]) -> str:
  buffer = io.StringIO()
  csv.writer(buffer).writerows(rows)
  return buffer.getvalue()


CELL_COLUMNS = [
    'table',
    'dataset',
    'model',
    'augment',
    'epochs',
    'label_noise',
    'method',
    'metric',
    'n',
    'mean',
    'ci95',
    'rho',
    'choice',
    'sam_fraction',
    'unfinished',
    'paper',
    'paper_ci95',
    'diff',
]


def _cell_row(c: cells_lib.Cell) -> list[Any]:
  ci = c.ci95
  return [
      c.row.table,
      c.row.dataset,
      c.row.model,
      c.row.augment,
      c.row.epochs or '',
      c.row.label_noise,
      c.method,
      c.metric,
      len(c.values),
      '' if c.mean is None else f'{c.mean:.4f}',
      '' if ci is None else f'{ci:.4f}',
      '' if c.rho is None else c.rho,
      c.choice,
      '' if c.sam_fraction is None else f'{c.sam_fraction:.4f}',
      c.unfinished,
      '' if c.paper is None else c.paper,
      c.paper_ci95,
      format_diff(c),
  ]


def write_tables(
    all_runs: list[runs.Run],
    output_dir: epath.PathLike,
    paper_csv: epath.PathLike = cells_lib.PAPER_TABLES_CSV,
) -> str:
  """Writes tables.md, table<N>.csv, cells.csv and unfinished.txt.

  Args:
    all_runs: from `runs.load_runs`.
    output_dir: created if needed (local or gs://).
    paper_csv: the paper's numbers.

  Returns:
    The Markdown text.
  """
  output_dir = epath.Path(output_dir)
  output_dir.mkdir(parents=True, exist_ok=True)
  cells = cells_lib.build_cells(all_runs, cells_lib.load_paper(paper_csv))
  unfinished = [r for r in all_runs if not r.finished]
  md = [
      f'# Results: {len(all_runs) - len(unfinished)} finished runs, '
      f'{len(unfinished)} unfinished (not averaged; see unfinished.txt)',
      '',
  ]
  by_table = collections.defaultdict(list)
  for cell in cells:
    by_table[cell.row.table].append(cell)
  for table in sorted(by_table, key=_table_order):
    header, body = wide_table(by_table[table])
    md += [
        f'## {TITLES[table]}',
        '',
        '| ' + ' | '.join(header) + ' |',
        '|' + '---|' * len(header),
    ]
    md += ['| ' + ' | '.join(line) + ' |' for line in body]
    md.append('')
    (output_dir / f'table{table}.csv').write_text(_csv_text([header] + body))
  (output_dir / 'cells.csv').write_text(
      _csv_text([CELL_COLUMNS] + [_cell_row(c) for c in cells])
  )
  (output_dir / 'unfinished.txt').write_text(
      ''.join(f'{r.workdir}\n' for r in unfinished)
  )
  text = '\n'.join(md)
  (output_dir / 'tables.md').write_text(text)
  return text


def _define_flags():
  flags.DEFINE_string(
      'runs_dir',
      None,
      'Directory holding run workdirs '
      '(searched recursively for summary.json).',
      required=True,
  )
  flags.DEFINE_string('output_dir', None, 'Default: RUNS_DIR/tables.')


def main(argv):
  del argv
  runs_dir = epath.Path(flags.FLAGS.runs_dir)
  if not runs_dir.is_dir():
    raise app.UsageError(
        f'--runs_dir must be an existing directory, got ' f'{str(runs_dir)!r}'
    )
  print(
      write_tables(
          runs.load_runs(runs_dir),
          flags.FLAGS.output_dir or runs_dir / 'tables',
      )
  )


if __name__ == '__main__':
  _define_flags()
  app.run(main)
