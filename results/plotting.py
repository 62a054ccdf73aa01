"""Shared by every figure: a headless matplotlib and saving to any path.

Figures are PNG files written through etils.epath, so an output directory
may be a local folder or a gs:// bucket.
"""

import json
from typing import Any, Callable, Sequence

from absl import app
from absl import flags
from etils import epath
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position


def save_figure(fig: 'plt.Figure', path: epath.PathLike, **kwargs) -> str:
  """Writes `fig` as PNG to `path` and closes it.

  Args:
    fig: the figure.
    path: the PNG's path (local or gs://).
    **kwargs: passed to `savefig` (dpi, bbox_inches).

  Returns:
    The path, as a string.
  """
  path = epath.Path(path)
  with path.open('wb') as f:
    fig.savefig(f, format='png', **kwargs)
  plt.close(fig)
  return str(path)


def lower_errors(
    means: Sequence[float], halves: Sequence[float]
) -> list[list[float]]:
  """Asymmetric error bars [[below], [above]] of mean +- half, clipped at 0
  below: an error rate cannot be negative."""
  return [[min(h, m) for m, h in zip(means, halves)], list(halves)]


def labelled_records(
    inputs: Sequence[str], labels: Sequence[str] | None
) -> list[tuple[str, dict]]:
  """(label, record) pairs of the JSON records at `inputs`; the labels
  default to the records' methods.

  Raises:
    ValueError: labels and inputs differ in number.
  """
  records = [json.loads(epath.Path(path).read_text()) for path in inputs]
  labels = labels or [r.get('method', '?') for r in records]
  if len(labels) != len(records):
    raise ValueError(
        f'--labels needs {len(records)} entries, got ' f'{len(labels)}'
    )
  return list(zip(labels, records))


def output_path(output_dir: epath.PathLike, name: str) -> epath.Path:
  """output_dir/name, creating output_dir."""
  output_dir = epath.Path(output_dir)
  output_dir.mkdir(parents=True, exist_ok=True)
  return output_dir / name


def record_figure_cli(
    analysis: str,
    file_name: str,
    plot: Callable[[list[tuple[str, Any]], epath.Path], Any],
) -> None:
  """Runs the command line of a figure of `sam.analysis` records.

  Flags: --inputs (the records' JSON files), --labels (one per input;
  default: the runs' methods) and --output_dir; prints the figure's path.

  Args:
    analysis: the sam.analysis tool that wrote the records.
    file_name: the figure's file name in --output_dir.
    plot: (labelled records, path) -> writes the figure.
  """
  flags.DEFINE_list(
      'inputs', None, f'JSON files of sam.analysis {analysis}.', required=True
  )
  flags.DEFINE_list(
      'labels', None, "One label per input; default: the runs' methods."
  )
  flags.DEFINE_string(
      'output_dir', None, f'Where {file_name} goes.', required=True
  )

  def main(argv):
    del argv
    f = flags.FLAGS
    try:
      labelled = labelled_records(f.inputs, f.labels)
    except ValueError as e:
      raise app.UsageError(str(e)) from e
    path = output_path(f.output_dir, file_name)
    plot(labelled, path)
    print(path)

  app.run(main)
