"""Tests for results/runs.py, cells.py and tables.py on synthetic run
directories with known numbers (conftest.write_run writes them)."""

import csv
import json
import math
import os

import numpy as np
import pytest
from scipy import stats

from results import cells as cells_lib
from results import runs as runs_lib
from results import tables

T_975 = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 9: 2.2622, 29: 2.0452}


@pytest.mark.parametrize('dof,expected', sorted(T_975.items()))
def test_ci95_uses_the_t_quantile_of_the_tables(dof, expected):
  values = np.arange(dof + 1.0)  # n = dof + 1 values.
  _, half = runs_lib.mean_and_ci95(list(values))
  sem = np.std(values, ddof=1) / np.sqrt(len(values))
  assert half / sem == pytest.approx(expected, abs=1e-4)


def test_t_quantile_symmetry_and_cdf():
  assert stats.t.ppf(0.025, 4) == pytest.approx(-2.7764, abs=1e-4)
  assert stats.t.cdf(0.0, 7) == 0.5
  # dof = 1 is the Cauchy distribution: P(T <= 1) = 3/4.
  assert stats.t.cdf(1.0, 1) == pytest.approx(0.75, abs=1e-12)


def test_mean_and_ci95():
  mean, ci = runs_lib.mean_and_ci95([1.0, 2.0, 3.0, 4.0, 5.0])
  assert mean == 3.0
  assert ci == pytest.approx(2.776445 * math.sqrt(2.5) / math.sqrt(5), rel=1e-5)
  assert runs_lib.mean_and_ci95([4.0]) == (4.0, None)


def make_runs_dir(root, make_run):
  """A runs directory covering Tables 1, 4, 5 and 10; returns `root`."""
  # Table 1, CIFAR-10 WRN-28-10 200 epochs basic. Validation: rho 0.1 wins.
  for seed, err in enumerate([0.05, 0.06]):
    make_run(
        root,
        f'sam_val_r0.05_s{seed}',
        validation_error=err,
        rho=0.05,
        seed=seed,
        validation_split=True,
        test_error=0.5,
    )
  for seed, err in enumerate([0.04, 0.05]):
    make_run(
        root,
        f'sam_val_r0.1_s{seed}',
        validation_error=err,
        rho=0.1,
        seed=seed,
        validation_split=True,
        test_error=0.5,
    )
  # Test at the chosen rho: seeds 0-2 finished, 3 unfinished, 4 not started.
  for seed, err in enumerate([0.030, 0.032, 0.034]):
    make_run(root, f'sam_test_r0.1_s{seed}', test_error=err, rho=0.1, seed=seed)
  make_run(
      root, 'sam_test_r0.1_s3', test_error=0.5, rho=0.1, seed=3, finished=False
  )
  make_run(root, 'sam_test_r0.1_s4', rho=0.1, seed=4, summary=False)
  # A better test error at the rho that validation did not choose: ignored by
  # Table 1, used by Table 10 (rho = 0.05 fixed).
  make_run(root, 'sam_test_r0.05_s0', test_error=0.01, rho=0.05)
  # SGD: the 2x-epoch runs are better and are reported.
  for seed, err in enumerate([0.040, 0.042]):
    make_run(root, f'sgd_x1_s{seed}', test_error=err, method='sgd', seed=seed)
  for seed, err in enumerate([0.036, 0.038]):
    make_run(
        root,
        f'sgd_x2_s{seed}',
        test_error=err,
        method='sgd',
        seed=seed,
        epochs_multiplier=2,
    )
  # Table 4: 20% label noise, SGD and mixup with two alphas.
  noisy = dict(model='resnet32', label_noise=0.2)
  make_run(root, 'noise_sgd', test_error=0.15, method='sgd', **noisy)
  make_run(
      root,
      'noise_mixup1',
      test_error=0.08,
      method='sgd',
      mixup_alpha=1.0,
      **noisy,
  )
  make_run(
      root,
      'noise_mixup8',
      test_error=0.07,
      method='sgd',
      mixup_alpha=8.0,
      **noisy,
  )
  # Table 5: Fashion-MNIST's "autoaugment" line is cutout only.
  make_run(
      root,
      'fashion',
      test_error=0.0361,
      dataset='fashion_mnist',
      augment='cutout',
      num_epochs=200,
  )
  return root


@pytest.fixture(name='runs_dir')
def fixture_runs_dir(tmp_path, make_run):
  return make_runs_dir(str(tmp_path / 'runs'), make_run)


def _cells(runs_dir):
  cells = cells_lib.build_cells(
      runs_lib.load_runs(runs_dir), cells_lib.load_paper()
  )
  return {
      (
          c.row.table,
          c.row.dataset,
          c.row.model,
          c.row.augment,
          c.row.epochs,
          c.row.label_noise,
          c.method,
      ): c
      for c in cells
  }


