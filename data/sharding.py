"""How a global batch is cut: per host, per device, and padded for eval.

Written once for both pipelines (data/in_memory.py, data/streaming.py), in
numpy. Training: each host takes its own contiguous slice of every global
batch and each local device an equal share of that. Evaluation: each host
takes a contiguous share of the split's examples, padded to whole batches
that every host has the same number of; the padding is masked out, so every
example is counted exactly once.
"""

import math
from typing import NamedTuple

import numpy as np

Batch = dict[str, np.ndarray]


def host_slice(
    global_batch: int, process_index: int, process_count: int
) -> slice:
  """This host's columns of a global batch."""
  host_batch = global_batch // process_count
  return slice(process_index * host_batch, (process_index + 1) * host_batch)


def host_range(
    begin: int, end: int, process_index: int, process_count: int
) -> tuple[int, int]:
  """This host's contiguous share of records [begin, end)."""
  size = end - begin
  return (
      begin + process_index * size // process_count,
      begin + (process_index + 1) * size // process_count,
  )


def to_device_shape(batch: Batch, num_devices: int) -> Batch:
  """Splits the leading (host batch) axis into [devices, per-device]."""
  return {
      k: v.reshape((num_devices, -1) + v.shape[1:]) for k, v in batch.items()
  }


class EvalShare(NamedTuple):
  """This host's share of an eval split, in padded batches.

  Attributes:
    begin: first example of the share.
    end: one past its last example.
    num_batches: batches per host (the same on every host).
    host_batch: examples per host batch.
  """

  begin: int
  end: int
  num_batches: int
  host_batch: int

  def positions(self) -> tuple[np.ndarray, np.ndarray]:
    """(example indices [num_batches, host_batch], mask float32 of the same
    shape: 1 for real examples, 0 for padding, whose index repeats the
    share's last example)."""
    position = self.begin + np.arange(self.num_batches * self.host_batch)
    position = position.reshape(self.num_batches, self.host_batch)
    mask = (position < self.end).astype(np.float32)
    return np.minimum(position, max(self.end - 1, 0)), mask


def eval_share(
    num_examples: int, global_batch: int, process_index: int, process_count: int
) -> EvalShare:
  """This host's EvalShare of a split of `num_examples`."""
  begin, end = host_range(0, num_examples, process_index, process_count)
  host_batch = global_batch // process_count
  largest_share = math.ceil(num_examples / process_count)
  return EvalShare(
      begin, end, max(1, math.ceil(largest_share / host_batch)), host_batch
  )
