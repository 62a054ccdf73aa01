r"""Figures from run directories: rho sweeps, training curves, m-sharpness.

  python -m results.figures --runs=DIR [--out=DIR]

writes to `--out` (default `DIR/figures`), each only where runs exist for it:
  rho_sweep.png         mean validation error vs rho, one line per row (the
                        paper's rho search, Section 3.1), chosen rho marked;
  curves_<row>.png      train and test error during training, SAM (at the
                        chosen rho) against SGD (1x and 2x epochs), per seed;
  m_sharpness.png       Figure 3 (middle): test error vs rho for each m, and
                        vs m for each rho, from runs whose config has sam.m.
"""

import collections
import json
import math
import os
import re
from typing import Optional

from absl import app
from absl import flags
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from results import tables


def row_label(run: tables.Run) -> str:
  parts = [run.dataset, run.model, run.augment,
           f'{run.epochs}ep' if run.epochs else '']
  if run.label_noise:
    parts.append(f'noise{run.label_noise:g}')
  return ' '.join(p for p in parts if p)


def _rows(runs: list[tables.Run]) -> dict[str, list[tables.Run]]:
  rows = collections.defaultdict(list)
  for run in runs:
    if run.finished:
      rows[row_label(run)].append(run)
  return rows


def _mean_ci(values):
  mean, ci = tables.mean_and_ci95(values)
  return mean, ci or 0.0


def rho_sweep(runs: list[tables.Run], path: str) -> Optional[str]:
  """Validation error vs rho per row; returns `path` or None without data."""
  curves = {}
  for label, row_runs in _rows(runs).items():
    by_rho = collections.defaultdict(list)
    for run in row_runs:
      value = tables.metric_value(run, 'top1_error', 'validation')
      if run.method == 'sam' and run.validation and value is not None:
        by_rho[run.rho].append(value)
    if by_rho:
      curves[label] = (by_rho, tables.select_rho(
          [r for r in row_runs if r.method == 'sam']))
  if not curves:
    return None
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  for label, (by_rho, chosen) in sorted(curves.items()):
    rhos = sorted(by_rho)
    stats = [_mean_ci(by_rho[r]) for r in rhos]
    line = ax.errorbar(rhos, [m for m, _ in stats], yerr=[c for _, c in stats],
                       marker='o', capsize=3, label=label)
    if chosen is not None:
      ax.plot([chosen], [_mean_ci(by_rho[chosen])[0]], marker='*',
              markersize=16, color=line[0].get_color())
  ax.set_xscale('log')
  ax.set_xlabel('rho')
  ax.set_ylabel('validation error (%)')
  ax.set_title('SAM rho search on the validation split (star: chosen)')
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def read_metrics(workdir: str) -> dict[str, list[tuple[float, float]]]:
  """metric -> [(epoch or step, value)] from a run's metrics.jsonl."""
  path = os.path.join(workdir, 'metrics.jsonl')
  series = collections.defaultdict(list)
  if not os.path.exists(path):
    return series
  with open(path) as f:
    for line in f:
      if not line.strip():
        continue
      record = json.loads(line)
      x = record.get('epoch', record.get('step'))
      for key, value in record.items():
        if key not in ('step', 'epoch') and isinstance(value, (int, float)):
          series[key].append((x, float(value)))
  return series