def test_load_runs_counts_unfinished(runs_dir):
  runs = runs_lib.load_runs(runs_dir)
  assert len(runs) == 18
  assert sorted(
      os.path.basename(r.workdir) for r in runs if not r.finished
  ) == ['sam_test_r0.1_s3', 'sam_test_r0.1_s4']


def test_sam_rho_chosen_on_validation(runs_dir):
  cell = _cells(runs_dir)[
      ('1', 'cifar10', 'wrn28_10', 'basic', 200, 0.0, 'sam')
  ]
  assert cell.rho == 0.1
  assert cell.values == pytest.approx([3.0, 3.2, 3.4])  # Unfinished excluded.
  assert cell.mean == pytest.approx(3.2)
  assert cell.ci95 == pytest.approx(4.302653 * 0.2 / math.sqrt(3), rel=1e-5)
  assert cell.unfinished == 2
  assert cell.paper == 2.7
  assert tables.format_diff(cell) == '+0.50'


def test_sgd_best_of_1x_and_2x(runs_dir):
  cell = _cells(runs_dir)[
      ('1', 'cifar10', 'wrn28_10', 'basic', 200, 0.0, 'sgd')
  ]
  assert cell.mean == pytest.approx(3.7)
  assert cell.choice.startswith('2x epochs')
  assert cell.paper == 3.5


def test_table10_fixes_rho(runs_dir):
  cell = _cells(runs_dir)[
      ('10', 'cifar10', 'wrn28_10', 'basic', 200, 0.0, 'sam')
  ]
  assert cell.values == pytest.approx([1.0])
  assert cell.ci95 is None


def test_cells_without_runs_say_so(runs_dir):
  cells = _cells(runs_dir)
  cell = cells[('1', 'cifar10', 'wrn28_10', 'cutout', 200, 0.0, 'sam')]
  assert not cell.values and tables.format_ours(cell) == 'no runs'
  assert cell.paper == 2.3
  # Only CIFAR-10 has runs, so CIFAR-100's paper rows are not listed.
  assert not any(k[1] == 'cifar100' for k in cells)


def test_label_noise_accuracy_and_best_mixup_alpha(runs_dir):
  cells = _cells(runs_dir)
  sgd = cells[('4', '', 'resnet32', '', None, 0.2, 'sgd')]
  assert sgd.mean == pytest.approx(85.0) and sgd.paper == 84.8
  mixup = cells[('4', '', 'resnet32', '', None, 0.2, 'mixup')]
  assert mixup.mean == pytest.approx(93.0) and mixup.choice == 'alpha=8'
  assert (
      cells[('4', '', 'resnet32', '', None, 0.2, 'bootstrap_sam')].paper == 95.4
  )
  # The other noise rates have paper values and no runs.
  assert not cells[('4', '', 'resnet32', '', None, 0.4, 'sam')].values


def test_table5_augment_mapping(runs_dir):
  cell = _cells(runs_dir)[
      ('5', 'fashion_mnist', 'wrn28_10', 'cutout', 200, 0.0, 'sam')
  ]
  assert cell.paper == 3.61 and cell.rho == 0.05
  assert 'no validation runs' in cell.choice


def test_write_tables_outputs(runs_dir, tmp_path):
  out = str(tmp_path / 'out')
  text = tables.write_tables(runs_lib.load_runs(runs_dir), out)
  assert '16 finished runs, 2 unfinished' in text
  assert '3.20 ± 0.50 (n=3, rho=0.1 on validation) [2 unfinished]' in text
  assert '## Table 10' in text and '## Table 4' in text
  for name in (
      'tables.md',
      'cells.csv',
      'table1.csv',
      'table4.csv',
      'table5.csv',
      'table10.csv',
      'unfinished.txt',
  ):
    assert os.path.exists(os.path.join(out, name)), name
  with open(os.path.join(out, 'table1.csv')) as f:
    rows = list(csv.reader(f))
  header = rows[0]
  assert header[:3] == ['model', 'epochs', 'augment']
  line = next(r for r in rows if r[:3] == ['wrn28_10', '200 epochs', 'basic'])
  assert line[header.index('cifar10 sgd paper')] == '3.5 ± 0.1'
  assert line[header.index('cifar10 sgd diff')] == '+0.20'
  with open(os.path.join(out, 'unfinished.txt')) as f:
    assert len(f.read().split()) == 2


