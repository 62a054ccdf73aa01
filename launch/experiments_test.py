"""Tests for launch/experiments.py: run counts, the paper's rho, configs."""

import collections
import csv
import functools
import importlib.util
import os

import pytest

from launch import experiments
from launch import rows as rows_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_MODELS = {
    'pyramidnet': 'pyramidnet_272_200',
    'pyramidnet_shakedrop': 'pyramidnet_272_200_shakedrop',
}


@functools.lru_cache(maxsize=None)
def _config_module(path):
  spec = importlib.util.spec_from_file_location(
      os.path.basename(path)[:-3], os.path.join(REPO, path)
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def build(spec):
  """The ConfigDict train.py would build for a run."""
  config = spec.command('runs')[2][len('--config=') :]
  path, _, knobs = config.partition(':')
  return _config_module(path).get_config(knobs)


def test_table1_cifar10_counts():
  runs, waiting = experiments.experiment_set('1', 'cifar10')
  methods = collections.Counter(r.workdir.split('/')[2] for r in runs)
  # 15 rows (5 model settings x 3 augmentations) x 5 seeds each.
  assert len(runs) == 15 * 3 * 5 and not waiting
  assert sum(n for m, n in methods.items() if m.startswith('sam_')) == 75
  assert methods['sgd_x1'] == 75 and methods['sgd_x2'] == 75
  row = [
      r for r in runs if r.workdir.startswith('cifar10/wrn28_10_e200_basic/')
  ]
  assert sorted(r.workdir.split('/', 2)[2] for r in row) == sorted(
      [f'sam_rho0.05_test/seed{s}' for s in range(5)]
      + [f'sgd_x1/seed{s}' for s in range(5)]
      + [f'sgd_x2/seed{s}' for s in range(5)]
  )


def test_rho_grid_validation_then_chosen_rho():
  runs, waiting = experiments.experiment_set(
      '1', 'cifar100', seeds=3, rho_grid=rows_lib.RHO_GRID
  )
  assert sum(r.validation for r in runs) == 15 * 6 * 3
  assert not any(r.method == 'sam' and not r.validation for r in runs)
  assert len(waiting) == 15 * 3 and all(
      'rho=CHOSEN' in w.config for w in waiting
  )
  runs, waiting = experiments.experiment_set(
      '1',
      'cifar100',
      seeds=3,
      rho_grid=rows_lib.RHO_GRID,
      chosen_rho=lambda row, method: 0.2,
  )
  test = [r for r in runs if r.method == 'sam' and not r.validation]
  assert len(test) == 45 and not waiting
  assert all(build(r).sam.rho == 0.2 for r in test[:3])


def test_table10_fixes_rho_and_shares_workdirs_with_table1():
  runs10, _ = experiments.experiment_set(
      '10', 'cifar100', rho_grid=rows_lib.RHO_GRID
  )
  assert not any(r.validation for r in runs10)
  assert {build(r).sam.rho for r in runs10 if r.method == 'sam'} == {0.05}
  runs1, _ = experiments.experiment_set('1', 'cifar100')
  sgd1 = {r.workdir for r in runs1 if r.method == 'sgd'}
  assert sgd1 == {r.workdir for r in runs10 if r.method == 'sgd'}


def _paper_rho():
  with open(os.path.join(REPO, 'results', 'paper_hparams.csv')) as f:
    return list(csv.DictReader(f))


def test_rows_carry_the_papers_rho():
  rows = rows_lib.table_rows('1') + rows_lib.table_rows('5')
  checked, finetune = set(), set()
  for p in _paper_rho():
    if p['source'] in ('table6', 'table7'):
      model = PAPER_MODELS.get(p['model'], p['model'])
      matching = [
          r
          for r in rows
          if r.dataset == p['dataset']
          and r.name.split('/')[1].startswith(model + '_')
          and not r.name.split('/')[1].startswith(model + '_shakedrop')
      ]
      assert matching, p
      for row in matching:
        assert row.rho == float(p['rho']), (row, p)
        checked.add(row.name)
    elif p['source'] == 'table8':
      assert rows_lib.FINETUNE_RHO[p['dataset']] == float(p['rho'])
      finetune.add(p['dataset'])
  assert checked == {r.name for r in rows}
  assert finetune == set(rows_lib.FINETUNE_RHO) - {'imagenet2012'}


@pytest.mark.parametrize('table', ['1', '2', '4', '5', '10', 'fig3'])
def test_every_run_builds_its_config(table):
  runs, _ = experiments.experiment_set(table, seeds=2)
  for spec in runs:
    c = build(spec)
    knobs = dict(
        kv.split('=', 1) for kv in spec.config.split(':', 1)[1].split(',')
    )
    assert c.sam.method == knobs['opt'] and c.seed == int(knobs['seed'])
    assert c.data.validation_split == spec.validation
    assert c.data.dataset == spec.row.dataset
    if spec.method.endswith('sam'):
      assert c.sam.rho == pytest.approx(float(knobs['rho']))
    assert c.optim.epochs_multiplier == float(knobs.get('epochs_x', 1))
    assert c.sam.m == int(knobs.get('m', 0))


def test_table4_methods_and_teachers():
  runs, waiting = experiments.experiment_set('4', seeds=2)
  by_workdir = {r.workdir: r for r in runs}
  counts = collections.Counter(r.method for r in runs)
  assert counts == {
      'sam': 8,
      'bootstrap_sam': 8,
      'sgd': 8,
      'mixup': 32,
      'bootstrap_mixup': 32,
  }
  assert not waiting
  for spec in runs:
    if spec.method.startswith('bootstrap'):
      teacher = by_workdir[spec.after]
      assert teacher.method == spec.method[len('bootstrap_') :]
      assert build(spec).data.bootstrap_teacher_workdir == os.path.join(
          'runs', spec.after
      )
  noise80 = [r for r in runs if 'noise80' in r.workdir and r.method == 'sam']
  assert {build(r).sam.rho for r in noise80} == {0.05}
  assert {build(r).data.label_noise for r in noise80} == {0.8}


def test_table4_grid_bootstrap_teachers_exist():
  runs, _ = experiments.experiment_set(
      '4',
      seeds=1,
      rho_grid=(0.05, 0.1),
      chosen_rho=lambda row, m: 0.1 if m == 'sam' else 0.05,
  )
  workdirs = {r.workdir for r in runs}
  assert all(r.after in workdirs for r in runs if r.after)
  # bootstrap_sam chose 0.05 on validation: its teachers at 0.05 are added.
  assert 'cifar10/resnet32_noise20/sam_rho0.05_test/seed0' in workdirs


def test_custom_rows():
  rows = rows_lib.custom_rows(
      'configs/quickstart.py',
      ['model=wrn10_2', ''],
      lambda k, method: 3.0 if method == 'msam' else 0.05,
      'digits',
      (1,),
      (('sam', None), ('msam', None), ('gsam', 0.1)),
  )
  assert rows[0].methods == (('sam', 0.05), ('msam', 3.0), ('gsam', 0.1))
  assert [r.name for r in rows] == [
      'digits/quickstart_modelwrn10_2',
      'digits/quickstart_default',
  ]
  runs, _ = experiments.experiment_set('custom', seeds=3, rows=rows)
  assert len(runs) == 2 * (3 * 3 + 3)
  assert (
      runs[0].config
      == 'configs/quickstart.py:model=wrn10_2,opt=sam,rho=0.05,seed=0'
  )
  assert rows[1].config == 'configs/quickstart.py:'
  assert (
      experiments.experiment_set('custom', seeds=1, rows=rows[1:])[0][0].config
      == 'configs/quickstart.py:opt=sam,rho=0.05,seed=0'
  )


def test_bad_input():
  with pytest.raises(ValueError, match='table'):
    rows_lib.table_rows('7')
  with pytest.raises(ValueError, match='dataset'):
    rows_lib.table_rows('1', 'svhn_cropped')
  with pytest.raises(ValueError, match='seeds'):
    experiments.experiment_set('1', seeds=0)


def test_figure3_m_sharpness_set_is_sam_on_test_per_m_and_rho():
  runs, waiting = experiments.experiment_set('fig3', seeds=2)
  assert not waiting
  cells = {
      (r.row.name, float(r.config.split('rho=')[1].split(',')[0])) for r in runs
  }
  assert (
      len(runs)
      == len(rows_lib.M_SHARPNESS_M) * len(rows_lib.RHO_GRID) * 2
      == len(cells) * 2
  )
  assert {r.method for r in runs} == {'sam'}
  assert not any(r.validation for r in runs)
  grid = (0.05, 0.1)
  assert (
      len(experiments.experiment_set('fig3', seeds=1, rho_grid=grid)[0])
      == 4 * 2
  )


def test_each_method_searches_its_own_scale_with_one_seed_a_point():
  rows = rows_lib.custom_rows(
      'configs/quickstart.py',
      ['noise=0.4'],
      lambda k, method: 3.0 if method == 'msam' else 0.05,
      'digits',
      (1,),
      (('sam', None), ('msam', None), ('rwp', None)),
  )
  runs, waiting = experiments.experiment_set(
      'custom',
      seeds=5,
      rho_grid=[0.05],
      rows=rows,
      grid_scales=(0.5, 1, 2),
      grid_seeds=1,
      chosen_rho=lambda row, method: None,
  )
  validation = sorted(r.workdir.split('/', 2)[2] for r in runs if r.validation)
  assert validation == [
      'msam_rho1.5_val/seed0',
      'msam_rho3_val/seed0',
      'msam_rho6_val/seed0',
      'sam_rho0.025_val/seed0',
      'sam_rho0.05_val/seed0',
      'sam_rho0.1_val/seed0',
  ]
  # RWP reads no rho: its 5 test runs at its defaults, no grid.
  assert len([r for r in runs if r.method == 'rwp']) == 5
  assert not any(r.validation for r in runs if r.method == 'rwp')
  assert len(waiting) == 10  # SAM's and MSAM's 5 test runs each.
