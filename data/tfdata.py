"""tf.data settings of the training input pipelines: no autotuning.

With autotuning on, every tf.data iterator runs a model thread
(`Model::OptimizeLoop`) that re-tunes the pipeline's parallelism and then
sleeps, twice as long each time, up to a minute. Destroying the iterator
joins that thread. The in-memory pipeline destroys its iterator at the end
of the training data and the streamed one at every epoch boundary (each
epoch is a new iterator), and that join stalled the training thread for 3 to
60 s in 5 of 12 quickstart runs, where the last 40 steps take 1-2 s
(results/benchmarks/end_of_data.md). With autotuning off there is no model
thread, and each parallel map runs a fixed number of calls instead,
`parallel_calls()`. The batches do not depend on it (the maps are
deterministic).
"""

import os

import tensorflow as tf

# The most calls tf.data's AUTOTUNE starts a parallel map with.
MAX_PARALLEL_CALLS = 16


def parallel_calls() -> int:
  """Calls in flight in each parallel map of a training pipeline.

  One per CPU core this process may run on, at most MAX_PARALLEL_CALLS: the
  parallelism tf.data's AUTOTUNE starts from (its thread pool has one thread
  per schedulable core).

  Returns:
    A number >= 1.
  """
  if hasattr(os, 'sched_getaffinity'):
    cores = len(os.sched_getaffinity(0))
  else:
    cores = os.cpu_count() or 1
  return max(1, min(MAX_PARALLEL_CALLS, cores))


def options() -> tf.data.Options:
  """The options of a training pipeline: autotuning off.

  Returns:
    tf.data.Options for `Dataset.with_options`, applied last so that they
    hold for the whole pipeline (tfds's readers included).
  """
  result = tf.data.Options()
  result.autotune.enabled = False
  return result
