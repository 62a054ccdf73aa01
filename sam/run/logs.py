"""What a log does on the host once its values are there: the steps'
metrics merged in numpy, the throughput, the time left, and the line a user
watches.

The loop reads what a log needs from the devices in one transfer
(sam/run/loop.py); everything here is numpy and Python. A jax operation per
metric leaf (an index, a merge) is a dispatch, and the first one of each
shape a compilation: at a step of a few milliseconds on an accelerator,
those are what would leave the device idle at every log (issue 24).
"""

import contextlib
from typing import Any, Callable

from absl import logging
from clu import metrics as clu_metrics
from etils import epath
import jax
import numpy as np


def merge_steps(collections: list[Any]):
  """One clu metrics collection from the per-step ones, in numpy.

  Every metric of a step or eval step is a clu Average (sam/run/step.py),
  whose merge adds totals and counts; the collection's own count of merges
  adds too. np.add.accumulate adds one step after another, in the order
  clu's merges did on the device and in the same dtypes, so the merged
  numbers are the same to the bit.

  Args:
    collections: the collections the pmapped step returned, on the host:
      every leaf [devices], the same value on each device (the step gathers
      its metrics over devices).

  Returns:
    The merged collection of the first device's values (numpy leaves), or
    None if there are none.
  """
  if not collections:
    return None
  return jax.tree.map(
      lambda *leaves: np.add.accumulate(np.stack(leaves)[:, 0])[-1],
      *collections,
  )


def compute(collection) -> dict[str, float]:
  """A merged collection's values, as Average.compute gives them.

  Args:
    collection: a clu Collection of Averages with numpy leaves.

  Returns:
    name -> total / count, divided in the total's floating dtype as jnp
    divides a float32 total by an int32 count.
  """
  values = {}
  for name, metric in vars(collection).items():
    if name == '_reduction_counter':  # clu's own, which compute() skips.
      continue
    if not isinstance(metric, clu_metrics.Average):
      raise TypeError(f'{name}: {type(metric).__name__} is not an Average')
    dtype = np.result_type(metric.total.dtype, np.float32)
    with np.errstate(divide='ignore', invalid='ignore'):
      values[name] = float(
          np.asarray(metric.total, dtype) / np.asarray(metric.count, dtype)
      )
  return values


def rate_and_eta(
    step: int, now: float, last_log: tuple[int, float] | None, total: int
) -> tuple[float | None, float | None]:
  """The steps per second since the last log, and the seconds the rest of
  the run takes at that rate.

  Args:
    step: the step logged now.
    now: the time it was done.
    last_log: (step, time) of the previous log or of the first step.
    total: the run's last step.

  Returns:
    (steps/s, seconds left): None for the rate with no step timed yet,
    None for the time left at the last step.
  """
  last_step, last_time = last_log or (step, now)
  if step <= last_step:
    return None, None
  rate = (step - last_step) / max(now - last_time, 1e-9)
  return rate, ((total - step) / rate if step < total else None)


def format_duration(seconds: float) -> str:
  """'45s', '12m03s' or '2h05m09s'."""
  seconds = max(0, round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  if hours:
    return f'{hours}h{minutes:02d}m{seconds:02d}s'
  if minutes:
    return f'{minutes}m{seconds:02d}s'
  return f'{seconds}s'


def line(step: int, scalars: dict[str, float], eta_s: float | None) -> str:
  """The log line of a write: clu's LoggingWriter format, plus the time
  left where there is one.

  Args:
    step: the step written.
    scalars: its values.
    eta_s: the run's remaining seconds at the recent rate, or None.

  Returns:
    '[step] name=value, ...[, eta=12m03s]'.
  """
  values = [f'{k}={v:.6g}' for k, v in sorted(scalars.items())]
  if eta_s is not None:
    values.append(f'eta={format_duration(eta_s)}')
  return f'[{step}] ' + ', '.join(values)


class Output:
  """Where the loop's values go: the log line a user watches (every
  process) and the writer's files, with a failed write as one OSError."""

  def __init__(
      self,
      writer,
      workdir: epath.PathLike,
      latest_checkpoint: Callable[[], int | None],
  ):
    """Writes to `writer`.

    Args:
      writer: the run's clu MetricWriter (files only: no logging writer).
      workdir: the run's workdir, named in errors.
      latest_checkpoint: () -> the step of the latest complete checkpoint,
        named in errors.
    """
    self.writer = writer
    self.workdir, self.latest_checkpoint = workdir, latest_checkpoint

  def write(
      self, step: int, scalars: dict[str, float], eta_s: float | None = None
  ) -> None:
    """Logs `line(step, scalars, eta_s)` and writes the scalars (the time
    left is the log's, not a metric)."""
    logging.info('%s', line(step, scalars, eta_s))
    # TensorBoard's writer flushes on every write, so a full disk shows here.
    with self._io():
      self.writer.write_scalars(step, scalars)

  def flush(self) -> None:
    """Flushes the writer."""
    with self._io():
      self.writer.flush()

  @contextlib.contextmanager
  def _io(self):
    """Turns a failed metric write (a full disk) into one OSError line."""
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except
      # TensorFlow's event writer raises its own types (ResourceExhausted).
      detail = str(e).splitlines()[0] if str(e) else ''
      raise OSError(
          f'cannot write the metrics in {self.workdir} ({type(e).__name__}: '
          f'{detail[:300]}); the latest complete checkpoint is step '
          f'{self.latest_checkpoint()}'
      ) from e
