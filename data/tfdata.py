"""tf.data settings of the input pipelines: no autotuning, fixed parallelism.

With autotuning on, each tf.data iterator runs a model thread
(`Model::OptimizeLoop`) that re-tunes the parallelism, then sleeps, twice as
long each time, up to a minute. The iterator's destructor joins that thread,
and the join can wait out the sleep: a stack taken during a 25 s stall shows
the training thread in `RootDataset::Iterator::~Iterator` waiting on the
model thread, which sits in its timed wait. The in-memory pipeline destroys
its iterator at the end of the training data, the streamed one at every
epoch boundary (each epoch is a new iterator) and after every evaluation, so
runs stalled there for 4 to 25 s (results/benchmarks/end_of_data.md).
Destroying the iterator elsewhere would not help: the destructor runs inside
a Python deallocation, holding the GIL. With autotuning off there is no
model thread, and each parallel map runs the fixed number of calls below.
The batches do not depend on it: every map is deterministic.
"""

import os

import tensorflow as tf

# At most this many whole batches built at once: the parallelism tf.data's
# AUTOTUNE starts a map at, which keeps the batches in flight bounded in
# memory as the autotuner's RAM budget did.
MAX_PARALLEL_BATCHES = 16


def cores() -> int:
  """CPU cores this process may run on (the autotuner's CPU budget).

  Returns:
    A number >= 1.
  """
  if hasattr(os, 'sched_getaffinity'):
    return max(1, len(os.sched_getaffinity(0)))
  return os.cpu_count() or 1


def example_parallel_calls() -> int:
  """Calls in flight in a map over single examples (decoding): one per core.

  Returns:
    A number >= 1.
  """
  return cores()


def batch_parallel_calls() -> int:
  """Calls in flight in a map that builds or transforms whole batches: one
  per core, at most MAX_PARALLEL_BATCHES.

  Returns:
    A number >= 1.
  """
  return min(cores(), MAX_PARALLEL_BATCHES)


def options() -> tf.data.Options:
  """The options of an input pipeline: autotuning off.

  Returns:
    tf.data.Options for `Dataset.with_options` on the pipeline's last
    dataset, where they hold for the whole pipeline (tfds's readers too).
  """
  result = tf.data.Options()
  result.autotune.enabled = False
  return result
