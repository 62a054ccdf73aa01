"""Orbax checkpoints of a run: the train state plus a little progress record.

Orbax writes each step into a temporary directory and renames it when
complete, so a run killed mid-save leaves the previous checkpoint as the
latest one.
"""

import time
from typing import Any

from absl import logging
from etils import epath
import jax
import orbax.checkpoint as ocp

from sam.run import files

CHECKPOINTS = 'checkpoints'
DAMAGED = 'checkpoints_damaged'


def create_manager(workdir: epath.PathLike, keep: int) -> ocp.CheckpointManager:
  """A manager for `workdir/checkpoints`, keeping the newest `keep` steps.

  Args:
    workdir: the run's workdir.
    keep: how many of the newest checkpoints to keep.

  Returns:
    The orbax CheckpointManager.
  """
  return ocp.CheckpointManager(
      files.resolve(workdir) / CHECKPOINTS,
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
      item_names=('state', 'progress'),
  )


class CheckpointWriteError(RuntimeError):
  """A checkpoint could not be written (disk full, workdir unwritable)."""


def _write_error(manager, step, error) -> CheckpointWriteError:
  detail = str(error).splitlines()[0] if str(error) else ''
  return CheckpointWriteError(
      f'cannot write the checkpoint of step {step} in {manager.directory} '
      f'({type(error).__name__}: {detail}); the latest complete checkpoint '
      f'is step {manager.latest_step()}'
  )


def save(
    manager: ocp.CheckpointManager,
    step: int,
    state: Any,
    progress: dict[str, Any],
) -> None:
  """Saves an unreplicated (host) train state and a JSON progress record.

  Args:
    manager: from `create_manager`.
    step: the number of optimizer steps taken.
    state: the train state, one replica.
    progress: JSON-serialisable facts that must survive a restart
      (e.g. the accumulated wall time).

  Raises:
    CheckpointWriteError: this or an earlier (asynchronous) save failed.
  """
  # Orbax raises many types for a failed write (OSError, ValueError,
  # tensorstore errors); any of them means no new checkpoint.
  try:
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(jax.device_get(state)),
            progress=ocp.args.JsonSave(progress),
        ),
    )
  except Exception as e:  # pylint: disable=broad-except
    raise _write_error(manager, step, e) from e


def wait_until_saved(manager: ocp.CheckpointManager) -> None:
  """Blocks until pending saves are complete.

  Raises:
    CheckpointWriteError: a pending save failed.
  """
  try:
    manager.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-except
    raise _write_error(manager, 'pending', e) from e


def restore_latest(manager: ocp.CheckpointManager, abstract_state: Any):
  """Restores the newest readable checkpoint, or returns None if none is.

  A checkpoint whose files were damaged after it was written (a truncated
  or deleted file) is skipped with a warning and moved to
  `checkpoints_damaged/` (kept for inspection, out of the way of the step
  that will be saved again), and the one before it is used.

  Args:
    manager: from `create_manager`.
    abstract_state: a train state with the expected structure (its values
      are only used for their shapes and dtypes).

  Returns:
    (step, state, progress) or None.
  """
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = manager.restore(
          step,
          args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state),
              progress=ocp.args.JsonRestore(),
          ),
      )
    except Exception as e:  # pylint: disable=broad-except
      # Orbax raises many types for damaged files (ValueError, OSError,
      # tensorstore errors); any of them means this step is unusable.
      logging.warning(
          'Checkpoint at step %d is unreadable (%s: %s); falling '
          'back to the previous one.',
          step,
          type(e).__name__,
          str(e).splitlines()[0] if str(e) else '',
      )
      set_aside(manager, step)
      continue
    return step, restored['state'], dict(restored['progress'])
  return None


def set_aside(manager: ocp.CheckpointManager, step: int) -> None:
  """Moves checkpoint `step` to a sibling `checkpoints_damaged/` folder."""
  directory = epath.Path(manager.directory)
  damaged = directory.parent / DAMAGED
  damaged.mkdir(parents=True, exist_ok=True)
  (directory / str(step)).rename(damaged / f'{step}_{int(time.time())}')
  manager.reload()
