"""The paper's tables as experiment sets: rows x {SAM, SGD} x seeds x rho.

A row is one line of a paper table, a config string that both optimizers
train. A set expands every row into runs, following Section 3.1:
  * SAM on the test set at the paper's rho (default), or, with a rho grid,
    SAM on the 10% validation split at every rho of the grid, then on the test
    set at the rho with the lowest mean validation error (known only once the
    validation runs have finished: `chosen_rho`);
  * SGD on the test set at 1x and 2x the epochs of the SAM run (the paper's
    doubled-epoch baseline, `epochs_x=2`) for the from-scratch tables;
  * Table 4 adds mixup (alpha in {1, 8, 16, 32}) and the bootstrapped SAM and
    mixup runs, which start once their teacher run has finished;
  * 'fig3' (Figure 3, middle) is SAM only, one row per m, on the test set at
    every rho of the grid.
Every run has its own workdir, `<dataset>/<row>/<method>/seed<k>`, shared by
the tables that contain it (Table 10 reuses Table 1's SGD runs).

Paper facts encoded here, beside each table: the rows, and the paper's rho per
row (Tables 6, 7, 8; Sections 3.1, 3.3), checked against
results/paper_hparams.csv by the test. Learning rates, weight decays and
epochs live in configs/.
"""

import dataclasses
import os
from typing import Callable, Optional, Sequence

RHO_GRID = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
FIXED_RHO = 0.05  # Tables 10 and 11 (appendix C.3).
MIXUP_ALPHAS = (1.0, 8.0, 16.0, 32.0)  # Section 3.3.
TABLES = ('1', '2', '3', '4', '5', '10', '11', 'fig3')
# Figure 3 (middle): a small ResNet on CIFAR-10 trained with SAM for several
# m (examples per perturbation) at every rho of the grid, on test. The paper
# does not list its m values; these divide a per-device batch of 256.
M_SHARPNESS_MODEL = 'resnet32'
M_SHARPNESS_M = (4, 16, 64, 256)
CIFAR_AUGMENTS = ('basic', 'cutout', 'autoaugment')


