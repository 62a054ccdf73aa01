"""The paper's tables as rows: each row a config string that both
optimizers train, and the paper's rho for it.

Paper facts encoded here, beside each table: the rows, and the paper's rho
per row (Tables 6, 7, 8; Sections 3.1, 3.3), checked against
results/paper_hparams.csv by the test. Learning rates, weight decays and
epochs live in configs/. launch/experiments.py expands rows into runs.
"""

import dataclasses
import os
from typing import Callable, Optional, Sequence

from configs import finetune

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
  # (sam.methods name, its rho or None for the row's) of the perturbing
  # runs; a custom set may list the SAM family (launch.sweep --methods).
  methods: tuple[tuple[str, float | None], ...] = (('sam', None),)


def _cifar_rows(dataset: str) -> list[Row]:
  # Table 6 rho: (CIFAR-10, CIFAR-100). WRN-28-10 runs 200 and 1800 epochs;
  # the other models 1800, as in the reference implementation the paper
  # follows (Cubuk et al. 2018; footnote 3 names only WRN as trained for 200).
  settings = [
      ('wrn28_10', 200, (0.05, 0.1)),
      ('wrn28_10', 1800, (0.05, 0.1)),
      ('shake_shake_26_2x96d', 1800, (0.02, 0.05)),
      ('pyramidnet_272_200', 1800, (0.05, 0.2)),
      ('pyramidnet_272_200_shakedrop', 1800, (0.05, 0.05)),
  ]
  return [
      Row(
          f'{dataset}/{model}_e{epochs}_{augment}',
          f'configs/cifar.py:model={model},dataset={dataset},'
          f'augment={augment},epochs={epochs}',
          dataset,
          rhos[dataset == 'cifar100'],
      )
      for model, epochs, rhos in settings
      for augment in CIFAR_AUGMENTS
  ]


def _imagenet_rows() -> list[Row]:
  # Table 2 reports SGD at each epoch count (it overfits from 200 to 400
  # epochs), so no doubled-epoch runs; rho 0.05 for all (Section 3.1).
  return [
      Row(
          f'imagenet2012/{model}_e{epochs}',
          f'configs/imagenet.py:model={model},epochs={epochs}',
          'imagenet2012',
          0.05,
          sgd_epochs_x=(1.0,),
      )
      for model in ('resnet50', 'resnet101', 'resnet152')
      for epochs in (100, 200, 400)
  ]


# Table 8: finetuning rho per dataset (configs/finetune.py holds the facts);
# ImageNet finetuning uses 0.05 (C.2).
FINETUNE_RHO = {**finetune.TABLE8_RHO, 'imagenet2012': finetune.IMAGENET_RHO}


def _finetune_rows(models: Sequence[str]) -> list[Row]:
  # Finetuning runs a fixed number of steps (C.2): no doubled baseline.
  return [
      Row(
          f'{dataset}/finetune_{model}',
          f'configs/finetune.py:model={model},dataset={dataset}',
          dataset,
          rho,
          sgd_epochs_x=(1.0,),
      )
      for model in models
      for dataset, rho in FINETUNE_RHO.items()
  ]


def _noisy_rows() -> list[Row]:
  # Section 3.3: rho 0.1, 0.05 at 80% noise; 200 epochs as Jiang et al.
  return [
      Row(
          f'cifar10/resnet32_noise{int(noise * 100)}',
          f'configs/noisy_labels.py:noise={noise:g}',
          'cifar10',
          0.05 if noise == 0.8 else 0.1,
          sgd_epochs_x=(1.0,),
          table4=True,
      )
      for noise in (0.2, 0.4, 0.6, 0.8)
  ]


def _table5_rows() -> list[Row]:
  rows = []
  for model in ('wrn28_10', 'shake_shake_26_2x96d'):
    for augment in ('basic', 'autoaugment_cutout'):  # Table 7: rho 0.01.
      rows.append(
          Row(
              f'svhn_cropped/{model}_{augment}',
              f'configs/svhn.py:model={model},augment={augment}',
              'svhn_cropped',
              0.01,
          )
      )
    for augment in ('basic', 'cutout'):  # Table 7: 0.05 WRN, 0.02 Shake.
      rows.append(
          Row(
              f'fashion_mnist/{model}_{augment}',
              f'configs/fashion_mnist.py:model={model},' f'augment={augment}',
              'fashion_mnist',
              0.05 if model == 'wrn28_10' else 0.02,
          )
      )
  return rows


def _m_sharpness_rows() -> list[Row]:
  return [
      Row(
          f'cifar10/{M_SHARPNESS_MODEL}_m{m}',
          f'configs/cifar.py:model={M_SHARPNESS_MODEL},m={m}',
          'cifar10',
          FIXED_RHO,
          sgd_epochs_x=(),
      )
      for m in M_SHARPNESS_M
  ]


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
      '11': lambda: [
          r
          for r in _finetune_rows(('efficientnet_b7',))
          if r.dataset != 'imagenet2012'
      ],  # Not in Table 11.
      'fig3': _m_sharpness_rows,
  }[table]()
  if dataset is not None:
    datasets = sorted({r.dataset for r in rows})
    if dataset not in datasets:
      raise ValueError(
          f'dataset={dataset!r} is not in table {table}; valid: ' f'{datasets}'
      )
    rows = [r for r in rows if r.dataset == dataset]
  return rows


def custom_rows(
    config_file: str,
    knob_sets: Sequence[str],
    rho_of: Callable[[str, str], float],
    dataset: str,
    sgd_epochs_x: Sequence[float] = (1.0, 2.0),
    methods: Sequence[tuple[str, float | None]] = (('sam', None),),
) -> list[Row]:
  """Rows of a user's own set: one config file, one knob string per row.

  Args:
    config_file: e.g. 'configs/quickstart.py'.
    knob_sets: e.g. ['model=wrn10_2', 'model=wrn16_2'] ('' for the defaults).
    rho_of: (knob string, method) -> the config's rho for that method (its
      own paper rho where configs/base.METHOD_RHO has one, else the
      setting's SAM rho).
    dataset: directory name for the runs.
    sgd_epochs_x: SGD epoch multipliers.
    methods: (sam.methods name, rho or None for the config's) of the
      perturbing runs.

  Returns:
    Rows named after the config file and the knobs.
  """
  stem = os.path.splitext(os.path.basename(config_file))[0]
  rows = []
  for knobs in knob_sets:
    name = knobs.replace('=', '').replace(',', '_') or 'default'
    config = f'{config_file}:{knobs}' if knobs else f'{config_file}:'
    rows.append(
        Row(
            f'{dataset}/{stem}_{name}',
            config,
            dataset,
            rho_of(knobs, 'sam'),
            tuple(float(x) for x in sgd_epochs_x),
            methods=tuple(
                (method, rho_of(knobs, method) if rho is None else rho)
                for method, rho in methods
            ),
        )
    )
  return rows
