"""Restoring never destroys a run: faults injected into sam/run/checkpoints.py.

Damage (a missing, truncated or flipped file) falls back to the previous
checkpoint and sets the damaged one aside only once that one restores;
anything else is retried and then stops in one line, with nothing moved.
"""

import glob
import json
import os

import jax
import numpy as np
import pytest

from sam.run import checkpoints

NO_WAIT = (0.0, 0.0, 0.0)


def _state(step):
  rng = np.random.default_rng(step)
  return {
      'w': rng.normal(size=(64, 64)).astype(np.float32),
      'b': rng.normal(size=64).astype(np.float32),
  }


ABSTRACT = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _state(0)
)


@pytest.fixture
def workdir(tmp_path):
  """A run with checkpoints at steps 1, 2 and 3."""
  manager = checkpoints.create_manager(tmp_path, keep=3)
  for step in (1, 2, 3):
    checkpoints.save(manager, step, _state(step), {'wall_time_s': step})
  checkpoints.wait_until_saved(manager)
  return tmp_path


def _restore(workdir, delays=NO_WAIT):
  manager = checkpoints.create_manager(workdir, keep=3)
  return checkpoints.restore_latest(manager, ABSTRACT, delays)


def _steps(workdir):
  return sorted(os.listdir(workdir / 'checkpoints'))


def _set_aside(workdir):
  damaged = workdir / 'checkpoints_damaged'
  return sorted(os.listdir(damaged)) if damaged.exists() else []


def test_an_intact_run_restores_its_newest_step_and_progress(workdir):
  step, state, progress = _restore(workdir)
  assert (step, progress) == (3, {'wall_time_s': 3})
  jax.tree.map(np.testing.assert_array_equal, state, _state(3))


@pytest.mark.parametrize(
    'error',
    [
        PermissionError('[Errno 13] Permission denied'),
        TimeoutError('timed out'),
        ConnectionResetError('Connection reset by peer'),
        ValueError('UNAVAILABLE: GCS is unreachable'),
        OSError('[Errno 5] Input/output error'),
    ],
)
def test_a_transient_error_is_retried_then_restores(
    workdir, monkeypatch, error
):
  real = checkpoints._restore_step
  failures = []

  def flaky(manager, step, abstract_state):
    if len(failures) < 2:
      failures.append(step)
      raise error
    return real(manager, step, abstract_state)

  monkeypatch.setattr(checkpoints, '_restore_step', flaky)
  step, _, _ = _restore(workdir)
  # Both failures were retries of the newest step, which then restored.
  assert (failures, step) == ([3, 3], 3)
  assert _set_aside(workdir) == []


def test_a_lasting_transient_error_stops_in_one_line_moving_nothing(
    workdir, monkeypatch
):
  def unreachable(manager, step, abstract_state):
    raise PermissionError('[Errno 13] Permission denied: checkpoints/3')

  monkeypatch.setattr(checkpoints, '_restore_step', unreachable)
  with pytest.raises(checkpoints.CheckpointReadError) as raised:
    _restore(workdir)
  message = str(raised.value)
  assert '\n' not in message
  assert 'step 3' in message and 'after 4 attempts' in message
  assert 'PermissionError' in message and 'nothing was moved' in message
  assert _steps(workdir) == ['1', '2', '3'] and _set_aside(workdir) == []


def _largest_file(directory):
  paths = [
      p
      for p in glob.glob(f'{directory}/**/*', recursive=True)
      if os.path.isfile(p)
  ]
  return max(paths, key=os.path.getsize)


def _flip_a_byte(path):
  with open(path, 'r+b') as f:
    data = bytearray(f.read())
    data[len(data) // 2] ^= 0xFF
    f.seek(0)
    f.write(data)


@pytest.mark.parametrize('damage', ['truncate', 'delete', 'flip', 'digest'])
def test_a_damaged_newest_step_falls_back_and_is_set_aside(workdir, damage):
  newest = workdir / 'checkpoints' / '3'
  if damage == 'truncate':
    for path in glob.glob(f'{newest}/state/**/*', recursive=True):
      if os.path.isfile(path):
        os.truncate(path, os.path.getsize(path) // 2)
  elif damage == 'delete':
    os.remove(newest / 'state' / 'manifest.ocdbt')
  elif damage == 'flip':
    # Tensorstore does not checksum chunks: the digest catches this.
    _flip_a_byte(_largest_file(newest / 'state'))
  else:
    metadata = newest / 'progress' / 'metadata'
    record = json.loads(metadata.read_text())
    record[checkpoints.DIGEST] = '0' * 64
    metadata.write_text(json.dumps(record))
  step, state, _ = _restore(workdir)
  assert step == 2
  jax.tree.map(np.testing.assert_array_equal, state, _state(2))
  assert _steps(workdir) == ['1', '2']
  assert [name.split('_')[0] for name in _set_aside(workdir)] == ['3']


def test_damaged_steps_are_kept_when_no_older_one_restores(workdir):
  for step in ('1', '2', '3'):
    os.remove(workdir / 'checkpoints' / step / 'state' / 'manifest.ocdbt')
  with pytest.raises(checkpoints.CheckpointReadError) as raised:
    _restore(workdir)
  assert 'every checkpoint' in str(raised.value)
  assert 'steps [3, 2, 1]' in str(raised.value)
  assert _steps(workdir) == ['1', '2', '3'] and _set_aside(workdir) == []


def test_no_checkpoint_is_a_fresh_start(tmp_path):
  assert _restore(tmp_path) is None


@pytest.mark.parametrize(
    'error, damage',
    [
        (FileNotFoundError('no _METADATA'), True),
        (json.JSONDecodeError('Expecting value', '', 0), True),
        (ValueError('DATA_LOSS: Error reading "w/0.0"'), True),
        (ValueError('OUT_OF_RANGE: Requested byte range'), True),
        (ValueError('NOT_FOUND: Error opening "zarr" driver'), True),
        (ValueError('FAILED_PRECONDITION: Truncated Zstd stream'), True),
        (checkpoints.DamagedCheckpointError('digest'), True),
        (PermissionError('denied'), False),
        (ValueError('UNAVAILABLE: try again'), False),
        (ValueError('DEADLINE_EXCEEDED: timed out'), False),
        (ValueError('PERMISSION_DENIED: 403'), False),
        (RuntimeError('something unexpected'), False),
    ],
)
def test_damage_is_told_from_transient_failures(error, damage):
  assert checkpoints.is_damage(error) == damage
  wrapped = RuntimeError('restore failed')
  wrapped.__cause__ = error
  assert checkpoints.is_damage(wrapped) == damage
