"""The JSON-lines metrics file of a run, without TensorFlow.

`workdir/metrics.jsonl` holds one {"step": s, name: value} object per write;
the results aggregator and figures read it. On a local disk each record is
appended as it is written. Cloud Storage objects cannot be appended to, so
for a gs:// workdir the records are kept in memory and the whole file is
rewritten at each flush (every checkpoint and the end of the run): a killed
run loses only records after its last checkpoint, which the resumed run
writes again. `JsonLinesWriter` has clu's MetricWriter methods, so clu's
MultiWriter takes it beside TensorBoard (sam/run/writers.py), but imports
nothing of clu: clu's writers need TensorFlow, which accelerator machines
may lack (benchmarks/accelerator.py runs the loop with this writer alone).
"""

import json
from typing import Any, Mapping

from etils import epath
import numpy as np

from sam.run import files

METRICS_FILE = 'metrics.jsonl'


class JsonLinesWriter:
  """Writes scalars to a JSON-lines file; other kinds are not recorded."""

  def __init__(self, path: epath.PathLike, last_kept_step: int | None = None):
    """Opens the file, dropping records after `last_kept_step`.

    Args:
      path: the JSON-lines file (local or gs://).
      last_kept_step: the step a resumed run restarts from; later records
        are dropped (the run writes them again). None keeps every record.
    """
    self._path = epath.Path(path)
    self._remote = files.is_remote(self._path)
    records = read_metrics_file(self._path)
    kept = [
        r
        for r in records
        if last_kept_step is None or r['step'] <= last_kept_step
    ]
    self._records = kept if self._remote else []
    self._unflushed = False
    if len(kept) != len(records):
      _write_atomically(self._path, kept)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    record = {'step': int(step)}
    record.update({k: float(np.asarray(v)) for k, v in scalars.items()})
    if self._remote:
      self._records.append(record)
      self._unflushed = True
      return
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
    if self._unflushed:
      _write_atomically(self._path, self._records)
      self._unflushed = False

  def close(self):
    self.flush()


def _write_atomically(path: epath.Path, records: list[dict]) -> None:
  files.write_text_atomically(
      path, ''.join(json.dumps(r) + '\n' for r in records)
  )


def read_metrics_file(path: epath.PathLike) -> list[dict[str, float]]:
  """The records of a JSON-lines file, in order ([] if it does not exist)."""
  path = epath.Path(path)
  if not path.exists():
    return []
  return [
      json.loads(line) for line in path.read_text().splitlines() if line.strip()
  ]


def read_metrics(workdir: epath.PathLike) -> list[dict[str, float]]:
  """The records of `workdir/metrics.jsonl`, in order ([] if none)."""
  return read_metrics_file(epath.Path(workdir) / METRICS_FILE)
