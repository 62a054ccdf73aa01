"""The cost-versus-error points, table and figure from run directories."""

import json

import numpy as np
import pytest

from results import cost_error
from results import runs

# (method, rho, epochs_x, validation) -> per-seed test errors and wall-clock.
RUNS = {
    ('sgd', None, 1, False): ([0.08, 0.06, 0.07], 40.0),
    ('sgd', None, 2, False): ([0.07, 0.05, 0.06], 80.0),
    ('sam', 0.05, 1, False): ([0.03, 0.04, 0.035], 90.0),
    ('sam', 0.05, 1, True): ([0.05], 85.0),
    ('sam', 0.1, 1, True): ([0.09], 85.0),
    ('looksam', 0.05, 1, False): ([0.04, 0.03, 0.05], 50.0),
}


def write_runs(root):
  for (method, rho, epochs_x, validation), (errors, wall) in RUNS.items():
    for seed, error in enumerate(errors):
      config = {
          'data': {
              'dataset': 'digits',
              'label_noise': 0.4,
              'validation_split': validation,
          },
          'model': {'name': 'wrn10_2'},
          'optim': {'num_epochs': 30, 'epochs_multiplier': epochs_x},
          'sam': {'method': method, 'rho': rho or 0.05},
          'seed': seed,
      }
      split = 'validation' if validation else 'test'
      fraction = {'sgd': 0.0, 'looksam': 0.2}.get(method, 1.0)
      summary = {
          'config': config,
          'finished': True,
          'wall_time_s': wall,
          'method': {'name': method, 'fields': {}, 'sam_fraction': fraction},
          'final': {f'{split}_error': error, 'test_error': error},
      }
      workdir = root / f'{method}_{rho}_{epochs_x}_{split}' / f'seed{seed}'
      workdir.mkdir(parents=True)
      (workdir / 'summary.json').write_text(json.dumps(summary))


def test_points_take_the_validated_rho_and_sgd_per_multiplier(tmp_path):
  write_runs(tmp_path)
  found = {p.method: p for p in cost_error.points(runs.load_runs(tmp_path))}
  assert set(found) == {'sgd x1', 'sgd x2', 'sam', 'looksam'}
  assert found['sam'].rho == 0.05  # 5% on validation against 9% at 0.1.
  np.testing.assert_allclose(found['sam'].errors, [3.0, 4.0, 3.5])
  assert found['sam'].wall_s == 90.0
  assert found['looksam'].sam_fraction == pytest.approx(0.2)
  assert found['sgd x2'].error == pytest.approx(6.0)
  assert found['sam'].row == 'digits wrn10_2 30 epochs, 40% noise'


def test_markdown_sets_each_method_against_sam_and_equal_compute_sgd(
    tmp_path,
):
  write_runs(tmp_path)
  found = cost_error.points(runs.load_runs(tmp_path))
  table = cost_error.markdown(found)
  # LookSAM (50 s) is nearest SGD x1 (40 s): 4.00 - 7.00 = -3.00, Welch
  # interval from the two samples' variances (1.00 each, 3 seeds).
  se = np.sqrt(1.0 / 3 + 1.0 / 3)
  half = 2.776 * se  # t(0.975, 4 degrees of freedom).
  lines = table.splitlines()
  line = next(x for x in lines if x.startswith('| looksam'))
  assert '| 4.00 +- 2.48 | 3 | 50 | 1.25 | 0.20 |' in line
  assert f'| sgd x1 (7.00) | -3.00 +- {half:.2f} |' in line
  sam = next(x for x in lines if x.startswith('| sam'))
  assert '| sgd x2 (6.00) |' in sam
  path = cost_error.figure(found, tmp_path / 'cost_error.png')
  assert (tmp_path / 'cost_error.png').read_bytes()[:4] == b'\x89PNG'
  assert path.endswith('cost_error.png')
