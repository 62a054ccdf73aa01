"""Metric writers: clu's TensorBoard/logging writer plus a JSON-lines file.

The JSON-lines file (`workdir/metrics.jsonl`, one {"step": s, name: value}
object per write) is what the results aggregator and figures read.
"""

import json
from typing import Any, Mapping

from clu import metric_writers
from clu.metric_writers import interface
from etils import epath
import numpy as np

METRICS_FILE = 'metrics.jsonl'


class JsonLinesWriter(interface.MetricWriter):
  """Appends scalars to a JSON-lines file; other kinds are not recorded."""

  def __init__(self, path: epath.PathLike):
    self._path = epath.Path(path)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    record = {'step': int(step)}
    record.update({k: float(np.asarray(v)) for k, v in scalars.items()})
    with self._path.open('a') as f:
      f.write(json.dumps(record) + '\n')

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    pass

  def close(self):
    pass


def read_metrics(workdir: epath.PathLike) -> list[dict[str, float]]:
  """The records of `workdir/metrics.jsonl`, in order ([] if none)."""
  path = epath.Path(workdir) / METRICS_FILE
  if not path.exists():
    return []
  return [
      json.loads(line) for line in path.read_text().splitlines() if line.strip()
  ]


def truncate_metrics(workdir: epath.PathLike, last_step: int) -> None:
  """Drops records after `last_step`, which a resumed run will write again."""
  records = [r for r in read_metrics(workdir) if r['step'] <= last_step]
  (epath.Path(workdir) / METRICS_FILE).write_text(
      ''.join(json.dumps(r) + '\n' for r in records)
  )


def create_writer(
    workdir: epath.PathLike, is_primary: bool
) -> metric_writers.MetricWriter:
  """TensorBoard + logging (+ JSON lines on the primary host).

  Args:
    workdir: the run's workdir.
    is_primary: whether this process writes files (process 0).

  Returns:
    A clu MetricWriter.
  """
  default = metric_writers.create_default_writer(
      str(workdir), just_logging=not is_primary, asynchronous=False
  )
  if not is_primary:
    return default
  return metric_writers.MultiWriter(
      [default, JsonLinesWriter(epath.Path(workdir) / METRICS_FILE)]
  )
