"""Shared by every figure: a headless matplotlib and saving to any path.

Figures are PNG files written through etils.epath, so an output directory
may be a local folder or a gs:// bucket.
"""

from typing import Sequence

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
