r"""Figures from run directories: rho sweeps, training curves, m-sharpness.

  python -m results.figures --runs_dir=DIR [--output_dir=DIR]

writes to `--output_dir` (default `DIR/figures`), each only where runs exist
for it:
  rho_sweep.png         mean validation error vs rho, one line per row (the
                        paper's rho search, Section 3.1), chosen rho marked;
  curves_<row>.png      train and test error against epochs, SAM (at the
                        chosen rho) against SGD (1x and 2x epochs), one line
                        per seed (a single evaluation shows as a point);
  m_sharpness.png       Figure 3 (middle): test error vs rho for each m, and
                        vs m for each rho, from runs whose config has sam.m.

Error bars are 95% t-intervals over seeds, clipped at 0 below.
"""

import collections
import math
import re
from typing import Optional, Sequence

from absl import app
from absl import flags
from etils import epath

from results import cells
from results import plotting
from results import runs

plt = plotting.plt


def row_label(run: runs.Run) -> str:
  """The figure name of a run's row: dataset, model, augment, epochs."""
  parts = [
      run.dataset,
      run.model,
      run.augment,
      f'{run.epochs}ep' if run.epochs else '',
  ]
  if run.label_noise:
    parts.append(f'noise{run.label_noise:g}')
  return ' '.join(p for p in parts if p)


def _rows(all_runs: list[runs.Run]) -> dict[str, list[runs.Run]]:
  rows = collections.defaultdict(list)
  for run in all_runs:
    if run.finished:
      rows[row_label(run)].append(run)
  return rows


def errorbar(ax, xs: Sequence[float], samples: Sequence[list[float]], **kwargs):
  """Means of `samples` at `xs` with 95% intervals clipped at 0 below."""
  stats = [runs.mean_and_ci95(values) for values in samples]
  means = [mean for mean, _ in stats]
  halves = [ci or 0.0 for _, ci in stats]
  return ax.errorbar(
      xs,
      means,
      yerr=plotting.lower_errors(means, halves),
      marker='o',
      capsize=3,
      **kwargs,
  )


def rho_sweep(all_runs: list[runs.Run], path: epath.Path) -> Optional[str]:
  """Validation error vs rho per row; returns `path` or None without data."""
  curves = {}
  for label, row_runs in _rows(all_runs).items():
    by_rho = collections.defaultdict(list)
    for run in row_runs:
      value = cells.metric_value(run, 'top1_error', 'validation')
      if run.method == 'sam' and run.validation and value is not None:
        by_rho[run.rho].append(value)
    if by_rho:
      curves[label] = (
          by_rho,
          cells.select_rho([r for r in row_runs if r.method == 'sam']),
      )
  if not curves:
    return None
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  for label, (by_rho, chosen) in sorted(curves.items()):
    rhos = sorted(by_rho)
    line = errorbar(ax, rhos, [by_rho[r] for r in rhos], label=label)
    if chosen is not None:
      ax.plot(
          [chosen],
          [runs.mean_and_ci95(by_rho[chosen])[0]],
          marker='*',
          markersize=16,
          color=line[0].get_color(),
      )
  ax.set_xscale('log')
  ax.set_xlabel('rho')
  ax.set_ylabel('validation error (%)')
  ax.set_title('SAM rho search on the validation split (star: chosen)')
  ax.legend(fontsize=7)
  fig.tight_layout()
  return plotting.save_figure(fig, path, dpi=120)


def _curve_groups(row_runs: list[runs.Run]) -> dict[str, list[runs.Run]]:
  """SAM at the chosen (or only) rho and SGD per epoch multiplier."""
  sam_rho = cells.select_rho([r for r in row_runs if r.method == 'sam'])
  test = [r for r in row_runs if not r.validation]
  test_rhos = {r.rho for r in test if r.method == 'sam'}
  if sam_rho is None and len(test_rhos) == 1:
    sam_rho = test_rhos.pop()
  groups = {
      f'SAM rho={sam_rho:g}'
      if sam_rho is not None
      else 'SAM': [
          r
          for r in test
          if r.method == 'sam'
          and sam_rho is not None
          and math.isclose(r.rho, sam_rho)
      ],
  }
  for multiplier in sorted(
      {r.epochs_multiplier for r in test if r.method == 'sgd'}
  ):
    groups[f'SGD {multiplier:g}x epochs'] = [
        r
        for r in test
        if r.method == 'sgd' and r.epochs_multiplier == multiplier
    ]
  return {name: group for name, group in groups.items() if group}


