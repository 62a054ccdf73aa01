"""Orbax checkpoints of a run: the train state plus a little progress record.

Orbax writes each step into a temporary directory and renames it when
complete, so a run killed mid-save leaves the previous checkpoint as the
latest one.
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


def create_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  """A manager for `workdir/checkpoints`, keeping the newest `keep` steps."""
  return ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, 'checkpoints')),
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
      item_names=('state', 'progress'))


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         progress: dict[str, Any]) -> None:
  """Saves an unreplicated (host) train state and a JSON progress record.

  Args:
    manager: from `create_manager`.
    step: the number of optimizer steps taken.
    state: the train state, one replica.
    progress: JSON-serialisable facts that must survive a restart
      (e.g. the accumulated wall time).
  """
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(jax.device_get(state)),
      progress=ocp.args.JsonSave(progress)))


def restore_latest(manager: ocp.CheckpointManager, abstract_state: Any):
  """Restores the newest checkpoint, or returns None if there is none.

  Args:
    manager: from `create_manager`.
    abstract_state: a train state with the expected structure (its values
      are only used for their shapes and dtypes).

  Returns:
    (step, state, progress) or None.
  """
  step = manager.latest_step()
  if step is None:
    return None
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      progress=ocp.args.JsonRestore()))
  return step, restored['state'], dict(restored['progress'])
