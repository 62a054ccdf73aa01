"""Tests for results/figures.py on synthetic run directories."""

import json
import os

import matplotlib.image
import pytest

from results import figures
from results import plotting
from results import runs as runs_lib


def _write_metrics(workdir, final_error, epochs=4):
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    for epoch in range(1, epochs + 1):
      error = final_error + 0.1 * (epochs - epoch)
      f.write(
          json.dumps(
              {
                  'step': 10 * epoch,
                  'epoch': epoch,
                  'train_error': error / 2,
                  'train_loss': 1.0,
              }
          )
          + '\n'
      )
      f.write(
          json.dumps({'step': 10 * epoch, 'epoch': epoch, 'test_error': error})
          + '\n'
      )


def make_figure_runs(root, make_run):
  """A rho sweep, SAM/SGD runs with metrics and an m x rho grid."""
  for rho, err in ((0.02, 0.06), (0.05, 0.04), (0.1, 0.05)):
    for seed in range(2):
      make_run(
          root,
          f'val_{rho}_{seed}',
          validation_error=err + 0.001 * seed,
          rho=rho,
          seed=seed,
          validation_split=True,
      )
  for seed in range(2):
    _write_metrics(
        make_run(root, f'sam_{seed}', test_error=0.03, seed=seed), 0.03
    )
    _write_metrics(
        make_run(root, f'sgd_{seed}', test_error=0.04, seed=seed, method='sgd'),
        0.04,
    )
    _write_metrics(
        make_run(
            root,
            f'sgd2_{seed}',
            test_error=0.035,
            seed=seed,
            method='sgd',
            epochs_multiplier=2,
        ),
        0.035,
    )
  for m in (16, 64, 256):
    for rho in (0.05, 0.1):
      run = make_run(
          root,
          f'm{m}_{rho}',
          test_error=0.03 + m / 10000,
          rho=rho,
          model='resnet_small',
      )
      path = os.path.join(run, 'summary.json')
      with open(path) as f:
        summary = json.load(f)
      summary['config']['sam']['m'] = m
      with open(path, 'w') as f:
        json.dump(summary, f)
  return runs_lib.load_runs(root)


@pytest.fixture(name='runs')
def fixture_runs(tmp_path, make_run):
  return make_figure_runs(str(tmp_path / 'runs'), make_run)


def test_read_metrics(runs):
  sam = next(r for r in runs if r.workdir.endswith('sam_0'))
  metrics = runs_lib.read_metrics(sam.workdir)
  assert metrics['test_error'] == [
      (1, pytest.approx(0.33)),
      (2, pytest.approx(0.23)),
      (3, pytest.approx(0.13)),
      (4, pytest.approx(0.03)),
  ]
  assert len(metrics['train_error']) == 4 and 'epoch' not in metrics


def test_write_figures(runs, tmp_path):
  out = str(tmp_path / 'figures')
  paths = figures.write_figures(runs, out)
  names = sorted(os.path.basename(p) for p in paths)
  assert names == [
      'curves_cifar10_wrn28_10_basic_200ep.png',
      'm_sharpness.png',
      'rho_sweep.png',
  ]
  for path in paths:
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 600


def test_no_data_no_figure(tmp_path):
  runs = [r for r in runs_lib.load_runs(str(tmp_path))]
  assert figures.write_figures(runs, str(tmp_path / 'f')) == []


def test_error_bars_are_clipped_at_zero():
  assert plotting.lower_errors([0.5, 3.0], [2.0, 1.0]) == [
      [0.5, 1.0],
      [2.0, 1.0],
  ]
