"""Tests for sam/run/metrics_file.py: the JSON-lines metrics file."""

import json

from sam.run import metrics_file


def _write(path, steps):
  path.write_text(
      ''.join(json.dumps({'step': s, 'loss': s}) + '\n' for s in steps)
  )


def test_records_are_appended_as_they_are_written(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  writer = metrics_file.JsonLinesWriter(path)
  writer.write_scalars(2, {'loss': 0.5})
  # On a local disk the record is there before any flush.
  assert metrics_file.read_metrics(tmp_path) == [{'step': 2, 'loss': 0.5}]
  writer.write_scalars(4, {'loss': 0.25, 'error': 0.1})
  assert [r['step'] for r in metrics_file.read_metrics(tmp_path)] == [2, 4]


def test_a_resumed_run_keeps_records_up_to_its_restored_step(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  _write(path, [2, 4, 6, 8])
  metrics_file.JsonLinesWriter(path, last_kept_step=6)
  assert [r['step'] for r in metrics_file.read_metrics(tmp_path)] == [2, 4, 6]
  # None (and a step past the last record) changes nothing.
  before = path.read_text()
  metrics_file.JsonLinesWriter(path)
  metrics_file.JsonLinesWriter(path, last_kept_step=100)
  assert path.read_text() == before
  assert not (tmp_path / 'metrics.jsonl.tmp').exists()
