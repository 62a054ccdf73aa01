"""The one interface of a run's data, and the function that builds it.

`create_datasets` reads `config.data` and returns a `Datasets`: held in host
memory (data/in_memory.py: CIFAR, SVHN, Fashion-MNIST, the digits, a folder
of images) or streamed from prepared tfds files (data/streaming.py:
ImageNet, the finetuning sets, any tfds image dataset). Both give the same
kind of batches, a pure function of (seed, step), resumable at any step, and
score every evaluation example exactly once.
"""

from typing import Callable, Iterator, Protocol

import ml_collections
import numpy as np

from data import catalog
from data import in_memory
from data import sharding
from data import streaming

# (normalised float32 images [n, H, W, C]) -> int labels [n]: relabels the
# training set (bootstrap, Table 4).
Relabel = Callable[[np.ndarray], np.ndarray]


class Datasets(Protocol):
  """A run's splits, as the training loop and the analyses use them.

  Attributes:
    num_classes: number of classes.
    image_shape: (H, W, C) of one example.
    num_train_examples: training examples (after any holdout).
    global_batch_size: training batch over all hosts and devices.
    eval_split_names: 'test', plus 'validation' with a holdout.
    mean: per-channel normalisation mean on the 0-255 scale.
    std: per-channel normalisation std on the 0-255 scale.
  """

  num_classes: int
  image_shape: tuple[int, ...]
  num_train_examples: int
  global_batch_size: int
  mean: tuple[float, ...]
  std: tuple[float, ...]

  @property
  def eval_split_names(self) -> tuple[str, ...]:
    ...

  @property
  def steps_per_epoch(self) -> int:
    """Whole global batches in one epoch."""
    ...

  def train_batches(
      self, start_step: int, num_steps: int
  ) -> Iterator[sharding.Batch]:
    """The batches of steps start_step .. num_steps - 1: {'image': float32
    [devices, b, H, W, C], 'label': int32 [devices, b]}."""
    ...

  def eval_batches(self, split: str) -> Iterator[sharding.Batch]:
    """Padded, masked batches covering `split` once: {'image', 'label',
    'mask'} with leading axes [devices, b]."""
    ...

  def examples(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A whole split as (uint8 images, int32 labels); in memory only."""
    ...

  def model_inputs(self, images: np.ndarray) -> np.ndarray:
    """uint8 images as evaluation feeds them to the model (normalised,
    resized); in memory only."""
    ...

  def label_noise_record(self) -> dict | None:
    """Which training labels were corrupted, or None without label noise."""
    ...


def check_dataset(config: ml_collections.ConfigDict) -> None:
  """Fails at once, in one line, if config.dataset names no dataset.

  Args:
    config: the data section.

  Raises:
    ValueError: naming the valid datasets.
  """
  if config.dataset not in catalog.IN_MEMORY | catalog.STREAMED:
    streaming.find_builder(config.dataset, config.data_dir)


def create_datasets(
    config: ml_collections.ConfigDict,
    *,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    local_device_count: int = 1,
    relabel: Relabel | None = None
) -> Datasets:
  """Builds the datasets that `config` (the data section) names.

  Args:
    config: the config's data section.
    batch_size: the global training batch.
    eval_batch_size: the global evaluation batch.
    seed: the run seed (data order, augmentation, label noise).
    process_index: this host's index.
    process_count: number of hosts.
    local_device_count: devices on this host.
    relabel: replaces the training labels (bootstrap); in memory only.

  Returns:
    The Datasets.

  Raises:
    sources.DatasetNotPreparedError: a tfds dataset is not in data_dir.
    ValueError: the dataset is unknown.
  """
  placement = dict(
      batch_size=batch_size,
      eval_batch_size=eval_batch_size,
      seed=seed,
      process_index=process_index,
      process_count=process_count,
      local_device_count=local_device_count,
  )
  if catalog.uses_streaming(config.dataset, config.streaming):
    if relabel is not None:
      raise ValueError('relabelling (bootstrap) needs a dataset held in memory')
    return streaming.create_streamed_datasets(config, **placement)
  return in_memory.create_datasets(config, relabel=relabel, **placement)