def _plot_curves(
    label: str, series: dict[str, list[dict]], path: epath.Path
) -> str:
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
  for color, (name, seeds) in zip(colors, series.items()):
    for i, metrics in enumerate(seeds):
      for ax, key in zip(axes, ('train_error', 'test_error')):
        points = metrics.get(key, [])
        if points:
          ax.plot(
              [x for x, _ in points],
              [100 * v for _, v in points],
              color=color,
              alpha=0.7,
              linewidth=1,
              marker='o',
              markersize=3,
              linestyle='--' if '2x' in name else '-',
              label=name if i == 0 else None,
          )
  for ax, key in zip(axes, ('train error (%)', 'test error (%)')):
    ax.set_xlabel('epoch')
    ax.set_ylabel(key)
    ax.legend(fontsize=8)
  fig.suptitle(f'{label}: SAM vs SGD (one line per seed)')
  fig.tight_layout()
  return plotting.save_figure(fig, path, dpi=110)


def training_curves(
    all_runs: list[runs.Run], output_dir: epath.Path
) -> list[str]:
  """One figure per row with SAM and SGD test runs: train/test error."""
  paths = []
  for label, row_runs in sorted(_rows(all_runs).items()):
    series = {
        name: [runs.read_metrics(r.workdir) for r in group]
        for name, group in _curve_groups(row_runs).items()
    }
    if len(series) < 2 or not any(
        s.get('test_error') for seeds in series.values() for s in seeds
    ):
      continue
    name = 'curves_' + re.sub(r'[^A-Za-z0-9.]+', '_', label) + '.png'
    paths.append(_plot_curves(label, series, output_dir / name))
  return paths


def m_sharpness(all_runs: list[runs.Run], path: epath.Path) -> Optional[str]:
  """Figure 3 (middle): test error vs rho per m, and vs m per rho."""
  grid = collections.defaultdict(list)
  for run in all_runs:
    value = cells.metric_value(run, 'top1_error')
    if (
        run.finished
        and run.method.startswith('sam')
        and run.m
        and not run.validation
        and value is not None
    ):
      grid[(int(run.m), run.rho)].append(value)
  if not grid:
    return None
  ms = sorted({m for m, _ in grid})
  rhos = sorted({rho for _, rho in grid})
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
  for m in ms:
    xs = [rho for rho in rhos if (m, rho) in grid]
    errorbar(left, xs, [grid[(m, rho)] for rho in xs], label=f'm={m}')
  for rho in rhos:
    xs = [m for m in ms if (m, rho) in grid]
    errorbar(right, xs, [grid[(m, rho)] for m in xs], label=f'rho={rho:g}')
  left.set_xscale('log')
  left.set_xlabel('rho')
  right.set_xscale('log', base=2)
  right.set_xlabel('m (examples per perturbation)')
  for ax in (left, right):
    ax.set_ylabel('test error (%)')
    ax.legend(fontsize=8)
  fig.suptitle('m-sharpness (paper Figure 3, middle)')
  fig.tight_layout()
  return plotting.save_figure(fig, path, dpi=120)


def write_figures(
    all_runs: list[runs.Run], output_dir: epath.PathLike
) -> list[str]:
  """Writes every figure that the runs support; returns their paths."""
  output_dir = epath.Path(output_dir)
  output_dir.mkdir(parents=True, exist_ok=True)
  paths = [
      rho_sweep(all_runs, output_dir / 'rho_sweep.png'),
      m_sharpness(all_runs, output_dir / 'm_sharpness.png'),
  ]
  paths += training_curves(all_runs, output_dir)
  return [p for p in paths if p]


def _define_flags():
  flags.DEFINE_string(
      'runs_dir', None, 'Directory holding run workdirs.', required=True
  )
  flags.DEFINE_string('output_dir', None, 'Default: RUNS_DIR/figures.')


def main(argv):
  del argv
  runs_dir = epath.Path(flags.FLAGS.runs_dir)
  if not runs_dir.is_dir():
    raise app.UsageError(
        f'--runs_dir must be an existing directory, got ' f'{str(runs_dir)!r}'
    )
  paths = write_figures(
      runs.load_runs(runs_dir), flags.FLAGS.output_dir or runs_dir / 'figures'
  )
  print('\n'.join(paths) if paths else 'no figures: no finished runs')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
