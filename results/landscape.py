"""Loss-landscape slices as a figure (Figure 1; Li et al., 2017).

Reads the JSON records that `python -m sam.analysis landscape` writes and
draws 1-D slices as curves on one axis, 2-D slices as contour panels side by
side with shared levels:

  python -m results.landscape --inputs=SAM_RUN/analysis/landscape_2d_train.json,\
SGD_RUN/analysis/landscape_2d_train.json --labels=SAM,SGD --output_dir=figures
"""

from typing import Sequence

import numpy as np

from results import plotting

plt = plotting.plt

FILE_NAME = 'landscape.png'


def plot_surface(
    labelled_records: Sequence[tuple[str, dict]], path: str
) -> None:
  """Draws 1-D slices as curves on one axis, 2-D slices as contour panels.

  Args:
    labelled_records: (label, record) pairs; records from `analyse`, all
      1-D or all 2-D.
    path: the output PNG.
  """
  dims = {len(record['coordinates']) for _, record in labelled_records}
  if len(dims) != 1:
    raise ValueError('plot_surface: cannot mix 1-D and 2-D records')
  if dims == {1}:
    fig, ax = plt.subplots(figsize=(5, 4))
    for label, record in labelled_records:
      ax.plot(record['coordinates'][0], record['loss'], label=label)
    ax.set_xlabel('step along the filter-normalised direction')
    ax.set_ylabel(f"{labelled_records[0][1]['split']} loss")
    ax.legend()
  else:
    fig, axes = plt.subplots(
        1,
        len(labelled_records),
        squeeze=False,
        figsize=(4.5 * len(labelled_records), 4),
    )
    # Shared levels: the same loss is the same colour in every panel.
    all_losses = np.concatenate(
        [np.ravel(r['loss']) for _, r in labelled_records]
    )
    levels = np.linspace(all_losses.min(), np.percentile(all_losses, 95), 20)
    for i, (ax, (label, record)) in enumerate(zip(axes[0], labelled_records)):
      a, b = (np.asarray(c) for c in record['coordinates'])
      contours = ax.contourf(
          a,
          b,
          np.asarray(record['loss']).T,
          levels=levels,
          extend='max',
          cmap='viridis',
      )
      ax.contour(
          a,
          b,
          np.asarray(record['loss']).T,
          levels=levels,
          colors='k',
          linewidths=0.3,
      )
      ax.plot([0], [0], 'r+')
      ax.set_title(label)
      ax.set_xlabel('direction 1')
      if i == 0:
        ax.set_ylabel('direction 2')
    fig.colorbar(
        contours,
        ax=axes[0].tolist(),
        label=f"{labelled_records[0][1]['split']} loss",
    )
  plotting.save_figure(fig, path, dpi=120, bbox_inches='tight')


if __name__ == '__main__':
  plotting.record_figure_cli('landscape', FILE_NAME, plot_surface)
