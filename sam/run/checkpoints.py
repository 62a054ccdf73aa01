"""Orbax checkpoints of a run: the train state plus a little progress record.

Orbax writes each step into a temporary directory and renames it when
complete, so a run killed mid-save leaves the previous checkpoint as the
latest one. The progress record carries a checksum of the state's bytes,
computed on the devices: tensorstore does not checksum array chunks, so a
flipped byte would otherwise restore as a silently different state.

Restoring never destroys a run. A failure that proves the files damaged (a
missing or truncated file, a format error, a digest mismatch) moves on to
the previous checkpoint, and the damaged ones are set aside only once an
older one has restored. Any other failure (permission, network, a timeout,
an unknown error) is retried with backoff and then raised as one line,
with nothing moved.
"""

import hashlib
import json
import time
from typing import Any, Iterator, Sequence

from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from sam.run import files

CHECKPOINTS = 'checkpoints'
DAMAGED = 'checkpoints_damaged'
DIGEST = 'state_digest'
# Seconds between attempts at a checkpoint that fails for a transient reason.
RETRY_DELAYS_S = (1.0, 4.0, 16.0)
# Tensorstore raises ValueError('<STATUS>: ...'); these statuses mean the
# bytes on storage are wrong or missing, not that storage is unreachable.
DAMAGE_STATUSES = (
    'NOT_FOUND',
    'DATA_LOSS',
    'OUT_OF_RANGE',
    'FAILED_PRECONDITION',
    'INVALID_ARGUMENT',
)
DAMAGE_TYPES = (
    FileNotFoundError,
    json.JSONDecodeError,
    UnicodeDecodeError,
    EOFError,
)


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
    state: the train state, one replica, on a device or the host.
    progress: JSON-serialisable facts that must survive a restart
      (e.g. the accumulated wall time).

  Raises:
    CheckpointWriteError: this or an earlier (asynchronous) save failed.
  """
  if jax.process_count() > 1:
    # Orbax writes a process's own device arrays only in a one-process run;
    # on several hosts (whose replicas agree) it takes host copies.
    total = _weighted_sum(state)
    state = jax.device_get(state)
  else:
    # Copies on the device, which no step donates: orbax then copies them
    # to the host in the background while training goes on. (Handing it the
    # step's own buffers, which the next step donates, aborted XLA now and
    # then: 2 runs in 5 of faults_test.py.) One program copies every leaf
    # and sums them for the digest: a jnp.copy per leaf was a dispatch each
    # and a compilation per shape (issue 24).
    state, total = _copy_and_sum(state)
  progress = {**progress, DIGEST: _digest(int(total), state)}
  # Orbax raises many types for a failed write (OSError, ValueError,
  # tensorstore errors); any of them means no new checkpoint.
  try:
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
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


def _words(leaf) -> jax.Array:
  """A leaf's bytes as uint32 words (narrower types widened)."""
  leaf = jnp.asarray(leaf)
  if leaf.dtype.itemsize == 4:
    return jax.lax.bitcast_convert_type(leaf, jnp.uint32).ravel()
  if leaf.dtype.itemsize == 2:
    return (
        jax.lax.bitcast_convert_type(leaf, jnp.uint16)
        .astype(jnp.uint32)
        .ravel()
    )
  return leaf.astype(jnp.uint32).ravel()  # bool, int8, uint8.


@jax.jit
def _weighted_sum(state) -> jax.Array:
  """sum over leaves l and words i of word * (2i + 1) * (2l + 1), mod 2^32.

  Odd weights are invertible mod 2^32, so changing any one word changes
  the sum; integer sums do not depend on the order of the additions, so
  the device that saves and the host that restores agree exactly.
  """
  total = jnp.uint32(0)
  for index, leaf in enumerate(jax.tree.leaves(state)):
    words = _words(leaf)
    weights = jnp.arange(words.size, dtype=jnp.uint32) * 2 + 1
    leaf_sum = jnp.sum(words * weights, dtype=jnp.uint32)
    total = total + leaf_sum * jnp.uint32(2 * index + 1)
  return total


@jax.jit
def _copy_and_sum(state):
  """(a copy of every leaf, `_weighted_sum(state)`), in one dispatch."""
  return jax.tree.map(jnp.copy, state), _weighted_sum(state)


def _digest(total: int, state: Any) -> str:
  shapes = ','.join(
      f'{np.dtype(leaf.dtype).name}{tuple(leaf.shape)}'
      for leaf in jax.tree.leaves(state)
  )
  digest = hashlib.sha256(shapes.encode()).hexdigest()[:16]
  return f'{total:08x}-{digest}'


def state_digest(state: Any) -> str:
  """A checksum of every leaf's bytes, computed where the state lives.

  On the devices for a save (one 32-bit word per leaf of work on the host
  instead of hashing every byte there), and the same number for the
  restored arrays.

  Args:
    state: a pytree of arrays.

  Returns:
    The checksum and the leaves' shapes, as a string.
  """
  return _digest(int(_weighted_sum(state)), state)