def test_explicit_m_is_its_own_method(tmp_path, make_run):
  root = str(tmp_path)
  make_run(root, 'plain', test_error=0.03)
  run = make_run(root, 'm32', test_error=0.02)
  with open(os.path.join(run, 'summary.json')) as f:
    summary = json.load(f)
  summary['config']['sam']['m'] = 32
  with open(os.path.join(run, 'summary.json'), 'w') as f:
    json.dump(summary, f)
  cells = _cells(root)
  key = ('1', 'cifar10', 'wrn28_10', 'basic', 200, 0.0)
  assert cells[key + ('sam',)].values == pytest.approx([3.0])
  assert cells[key + ('sam_m32',)].values == pytest.approx([2.0])
  assert cells[key + ('sam_m32',)].paper is None


def test_missing_metric_is_reported(tmp_path, make_run):
  make_run(
      str(tmp_path),
      'r50',
      test_error=0.225,
      dataset='imagenet2012',
      model='resnet50',
      num_epochs=100,
  )
  cells = {
      c.metric: c
      for c in cells_lib.build_cells(
          runs_lib.load_runs(str(tmp_path)), cells_lib.load_paper()
      )
      if c.method == 'sam' and c.row.model == 'resnet50' and c.row.epochs == 100
  }
  assert cells['top1_error'].values == pytest.approx([22.5])
  assert cells['top1_error'].paper == 22.5
  assert tables.format_ours(cells['top5_error']) == (
      'no result (no top5_error in the summaries)'
  )
  assert cells['top5_error'].paper == 6.28


def test_top5_error_is_aggregated_over_seeds(tmp_path, make_run):
  for seed, top5 in enumerate((0.061, 0.065)):
    make_run(
        str(tmp_path),
        f'r50_{seed}',
        test_error=0.22,
        test_top5_error=top5,
        dataset='imagenet2012',
        model='resnet50',
        num_epochs=100,
        seed=seed,
    )
  cells = {
      c.metric: c
      for c in cells_lib.build_cells(
          runs_lib.load_runs(str(tmp_path)), cells_lib.load_paper()
      )
      if c.method == 'sam' and c.row.model == 'resnet50' and c.row.epochs == 100
  }
  assert cells['top5_error'].values == pytest.approx([6.1, 6.5])
  assert cells['top5_error'].mean == pytest.approx(6.3)


def test_every_method_of_the_family_is_its_own_cell(tmp_path, make_run):
  root = str(tmp_path)
  make_run(root, 'sam', test_error=0.03)
  make_run(root, 'random', test_error=0.04, method='random')
  cells = _cells(root)
  key = ('1', 'cifar10', 'wrn28_10', 'basic', 200, 0.0)
  assert cells[key + ('random',)].values == pytest.approx([4.0])
  assert cells[key + ('random',)].rho == 0.05  # A method with a rho.


def test_a_damaged_record_reads_as_unfinished(tmp_path, make_run):
  run = make_run(str(tmp_path), 'r', test_error=0.03)
  with open(os.path.join(run, 'summary.json'), 'w') as f:
    f.write('{"config": {"da')
  (loaded,) = runs_lib.load_runs(str(tmp_path))
  assert not loaded.finished


def test_runs_of_one_name_and_other_fields_are_other_methods(
    tmp_path, make_run
):
  """summary.json's method record splits LookSAM at alpha 0.3 from LookSAM
  at its default, and carries the SAM fraction to the cell and cells.csv;
  label-noise runs on the digits are not Table 4 (CIFAR-10's)."""
  root = str(tmp_path)
  for name, alpha, error in (('a', 0.7, 0.05), ('b', 0.3, 0.03)):
    run = make_run(root, name, test_error=error, method='looksam')
    with open(os.path.join(run, 'summary.json')) as f:
      summary = json.load(f)
    summary['config']['data'].update(dataset='digits', label_noise=0.4)
    summary['method'] = {
        'name': 'looksam',
        'fields': {'looksam_alpha': alpha, 'looksam_every': 5, 'rho': 0.05},
        'sam_fraction': 0.2,
    }
    with open(os.path.join(run, 'summary.json'), 'w') as f:
      json.dump(summary, f)
  found = {
      c.method: c for c in cells_lib.build_cells(runs_lib.load_runs(root), [])
  }
  assert set(found) == {'looksam', 'looksam[looksam_alpha=0.3]'}
  assert found['looksam'].values == pytest.approx([5.0])
  assert found['looksam[looksam_alpha=0.3]'].values == pytest.approx([3.0])
  assert found['looksam'].row.table == 'other'
  assert found['looksam'].sam_fraction == pytest.approx(0.2)
  text = tables.write_tables(runs_lib.load_runs(root), tmp_path / 'out')
  assert 'SAM steps 20%' in text
  assert "this code's runs (no paper numbers apply)" in text
  assert 'paper' not in text.split('## ')[1].splitlines()[2]  # the header
