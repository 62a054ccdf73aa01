"""Run directories as data: each run's identity (from its config) and its
final numbers, and the statistics over seeds.

A run is a directory holding `summary.json` (finished), `config.json`
(started) or `launch.json` (written by launch.sweep before it starts). Its
identity comes from the config only: dataset, model, augment, epochs (the
row), the method and its rho and m, the epoch multiplier, the seed, the
validation holdout, label noise, mixup and bootstrap.
"""

import dataclasses
import json
from typing import Any, Optional

from etils import epath
import numpy as np
from scipy import stats

from configs import base

SUMMARY_FILE = 'summary.json'
RECORD_FILES = ('config.json', 'launch.json')
METRICS_FILE = 'metrics.jsonl'


def mean_and_ci95(values: list[float]) -> tuple[float, Optional[float]]:
  """Mean and half-width of the two-sided 95% t-interval (None below 2
  values)."""
  n = len(values)
  mean = float(np.mean(values))
  if n < 2:
    return mean, None
  sem = float(np.std(values, ddof=1)) / np.sqrt(n)
  return mean, float(stats.t.ppf(0.975, n - 1)) * sem


def _get(config: dict[str, Any], dotted: str, default=None):
  node = config
  for part in dotted.split('.'):
    if not isinstance(node, dict) or part not in node or node[part] is None:
      return default
    node = node[part]
  return node


def _field(dotted: str, default=None):
  return property(lambda self: _get(self.config, dotted, default))


@dataclasses.dataclass(frozen=True)
class Run:
  """One run directory: its identity (from its config, and for a finished
  run the method record of its summary) and final numbers."""

  workdir: str
  config: dict[str, Any]
  finished: bool
  final: dict[str, float]
  # summary.json's 'method': the fields the method read, its SAM fraction.
  method_record: dict[str, Any] = dataclasses.field(default_factory=dict)
  # summary.json's training wall-clock, seconds.
  wall_time_s: Optional[float] = None

  dataset = _field('data.dataset', '')
  model = _field('model.name', '')
  augment = _field('data.augment', '')
  epochs = _field('optim.num_epochs')
  epochs_multiplier = _field('optim.epochs_multiplier', 1)
  base_method = _field('sam.method', 'sam')
  m = _field('sam.m')
  seed = _field('seed', 0)

  total_epochs = property(
      lambda self: (self.epochs or 0) * self.epochs_multiplier
  )
  rho = property(lambda self: float(_get(self.config, 'sam.rho', 0.0)))
  validation = property(
      lambda self: bool(_get(self.config, 'data.validation_split', False))
  )
  label_noise = property(
      lambda self: float(_get(self.config, 'data.label_noise', 0.0))
  )
  mixup_alpha = property(
      lambda self: float(_get(self.config, 'data.mixup_alpha', 0.0))
  )
  bootstrap = property(
      lambda self: bool(_get(self.config, 'data.bootstrap_teacher_workdir', ''))
  )

  @property
  def method(self) -> str:
    """'sam', 'sgd', 'mixup', 'bootstrap_sam', 'sam_m32', 'random', ...,
    with the method's fields that differ from configs/base.py's defaults
    (rho apart: cells choose it), e.g. 'looksam[looksam_alpha=0.3]', as
    the run's summary records them: runs of one name and other fields
    are other methods."""
    name = self.base_method
    if name == 'sam' and self.m:  # An explicit m-sharpness m (Figure 3).
      name = f'sam_m{self.m}'
    if name == 'sgd' and self.mixup_alpha > 0:
      name = 'mixup'
    changed = self.changed_fields
    if changed:
      name += (
          '['
          + ','.join(
              f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}'
              for k, v in changed.items()
          )
          + ']'
      )
    return 'bootstrap_' + name if self.bootstrap else name

  @property
  def changed_fields(self) -> dict[str, Any]:
    """The recorded method fields (rho apart) that differ from the
    defaults; {} for a run without a summary."""
    defaults = base.sam_section()
    fields = self.method_record.get('fields', {})
    return {
        k: v
        for k, v in sorted(fields.items())
        if k != 'rho' and k in defaults and defaults[k] != v
    }

  @property
  def sam_fraction(self) -> Optional[float]:
    """The fraction of SAM steps summary.json records, or None."""
    return self.method_record.get('sam_fraction')

  @property
  def table(self) -> str:
    """The paper table this run belongs to ('other' for none of them):
    Table 4 holds CIFAR-10's label-noise runs; another dataset's are
    'other'."""
    noisy = self.label_noise > 0 or self.bootstrap or self.mixup_alpha > 0
    if noisy and self.dataset == 'cifar10':
      return '4'
    if self.model.startswith('efficientnet'):
      return '3'
    if self.dataset == 'imagenet2012':
      return '2'
    if self.dataset in ('svhn_cropped', 'fashion_mnist'):
      return '5'
    if self.dataset in ('cifar10', 'cifar100'):
      return '1'
    return 'other'


def _read_json(path: epath.Path) -> Optional[dict]:
  """The record at `path`, or None if it is being written or damaged."""
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return None


def load_run(workdir: epath.Path) -> Optional[Run]:
  """The Run in `workdir`, or None if it holds none."""
  summary = workdir / SUMMARY_FILE
  if summary.exists():
    record = _read_json(summary) or {}
    return Run(
        str(workdir),
        record.get('config', {}),
        bool(record.get('finished', False)),
        record.get('final') or {},
        record.get('method') or {},
        record.get('wall_time_s'),
    )
  for name in RECORD_FILES:
    if (workdir / name).exists():
      record = _read_json(workdir / name) or {}
      return Run(str(workdir), record.get('config', record), False, {})
  return None


def load_runs(runs_dir: epath.PathLike) -> list[Run]:
  """Every run under `runs_dir` (searched recursively), in path order; a
  run's own subfolders (checkpoints, logs) hold no other runs."""
  found = []
  pending = [epath.Path(runs_dir)]
  while pending:
    directory = pending.pop()
    run = load_run(directory)
    if run is not None:
      found.append(run)
      continue
    pending += sorted(
        (p for p in directory.iterdir() if p.is_dir()), reverse=True
    )
  return found


def read_metrics(workdir: epath.PathLike) -> dict[str, list[tuple]]:
  """metric -> [(epoch or step, value)] from a run's metrics.jsonl."""
  path = epath.Path(workdir) / METRICS_FILE
  series = {}
  if not path.exists():
    return series
  for line in path.read_text().splitlines():
    try:
      record = json.loads(line)
    except ValueError:  # A line being written.
      continue
    x = record.get('epoch', record.get('step'))
    for key, value in record.items():
      if key not in ('step', 'epoch') and isinstance(value, (int, float)):
        series.setdefault(key, []).append((x, float(value)))
  return series
