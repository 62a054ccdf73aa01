"""What the analyses evaluate: a trained run's loss on fixed examples.

The Hessian spectrum (hessian.py), the sharpness probes (sharpness.py) and
the loss landscape (landscape.py) all need the same thing from a checkpoint:
a deterministic `loss(params, batch)` and a fixed, un-augmented set of
examples cut into equal batches.

BatchNorm has two readings, chosen by `bn_mode`:
  'train': normalise with the statistics of each batch (the function the
    optimiser saw); the updated running statistics are discarded.
  'eval': normalise with the stored running statistics (the function the
    test error is measured with).
Random regularisers (dropout, shake) see one fixed key in 'train' mode, so
the loss is the same function of the parameters on every call.
"""

import json
from typing import Any, Callable, NamedTuple

from etils import epath
import jax
import jax.numpy as jnp
import numpy as np

from sam import losses
from sam.run import experiment

BN_MODES = losses.BN_MODES
Batch = dict[str, Any]


def make_batch_loss(
    loss_fn: losses.LossFn, batch_stats: Any, dropout_seed: int = 0
) -> Callable[[Any, Batch], jax.Array]:
  """(params, batch) -> the loss of `loss_fn` with the run's statistics and
  one fixed random key bound.

  Args:
    loss_fn: a loss of `losses.make_loss_fn` (or `losses.training_loss`),
      whose bn_mode says which statistics normalise.
    batch_stats: the run's BatchNorm running statistics ({} if none).
    dropout_seed: the fixed key of random regularisers in 'train' mode.

  Returns:
    loss_fn(params, {'image': float32 [b, H, W, C], 'label': int32 [b]}).
  """
  key = jax.random.key(dropout_seed)
  return lambda params, batch: loss_fn(params, batch_stats, batch, key)[0]


def split_examples(
    datasets: Any, split: str, num_examples: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
  """A fixed random subset of a split as evaluation sees it: normalised and
  resized to the run's resolution, without augmentation.

  Args:
    datasets: a `data.datasets.Datasets` held in memory.
    split: 'train' or one of `datasets.eval_split_names` ('test', ...).
    num_examples: how many examples; 0 or more than the split: all of it.
    seed: the subset's random order.

  Returns:
    (images float32 [n, H, W, C], labels int32 [n]).
  """
  images, labels = datasets.examples(split)
  rows = np.random.default_rng(seed).permutation(len(labels))
  if 0 < num_examples < len(labels):
    rows = np.sort(rows[:num_examples])
  images = datasets.model_inputs(images[rows])
  return images, np.asarray(labels[rows], np.int32)


def stack_batches(
    images: np.ndarray, labels: np.ndarray, batch_size: int
) -> Batch:
  """Equal batches stacked on a leading axis; the remainder is dropped.

  Returns:
    {'image': [num_batches, batch_size, ...], 'label': [num_batches,
    batch_size]}.
  """
  num_batches = len(labels) // batch_size
  if batch_size < 1 or num_batches < 1:
    raise ValueError(
        f'batch_size must be in [1, {len(labels)}] (the number '
        f'of examples), got {batch_size}'
    )
  used = num_batches * batch_size
  return {
      'image': images[:used].reshape(
          (num_batches, batch_size) + images.shape[1:]
      ),
      'label': labels[:used].reshape(num_batches, batch_size),
  }


def unstack_batches(stacked: Batch) -> list[Batch]:
  """The list of batches of a `stack_batches` result."""
  return [
      jax.tree.map(lambda x, i=i: x[i], stacked)
      for i in range(stacked['label'].shape[0])
  ]


def mean_loss(
    batch_loss: Callable[[Any, Batch], jax.Array], stacked: Batch
) -> Callable[[Any], jax.Array]:
  """params -> mean of batch_loss over equal stacked batches.

  The batches are visited with `lax.map`, so the traced graph holds one
  batch whatever their number.
  """

  def loss_fn(params):
    return jnp.mean(jax.lax.map(lambda b: batch_loss(params, b), stacked))

  return loss_fn


class RunLoss(NamedTuple):
  """A trained run's loss on fixed batches, as every analysis takes it.

  Attributes:
    batch_loss: (params, batch) -> loss (`make_batch_loss`).
    stacked: the equal batches stacked on a leading axis.
    params: the run's parameters.
    method: the run's sam.method, for the record.
  """

  batch_loss: Callable[[Any, Batch], jax.Array]
  stacked: Batch
  params: Any
  method: str

  def batches(self) -> list[Batch]:
    return unstack_batches(self.stacked)

  @property
  def num_examples(self) -> int:
    return int(self.stacked['label'].size)


def run_loss(
    run: experiment.LoadedRun,
    *,
    split: str,
    num_examples: int,
    batch_size: int,
    bn_mode: str,
    seed: int,
    weight_decay: bool = False,
) -> RunLoss:
  """The loss of a loaded run on a fixed subset of one split.

  Args:
    run: the run, from `sam.run.experiment.load_run`.
    split: 'train' or an eval split.
    num_examples: how many examples (0: all), cut into equal batches.
    batch_size: examples per batch.
    bn_mode: 'train' or 'eval'.
    seed: the subset's random order (and the fixed random key).
    weight_decay: include the run's L2 term.

  Returns:
    The RunLoss.
  """
  loss_fn = losses.training_loss(
      run.model, run.config, bn_mode=bn_mode, weight_decay=weight_decay
  )
  batch_loss = make_batch_loss(loss_fn, run.variables['batch_stats'])
  stacked = stack_batches(
      *split_examples(run.datasets, split, num_examples, seed), batch_size
  )
  return RunLoss(
      batch_loss, stacked, run.variables['params'], run.config.sam.method
  )


def write_record(output_dir: epath.PathLike, name: str, record: dict) -> None:
  """Writes an analysis's JSON record as output_dir/name (local or gs://)."""
  output_dir = epath.Path(output_dir)
  output_dir.mkdir(parents=True, exist_ok=True)
  (output_dir / name).write_text(json.dumps(record, indent=1))