class CheckpointReadError(RuntimeError):
  """Checkpoints exist but none could be restored; nothing was moved."""


class DamagedCheckpointError(ValueError):
  """The checkpoint's files restore to a state that fails its digest."""


def _causes(error: BaseException) -> Iterator[BaseException]:
  while error is not None:
    yield error
    error = error.__cause__ or error.__context__


def is_damage(error: BaseException) -> bool:
  """Whether a restore error proves the checkpoint's files damaged.

  Args:
    error: what restoring raised.

  Returns:
    True for missing, truncated or malformed files and digest mismatches;
    False for anything else (permission, network, timeouts, unknown), which
    may succeed on another attempt.
  """
  for cause in _causes(error):
    if isinstance(cause, (DamagedCheckpointError, *DAMAGE_TYPES)):
      return True
    if isinstance(cause, ValueError) and str(cause).startswith(DAMAGE_STATUSES):
      return True
  return False


def _one_line(error: BaseException) -> str:
  text = str(error).splitlines()[0] if str(error) else ''
  return f'{type(error).__name__}: {text[:200]}'


def _on_first_local_device(abstract_state):
  """Shapes and dtypes placed on one local device.

  A checkpoint records the devices it was saved from; naming the target
  device restores it on any number of devices (or hosts).
  """
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(
      lambda leaf: jax.ShapeDtypeStruct(
          np.shape(leaf), leaf.dtype, sharding=device
      ),
      abstract_state,
  )


def _restore_step(manager, step, abstract_state):
  restored = manager.restore(
      step,
      args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state),
          progress=ocp.args.JsonRestore(),
      ),
  )
  state, progress = restored['state'], dict(restored['progress'])
  expected = progress.pop(DIGEST, None)
  if expected is not None and state_digest(state) != expected:
    raise DamagedCheckpointError(
        f'the restored state does not match the digest saved with step {step}'
    )
  return state, progress


def _restore_with_retries(manager, step, abstract_state, delays):
  """Restores one step, retrying errors that do not prove damage."""
  for attempt in range(len(delays) + 1):
    try:
      return _restore_step(manager, step, abstract_state)
    except Exception as e:  # pylint: disable=broad-except
      # Orbax and tensorstore raise many types; is_damage sorts them.
      if is_damage(e):
        raise
      if attempt == len(delays):
        raise CheckpointReadError(
            f'cannot read the checkpoint of step {step} in '
            f'{manager.directory} after {attempt + 1} attempts '
            f'({_one_line(e)}); nothing was moved or overwritten: fix the '
            'access and rerun'
        ) from e
      logging.warning(
          'Reading checkpoint %d failed (%s); retrying in %.0f s.',
          step,
          _one_line(e),
          delays[attempt],
      )
      time.sleep(delays[attempt])


def restore_latest(
    manager: ocp.CheckpointManager,
    abstract_state: Any,
    retry_delays_s: Sequence[float] | None = None,
):
  """Restores the newest checkpoint that is not damaged.

  Args:
    manager: from `create_manager`.
    abstract_state: a train state with the expected structure (its values
      are only used for their shapes and dtypes).
    retry_delays_s: waits between attempts at a step whose failure does not
      prove damage; None: RETRY_DELAYS_S.

  Returns:
    (step, state, progress), or None if the run has no checkpoint.

  Raises:
    CheckpointReadError: a checkpoint stays unreadable for a reason that
      does not prove damage, or every checkpoint is damaged; nothing is
      moved in either case.
  """
  delays = RETRY_DELAYS_S if retry_delays_s is None else retry_delays_s
  abstract_state = _on_first_local_device(abstract_state)
  damaged = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      state, progress = _restore_with_retries(
          manager, step, abstract_state, delays
      )
    except CheckpointReadError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('Checkpoint %d is damaged (%s).', step, _one_line(e))
      damaged.append((step, _one_line(e)))
      continue
    for bad_step, reason in damaged:
      logging.warning(
          'Setting aside damaged checkpoint %d (%s); resuming from %d.',
          bad_step,
          reason,
          step,
      )
      set_aside(manager, bad_step)
    return step, state, progress
  if damaged:
    raise CheckpointReadError(
        f'every checkpoint in {manager.directory} is damaged (steps '
        f'{[s for s, _ in damaged]}; newest: {damaged[0][1]}); nothing was '
        'moved: inspect them, or use a new workdir'
    )
  return None


def set_aside(manager: ocp.CheckpointManager, step: int) -> None:
  """Moves checkpoint `step` to a sibling `checkpoints_damaged/` folder."""
  directory = epath.Path(manager.directory)
  damaged = directory.parent / DAMAGED
  damaged.mkdir(parents=True, exist_ok=True)
  (directory / str(step)).rename(damaged / f'{step}_{int(time.time())}')
  manager.reload()