@dataclasses.dataclass(frozen=True)
class Row:
  """One line of a paper table."""
  name: str  # Directory of the row's runs, e.g. 'cifar10/wrn28_10_e200_basic'.
  config: str  # Config file and the row's knobs.
  dataset: str
  rho: float  # The paper's rho for this row.
  sgd_epochs_x: tuple[float, ...] = (1.0, 2.0)
  table4: bool = False  # Adds the mixup and bootstrap lines.


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One training run of a set."""
  workdir: str  # Relative to the runs directory.
  config: str  # `configs/x.py:knobs`, everything but the teacher's path.
  row: Row
  method: str  # 'sam', 'sgd', 'mixup', 'bootstrap_sam', 'bootstrap_mixup'.
  validation: bool = False
  after: str = ''  # Workdir of the teacher run that must finish first.

  def command(self, runs_dir: str, python: str = 'python',
              train_args: Sequence[str] = ()) -> list[str]:
    """The train.py command line of this run under `runs_dir`."""
    config = self.config
    if self.after:
      config += ',teacher=' + os.path.join(runs_dir, self.after)
    return [python, 'train.py', f'--config={config}',
            f'--workdir={os.path.join(runs_dir, self.workdir)}', *train_args]


def _cifar_rows(dataset: str) -> list[Row]:
  # Table 6 rho: (CIFAR-10, CIFAR-100). WRN-28-10 runs 200 and 1800 epochs;
  # the other models 1800, as in the reference implementation the paper
  # follows (Cubuk et al. 2018; footnote 3 names only WRN as trained for 200).
  settings = [('wrn28_10', 200, (0.05, 0.1)), ('wrn28_10', 1800, (0.05, 0.1)),
              ('shake_shake_26_2x96d', 1800, (0.02, 0.05)),
              ('pyramidnet_272_200', 1800, (0.05, 0.2)),
              ('pyramidnet_272_200_shakedrop', 1800, (0.05, 0.05))]
  return [Row(f'{dataset}/{model}_e{epochs}_{augment}',
              f'configs/cifar.py:model={model},dataset={dataset},'
              f'augment={augment},epochs={epochs}',
              dataset, rhos[dataset == 'cifar100'])
          for model, epochs, rhos in settings for augment in CIFAR_AUGMENTS]


def _imagenet_rows() -> list[Row]:
  # Table 2 reports SGD at each epoch count (it overfits from 200 to 400
  # epochs), so no doubled-epoch runs; rho 0.05 for all (Section 3.1).
  return [Row(f'imagenet2012/{model}_e{epochs}',
              f'configs/imagenet.py:model={model},epochs={epochs}',
              'imagenet2012', 0.05, sgd_epochs_x=(1.0,))
          for model in ('resnet50', 'resnet101', 'resnet152')
          for epochs in (100, 200, 400)]


# Table 8: finetuning rho per dataset; ImageNet finetuning uses 0.05 (C.2).
FINETUNE_RHO = {'fgvc_aircraft': 0.1, 'oxford_flowers102': 0.2,
                'oxford_iiit_pet': 0.1, 'cars196': 0.2, 'cifar10': 0.05,
                'cifar100': 0.02, 'birdsnap': 0.05, 'food101': 0.02,
                'imagenet2012': 0.05}


def _finetune_rows(models: Sequence[str]) -> list[Row]:
  # Finetuning runs a fixed number of steps (C.2): no doubled baseline.
  return [Row(f'{dataset}/finetune_{model}',
              f'configs/finetune.py:model={model},dataset={dataset}',
              dataset, rho, sgd_epochs_x=(1.0,))
          for model in models for dataset, rho in FINETUNE_RHO.items()]


def _noisy_rows() -> list[Row]:
  # Section 3.3: rho 0.1, 0.05 at 80% noise; 200 epochs as Jiang et al.
  return [Row(f'cifar10/resnet32_noise{int(noise * 100)}',
              f'configs/noisy_labels.py:noise={noise:g}', 'cifar10',
              0.05 if noise == 0.8 else 0.1, sgd_epochs_x=(1.0,), table4=True)
          for noise in (0.2, 0.4, 0.6, 0.8)]


def _table5_rows() -> list[Row]:
  rows = []
  for model in ('wrn28_10', 'shake_shake_26_2x96d'):
    for augment in ('basic', 'autoaugment_cutout'):  # Table 7: rho 0.01.
      rows.append(Row(f'svhn_cropped/{model}_{augment}',
                      f'configs/svhn.py:model={model},augment={augment}',
                      'svhn_cropped', 0.01))
    for augment in ('basic', 'cutout'):  # Table 7: 0.05 WRN, 0.02 Shake.
      rows.append(Row(f'fashion_mnist/{model}_{augment}',
                      f'configs/fashion_mnist.py:model={model},'
                      f'augment={augment}', 'fashion_mnist',
                      0.05 if model == 'wrn28_10' else 0.02))
  return rows


def _m_sharpness_rows() -> list[Row]:
  return [Row(f'cifar10/{M_SHARPNESS_MODEL}_m{m}',
              f'configs/cifar.py:model={M_SHARPNESS_MODEL},m={m}', 'cifar10',
              FIXED_RHO, sgd_epochs_x=()) for m in M_SHARPNESS_M]


def table_rows(table: str, dataset: Optional[str] = None) -> list[Row]:
  """The rows of a paper table, optionally only those of one dataset."""
  if table not in TABLES:
    raise ValueError(f'table={table!r}; valid: {list(TABLES)}')
  rows = {
      '1': lambda: _cifar_rows('cifar10') + _cifar_rows('cifar100'),
      '2': _imagenet_rows,
      '3': lambda: _finetune_rows(('efficientnet_b7', 'efficientnet_l2')),
      '4': _noisy_rows,
      '5': _table5_rows,
      '10': lambda: _cifar_rows('cifar10') + _cifar_rows('cifar100'),
      '11': lambda: [r for r in _finetune_rows(('efficientnet_b7',))
                     if r.dataset != 'imagenet2012'],  # Not in Table 11.
      'fig3': _m_sharpness_rows,
  }[table]()
  if dataset is not None:
    datasets = sorted({r.dataset for r in rows})
    if dataset not in datasets:
      raise ValueError(f'dataset={dataset!r} is not in table {table}; valid: '
                       f'{datasets}')
    rows = [r for r in rows if r.dataset == dataset]
  return rows


def custom_rows(config_file: str, knob_sets: Sequence[str],
                rho_of: Callable[[str], float], dataset: str,
                sgd_epochs_x: Sequence[float] = (1.0, 2.0)) -> list[Row]:
  """Rows of a user's own set: one config file, one knob string per row.

  Args:
    config_file: e.g. 'configs/quickstart.py'.
    knob_sets: e.g. ['model=wrn10_2', 'model=wrn16_2'] ('' for the defaults).
    rho_of: knob string -> the config's default rho (SAM's rho without grid).
    dataset: directory name for the runs.
    sgd_epochs_x: SGD epoch multipliers.

  Returns:
    Rows named after the config file and the knobs.
  """
  stem = os.path.splitext(os.path.basename(config_file))[0]
  rows = []
  for knobs in knob_sets:
    name = knobs.replace('=', '').replace(',', '_') or 'default'
    config = f'{config_file}:{knobs}' if knobs else f'{config_file}:'
    rows.append(Row(f'{dataset}/{stem}_{name}', config, dataset, rho_of(knobs),
                    tuple(float(x) for x in sgd_epochs_x)))
  return rows


def _knobs(row: Row, **knobs) -> str:
  extra = ','.join(f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}'
                   for k, v in knobs.items())
  return row.config + (',' if not row.config.endswith(':') else '') + extra


def _sam_runs(row: Row, method: str, rho: float, seeds: int, validation: bool,
              teacher: Optional[Callable[[int], str]] = None) -> list[RunSpec]:
  split = 'val' if validation else 'test'
  runs = []
  for seed in range(seeds):
    knobs = dict(opt='sam', rho=float(rho), seed=seed)
    if validation:
      knobs['validation'] = 'true'
    runs.append(RunSpec(f'{row.name}/{method}_rho{rho:g}_{split}/seed{seed}',
                        _knobs(row, **knobs), row, method, validation,
                        teacher(seed) if teacher else ''))
  return runs


def expand_row(row: Row, seeds: int = 5,
               rho_grid: Optional[Sequence[float]] = None,
               chosen_rho: Optional[Callable[[str], Optional[float]]] = None,
               fixed_rho: Optional[float] = None,
               test_rho_grid: Optional[Sequence[float]] = None
               ) -> tuple[list[RunSpec], list[RunSpec]]:
  """The runs of one row.

  Args:
    row: the row.
    seeds: replicas per condition (the paper: 5).
    rho_grid: None: SAM only on test at the row's rho. A grid: SAM on the
      validation split at every rho, then on test at the chosen rho.
    chosen_rho: method ('sam' or 'bootstrap_sam') -> rho chosen on the
      finished validation runs, or None while they are not all finished.
    fixed_rho: SAM on test at this rho only (Tables 10, 11).
    test_rho_grid: SAM on test at every rho of this grid (Figure 3, middle);
      replaces rho_grid and fixed_rho.

  Returns:
    (runs that can be defined now, test runs waiting for the rho choice; the
    latter have rho=CHOSEN in their config and are never run).
  """
  runs, waiting = [], []
  if test_rho_grid is not None:
    for rho in test_rho_grid:
      runs += _sam_runs(row, 'sam', rho, seeds, False)
    rho_grid = fixed_rho = None
  sam_methods = ('sam', 'bootstrap_sam') if row.table4 else ('sam',)
  for method in sam_methods if test_rho_grid is None else ():
    def teacher(rho, split):
      if method == 'sam':
        return None
      return lambda seed: f'{row.name}/sam_rho{rho:g}_{split}/seed{seed}'
    if fixed_rho is not None or rho_grid is None:
      rho = row.rho if fixed_rho is None else fixed_rho
      runs += _sam_runs(row, method, rho, seeds, False, teacher(rho, 'test'))
      continue
    for rho in rho_grid:
      runs += _sam_runs(row, method, rho, seeds, True, teacher(rho, 'val'))
    rho = chosen_rho(method) if chosen_rho else None
    if rho is None:
      waiting += [RunSpec(f'{row.name}/{method}_rhoCHOSEN_test/seed{seed}',
                          _knobs(row, opt='sam', rho='CHOSEN', seed=seed),
                          row, method) for seed in range(seeds)]
      continue
    runs += _sam_runs(row, method, rho, seeds, False, teacher(rho, 'test'))
    if method != 'sam':  # Its teachers, when SAM's own choice differs.
      runs += _sam_runs(row, 'sam', rho, seeds, False)
  for x in row.sgd_epochs_x:
    for seed in range(seeds):
      knobs = dict(opt='sgd', seed=seed)
      if x != 1:
        knobs['epochs_x'] = float(x)
      runs.append(RunSpec(f'{row.name}/sgd_x{x:g}/seed{seed}',
                          _knobs(row, **knobs), row, 'sgd'))
  if row.table4:
    for alpha in MIXUP_ALPHAS:
      for seed in range(seeds):
        mixup = f'{row.name}/mixup_a{alpha:g}/seed{seed}'
        runs.append(RunSpec(mixup, _knobs(row, opt='sgd', mixup=alpha,
                                          seed=seed), row, 'mixup'))
        runs.append(RunSpec(f'{row.name}/bootstrap_mixup_a{alpha:g}/seed{seed}',
                            _knobs(row, opt='sgd', mixup=alpha, seed=seed),
                            row, 'bootstrap_mixup', after=mixup))
  return runs, waiting


def experiment_set(table: str, dataset: Optional[str] = None, seeds: int = 5,
                   rho_grid: Optional[Sequence[float]] = None,
                   chosen_rho: Optional[Callable[[Row, str],
                                                 Optional[float]]] = None,
                   rows: Optional[Sequence[Row]] = None
                   ) -> tuple[list[RunSpec], list[RunSpec]]:
  """All runs of a paper table (or of custom `rows`), without duplicates.

  Args:
    table: '1'-'5', '10', '11', 'fig3' (ignored when `rows` is given).
    dataset: only this dataset's rows.
    seeds: replicas per condition.
    rho_grid: see `expand_row`; ignored by Tables 10 and 11 (rho = 0.05);
      for 'fig3' the test grid (default RHO_GRID).
    chosen_rho: (row, method) -> rho chosen on validation, or None.
    rows: custom rows instead of the table's.

  Returns:
    (runs, runs waiting for the rho choice).
  """
  if seeds < 1:
    raise ValueError(f'seeds={seeds}; valid: an integer >= 1')
  if rows is None:
    rows = table_rows(table, dataset)
  fixed = FIXED_RHO if table in ('10', '11') else None
  runs, waiting = [], []
  test_grid = tuple(rho_grid or RHO_GRID) if table == 'fig3' else None
  for row in rows:
    r, w = expand_row(row, seeds, None if fixed else rho_grid,
                      (lambda m, row=row: chosen_rho(row, m))
                      if chosen_rho else None, fixed, test_grid)
    runs += r
    waiting += w
  unique = list({r.workdir: r for r in runs}.values())
  return unique, list({r.workdir: r for r in waiting}.values())
