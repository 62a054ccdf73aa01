r"""The SAM family's error against its wall-clock, from one sweep's runs.

  python -m results.cost_error --runs_dir=/tmp/family --output_dir=results/sam_family

For every method of every row: its test error (percent, mean and 95%
t-interval over seeds) at the rho results.cells reports (chosen on
validation where the sweep searched a grid), its measured training
wall-clock per run (summary.json's wall_time_s, mean over those seeds) and
its fraction of SAM steps. SGD appears once per epoch multiplier, and each
method is set against the SGD runs whose wall-clock is nearest its own
(equal compute) and against SAM, with the 95% Welch interval of the
difference. Writes `cost_error.md` and `cost_error.png`.
"""

import collections
import math
from typing import NamedTuple, Optional

from absl import app
from absl import flags
from etils import epath
import numpy as np
from scipy import stats

from results import cells as cells_lib
from results import plotting
from results import runs as runs_lib


class Point(NamedTuple):
  """One method (or SGD at one epoch multiplier) of one row."""

  row: str
  method: str
  rho: Optional[float]
  errors: tuple[float, ...]  # Test error per seed, percent.
  wall_s: float  # Mean training wall-clock per run, seconds.
  sam_fraction: Optional[float]

  @property
  def error(self) -> float:
    return float(np.mean(self.errors))

  @property
  def ci95(self) -> Optional[float]:
    return runs_lib.mean_and_ci95(list(self.errors))[1]


def _row_name(run: runs_lib.Run) -> str:
  noise = f', {run.label_noise:.0%} noise' if run.label_noise else ''
  return f'{run.dataset} {run.model} {run.epochs} epochs{noise}'


def _point(row, method, rho, group) -> Optional[Point]:
  errors = [cells_lib.metric_value(r, 'top1_error') for r in group]
  errors = [e for e in errors if e is not None]
  walls = [r.wall_time_s for r in group if r.wall_time_s is not None]
  if not errors or not walls:
    return None
  fractions = [r.sam_fraction for r in group if r.sam_fraction is not None]
  fraction = float(np.mean(fractions)) if fractions else None
  return Point(row, method, rho, tuple(errors), float(np.mean(walls)), fraction)


def points(all_runs: list[runs_lib.Run]) -> list[Point]:
  """The points of the finished test runs: SGD per epoch multiplier, every
  other method at the rho its results.cells cell reports.

  Args:
    all_runs: from runs.load_runs.

  Returns:
    The points, by row, SGD first.
  """
  finished = [r for r in all_runs if r.finished and not r.validation]
  found = []
  sgd = collections.defaultdict(list)
  for r in finished:
    if r.method == 'sgd':
      sgd[(_row_name(r), r.epochs_multiplier)].append(r)
  for (row, multiplier), group in sorted(sgd.items()):
    found.append(_point(row, f'sgd x{multiplier:g}', None, group))
  for cell in cells_lib.build_cells(all_runs, []):
    if cell.method == 'sgd' or cell.rho is None:
      continue
    group = [
        r
        for r in finished
        if r.method == cell.method
        and cells_lib.row_key(r, cell.row.table) == cell.row
        and math.isclose(r.rho, cell.rho)
    ]
    if group:
      found.append(_point(_row_name(group[0]), cell.method, cell.rho, group))
  return [p for p in found if p is not None]


def _difference(a: Point, b: Point) -> str:
  """a - b in points, with the 95% Welch interval."""
  difference = a.error - b.error
  if len(a.errors) < 2 or len(b.errors) < 2:
    return f'{difference:+.2f}'
  va, vb = np.var(a.errors, ddof=1), np.var(b.errors, ddof=1)
  na, nb = len(a.errors), len(b.errors)
  se = math.sqrt(va / na + vb / nb)
  if se == 0:
    return f'{difference:+.2f} +- 0.00'
  dof = (va / na + vb / nb) ** 2 / (
      (va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1)
  )
  return f'{difference:+.2f} +- {stats.t.ppf(0.975, dof) * se:.2f}'


def markdown(found: list[Point]) -> str:
  """Per row: every point with its wall-clock against SGD x1's, and each
  method against SAM and against the SGD of nearest wall-clock."""
  lines = []
  by_row = collections.defaultdict(list)
  for p in found:
    by_row[p.row].append(p)
  for row, group in by_row.items():
    sgds = [p for p in group if p.method.startswith('sgd x')]
    base = next((p for p in sgds if p.method == 'sgd x1'), None)
    sam = next((p for p in group if p.method == 'sam'), None)
    lines += [
        f'### {row}',
        '',
        '| method | rho | test error % (95% CI) | seeds | wall-clock s/run |'
        ' x SGD | SAM steps | vs SAM | SGD at equal wall-clock | vs it |',
        '|---|---|---|---|---|---|---|---|---|---|',
    ]
    for p in sorted(group, key=lambda p: p.wall_s):
      ci = '' if p.ci95 is None else f' +- {p.ci95:.2f}'
      ratio = f'{p.wall_s / base.wall_s:.2f}' if base else ''
      rho = '' if p.rho is None else f'{p.rho:g}'
      steps = '' if p.sam_fraction is None else f'{p.sam_fraction:.2f}'
      versus_sam = _difference(p, sam) if sam and p is not sam else ''
      peer, versus_peer = '', ''
      if sgds and not p.method.startswith('sgd'):
        nearest = min(sgds, key=lambda s: abs(s.wall_s - p.wall_s))
        peer = f'{nearest.method} ({nearest.error:.2f})'
        versus_peer = _difference(p, nearest)
      lines.append(
          f'| {p.method} | {rho} | {p.error:.2f}{ci} | {len(p.errors)} | '
          f'{p.wall_s:.0f} | {ratio} | {steps} | {versus_sam} | {peer} | '
          f'{versus_peer} |'
      )
    lines.append('')
  return '\n'.join(lines)


def figure(found: list[Point], path: epath.PathLike) -> str:
  """Test error against training wall-clock, one point per method."""
  fig, ax = plotting.plt.subplots(figsize=(7, 4.5))
  for p in found:
    ax.errorbar(p.wall_s, p.error, yerr=p.ci95 or 0, fmt='o', capsize=3)
    ax.annotate(
        p.method,
        (p.wall_s, p.error),
        xytext=(4, 4),
        textcoords='offset points',
        fontsize=8,
    )
  ax.set_xlabel('training wall-clock per run (s)')
  ax.set_ylabel('test error % (mean, 95% CI)')
  ax.set_title(found[0].row if found else '')
  ax.grid(alpha=0.3)
  return plotting.save_figure(fig, path, dpi=120, bbox_inches='tight')


def main(argv):
  del argv
  f = flags.FLAGS
  found = points(runs_lib.load_runs(f.runs_dir))
  if not found:
    raise SystemExit(f'no finished test runs with a wall-clock in {f.runs_dir}')
  output = epath.Path(f.output_dir)
  output.mkdir(parents=True, exist_ok=True)
  print(figure(found, output / 'cost_error.png'))
  (output / 'cost_error.md').write_text(markdown(found))
  print(markdown(found))


if __name__ == '__main__':
  flags.DEFINE_string('runs_dir', None, 'The sweep runs directory.')
  flags.DEFINE_string('output_dir', '.', 'Where to write.')
  app.run(main)
