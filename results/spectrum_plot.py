"""Hessian eigenvalue densities as a figure (Figure 3, left).

Reads the JSON records written by `python -m sam.analysis hessian` and
draws their densities on one log-scale axis (as Ghorbani et al., 2019), with
lambda_max and lambda_max / lambda_5 in the legend:

  python -m results.spectrum_plot \
    --inputs=runs/qs_sam/analysis/hessian_train_train.json,\
runs/qs_sgd/analysis/hessian_train_train.json \
    --labels=SAM,SGD --output_dir=figures
"""

from typing import Sequence

import numpy as np

from results import plotting
from sam.analysis import hessian

plt = plotting.plt

FILE_NAME = 'spectra.png'

# Densities below this are drawn at this floor: the log axis would otherwise
# spend most of its range on the Gaussian tails.
DENSITY_FLOOR = 1e-6


def plot_spectra(
    labelled_records: Sequence[tuple[str, dict]], path: str
) -> None:
  """Draws one density curve per record into a PNG.

  The densities are re-broadened from the records' quadratures on one grid
  with one width (1% of the joint eigenvalue range), so curves of different
  runs are comparable.

  Args:
    labelled_records: (label, record) pairs; a record is the JSON dict of
      `sam.analysis.hessian.analyse` (its 'quadrature' and 'summary' are
      used).
    path: the output PNG.
  """
  if not labelled_records:
    raise ValueError('plot_spectra: labelled_records is empty')
  estimates = [
      hessian.estimate_from_json(record['quadrature'])
      for _, record in labelled_records
  ]
  joint = hessian.SpectrumEstimate(
      [n for e in estimates for n in e.nodes],
      [w for e in estimates for w in e.weights],
  )
  grid, sigma = hessian.density_grid(joint, num_points=2000)
  fig, ax = plt.subplots(figsize=(6, 4))
  for (label, record), estimate in zip(labelled_records, estimates):
    summary = record['summary']
    density = np.maximum(
        hessian.spectral_density(estimate, grid, sigma), DENSITY_FLOOR
    )
    ax.semilogy(
        grid,
        density,
        label=(
            f"{label}: $\\lambda_{{max}}$={summary['lambda_max']:.3g}, "
            f'$\\lambda_{{max}}/\\lambda_5$='
            f"{summary['lambda_max_over_lambda_5']:.3g}"
        ),
    )
  first = labelled_records[0][1]
  ax.set_xlabel('eigenvalue')
  ax.set_ylabel(f'density (Gaussian broadening, sigma={sigma:.2g})')
  ax.set_title(
      f"Hessian spectrum ({first['split']} split, "
      f"{first['num_examples']} examples, BN {first['bn_mode']})"
  )
  ax.legend(fontsize=8)
  fig.tight_layout()
  plotting.save_figure(fig, path, dpi=120)


if __name__ == '__main__':
  plotting.record_figure_cli('hessian', FILE_NAME, plot_spectra)