def training_curves(runs: list[tables.Run], out_dir: str) -> list[str]:
  """One figure per row with SAM and SGD test runs: train/test error."""
  paths = []
  for label, row_runs in sorted(_rows(runs).items()):
    sam_rho = tables.select_rho([r for r in row_runs if r.method == 'sam'])
    test = [r for r in row_runs if not r.validation]
    if sam_rho is None and len({r.rho for r in test if r.method == 'sam'}) == 1:
      sam_rho = next(r.rho for r in test if r.method == 'sam')
    groups = {
        f'SAM rho={sam_rho:g}' if sam_rho is not None else 'SAM': [
            r for r in test if r.method == 'sam' and sam_rho is not None
            and math.isclose(r.rho, sam_rho)],
    }
    for multiplier in sorted({r.epochs_multiplier for r in test
                              if r.method == 'sgd'}):
      groups[f'SGD {multiplier:g}x epochs'] = [
          r for r in test if r.method == 'sgd'
          and r.epochs_multiplier == multiplier]
    series = {name: [read_metrics(r.workdir) for r in group]
              for name, group in groups.items() if group}
    if len(series) < 2 or not any(s.get('test_error') for runs_s in
                                  series.values() for s in runs_s):
      continue
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for color, (name, seeds) in zip(plt.rcParams['axes.prop_cycle'].by_key()
                                    ['color'], series.items()):
      for i, metrics in enumerate(seeds):
        for ax, key in zip(axes, ('train_error', 'test_error')):
          points = metrics.get(key, [])
          if points:
            ax.plot([x for x, _ in points], [100 * v for _, v in points],
                    color=color, alpha=0.7, linewidth=1,
                    linestyle='--' if '2x' in name else '-',
                    label=name if i == 0 else None)
    for ax, key in zip(axes, ('train error (%)', 'test error (%)')):
      ax.set_xlabel('epoch')
      ax.set_ylabel(key)
      ax.legend(fontsize=8)
    fig.suptitle(f'{label}: SAM vs SGD (one line per seed)')
    fig.tight_layout()
    path = os.path.join(out_dir,
                        'curves_' + re.sub(r'[^A-Za-z0-9.]+', '_', label) + '.png')
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
  return paths


def m_sharpness(runs: list[tables.Run], path: str) -> Optional[str]:
  """Figure 3 (middle): test error vs rho per m, and vs m per rho."""
  cells = collections.defaultdict(list)
  for run in runs:
    value = tables.metric_value(run, 'top1_error')
    if (run.finished and run.method.startswith('sam') and run.m
        and not run.validation and value is not None):
      cells[(int(run.m), run.rho)].append(value)
  if not cells:
    return None
  ms = sorted({m for m, _ in cells})
  rhos = sorted({rho for _, rho in cells})
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
  for m in ms:
    xs = [rho for rho in rhos if (m, rho) in cells]
    stats = [_mean_ci(cells[(m, rho)]) for rho in xs]
    left.errorbar(xs, [s for s, _ in stats], yerr=[c for _, c in stats],
                  marker='o', capsize=3, label=f'm={m}')
  for rho in rhos:
    xs = [m for m in ms if (m, rho) in cells]
    stats = [_mean_ci(cells[(m, rho)]) for m in xs]
    right.errorbar(xs, [s for s, _ in stats], yerr=[c for _, c in stats],
                   marker='o', capsize=3, label=f'rho={rho:g}')
  left.set_xscale('log')
  left.set_xlabel('rho')
  right.set_xscale('log', base=2)
  right.set_xlabel('m (examples per perturbation)')
  for ax in (left, right):
    ax.set_ylabel('test error (%)')
    ax.legend(fontsize=8)
  fig.suptitle('m-sharpness (paper Figure 3, middle)')
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def write_figures(runs: list[tables.Run], out_dir: str) -> list[str]:
  """Writes every figure that the runs support; returns their paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = [rho_sweep(runs, os.path.join(out_dir, 'rho_sweep.png')),
           m_sharpness(runs, os.path.join(out_dir, 'm_sharpness.png'))]
  paths += training_curves(runs, out_dir)
  return [p for p in paths if p]


def _define_flags():
  flags.DEFINE_string('runs', None, 'Directory holding run workdirs.')
  flags.DEFINE_string('out', None, 'Output directory; default RUNS/figures.')


def main(argv):
  del argv
  runs_dir = flags.FLAGS.runs
  if not runs_dir or not os.path.isdir(runs_dir):
    raise app.UsageError(f'--runs must be an existing directory, got {runs_dir!r}')
  paths = write_figures(tables.load_runs(runs_dir),
                        flags.FLAGS.out or os.path.join(runs_dir, 'figures'))
  print('\n'.join(paths) if paths else 'no figures: no finished runs')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
