r"""The SAM family's cost against its error: one figure and one table.

  python -m results.cost_error --cells=results/sam_family/cells.csv \
      --step_time=results/sam_family/step_time_wrn16_4.json \
      --output_dir=results/sam_family

x: a method's step time over SGD's (benchmarks/step_time.py --output_json,
measured in one process); y: its mean test error in percent with the 95%
t-interval over seeds (the cells.csv of results.tables; Table 4 cells hold
accuracy, so error = 100 - accuracy with the same interval). Writes
`cost_error.png` and `cost_error.md`.
"""

import csv
import io
import json
from typing import NamedTuple

from absl import app
from absl import flags
from etils import epath

from results import plotting


class Point(NamedTuple):
  method: str
  cost: float  # Step time over SGD's.
  error: float  # Mean test error, percent.
  ci95: float  # Half-width of the 95% t-interval, percent.
  seeds: int


def points(cells_csv: str, step_time: dict) -> list[Point]:
  """The methods found in both records, in the step-time record's order.

  Args:
    cells_csv: the text of results.tables' cells.csv.
    step_time: the JSON record of benchmarks.step_time --output_json.

  Returns:
    One Point per method with a finished cell and a step time.
  """
  errors = {}
  for row in csv.DictReader(io.StringIO(cells_csv)):
    if not row['mean']:
      continue
    mean = float(row['mean'])
    if row['metric'] == 'top1_accuracy':
      mean = 100.0 - mean
    errors[row['method']] = (mean, float(row['ci95'] or 0.0), int(row['n']))
  return [
      Point(name, timing['x_sgd'], *errors[name])
      for name, timing in step_time['variants'].items()
      if name in errors and timing['x_sgd'] is not None
  ]


def markdown(found: list[Point]) -> str:
  """The points as a Markdown table, with each method against SAM."""
  sam = next((p for p in found if p.method == 'sam'), None)
  lines = [
      '| method | step time x SGD | test error % (95% CI) | seeds | '
      'vs SAM |',
      '|---|---|---|---|---|',
  ]
  for p in sorted(found, key=lambda p: p.cost):
    versus = ''
    if sam and p.method != 'sam':
      cheaper = 'cheaper' if p.cost < sam.cost else 'dearer'
      difference = round(p.error - sam.error, 6)
      better = {-1: 'lower', 0: 'same', 1: 'higher'}[
          (difference > 0) - (difference < 0)
      ]
      versus = f'{cheaper}, {better} error'
    lines.append(
        f'| {p.method} | {p.cost:.2f} | {p.error:.2f} +- {p.ci95:.2f} | '
        f'{p.seeds} | {versus} |'
    )
  return '\n'.join(lines) + '\n'


def figure(found: list[Point], path: epath.PathLike) -> str:
  """Test error against step time relative to SGD, one point per method."""
  fig, ax = plotting.plt.subplots(figsize=(7, 4.5))
  for p in found:
    ax.errorbar(p.cost, p.error, yerr=p.ci95, fmt='o', capsize=3)
    ax.annotate(
        p.method,
        (p.cost, p.error),
        xytext=(4, 4),
        textcoords='offset points',
        fontsize=8,
    )
  ax.set_xlabel('step time / SGD step time (WRN-16-4, batch 128, CPU)')
  ax.set_ylabel('test error % (mean, 95% CI)')
  ax.grid(alpha=0.3)
  return plotting.save_figure(fig, path, dpi=120, bbox_inches='tight')


def main(argv):
  del argv
  f = flags.FLAGS
  step_time = json.loads(epath.Path(f.step_time).read_text())
  found = points(epath.Path(f.cells).read_text(), step_time)
  if not found:
    raise SystemExit('no method has both a finished cell and a step time')
  output = epath.Path(f.output_dir)
  output.mkdir(parents=True, exist_ok=True)
  print(figure(found, output / 'cost_error.png'))
  (output / 'cost_error.md').write_text(markdown(found))
  print(markdown(found))


if __name__ == '__main__':
  flags.DEFINE_string('cells', None, 'cells.csv of results.tables.')
  flags.DEFINE_string('step_time', None, 'benchmarks.step_time JSON.')
  flags.DEFINE_string('output_dir', '.', 'Where to write.')
  app.run(main)
