"""Metric writers: clu's TensorBoard/logging writer plus a JSON-lines file.

The JSON-lines file (`workdir/metrics.jsonl`, one {"step": s, name: value}
object per write) is what the results aggregator and figures read.
"""

import json
import os
from typing import Any, Mapping

import numpy as np
from clu import metric_writers
from clu.metric_writers import interface

METRICS_FILE = 'metrics.jsonl'


class JsonLinesWriter(interface.MetricWriter):
  """Appends scalars to a JSON-lines file; other kinds are not recorded."""

  def __init__(self, path: str):
    self._path = path

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    record = {'step': int(step)}
    record.update({k: float(np.asarray(v)) for k, v in scalars.items()})
    with open(self._path, 'a') as f:
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


def read_metrics(workdir: str) -> list[dict[str, float]]:
  """The records of `workdir/metrics.jsonl`, in order ([] if none)."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def truncate_metrics(workdir: str, last_step: int) -> None:
  """Drops records after `last_step`, which a resumed run will write again."""
  records = [r for r in read_metrics(workdir) if r['step'] <= last_step]
  with open(os.path.join(workdir, METRICS_FILE), 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in records)


def create_writer(workdir: str, is_primary: bool) -> metric_writers.MetricWriter:
  """TensorBoard + logging (+ JSON lines on the primary host)."""
  default = metric_writers.create_default_writer(
      workdir, just_logging=not is_primary, asynchronous=False)
  if not is_primary:
    return default
  return metric_writers.MultiWriter(
      [default, JsonLinesWriter(os.path.join(workdir, METRICS_FILE))])
