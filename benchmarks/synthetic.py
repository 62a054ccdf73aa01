"""Synthetic in-memory data with the data.datasets.Datasets interface.

Random CIFAR-shaped (or any-shaped) normalised images, made once with numpy
and served as device-shaped batches, so the real training loop can run on a
machine without TensorFlow or any dataset (benchmarks/accelerator.py). The
host work per step is a slice and a reshape of arrays already in memory:
what is left of a step's cost is the loop's own.
"""

import dataclasses
from typing import Iterator

import numpy as np

from data import sharding


@dataclasses.dataclass
class SyntheticDatasets:
  """`num_batches` distinct global batches, cycled, and one eval split.

  Attributes:
    num_classes: classes of the labels.
    image_shape: (H, W, C) of one example.
    global_batch_size: training batch over all devices.
    steps_per_epoch: steps of one epoch (the loop's eval period).
    local_device_count: devices the batches are shaped for.
    num_batches: distinct training batches held in memory.
    eval_examples: size of the 'test' split (a multiple of the batch).
    seed: numpy seed of the arrays.
  """

  num_classes: int
  image_shape: tuple[int, ...]
  global_batch_size: int
  steps_per_epoch: int
  local_device_count: int
  num_batches: int = 4
  eval_examples: int = 0
  seed: int = 0
  mean: tuple[float, ...] = (0.0,)
  std: tuple[float, ...] = (1.0,)

  def __post_init__(self):
    rng = np.random.default_rng(self.seed)
    count = self.num_batches * self.global_batch_size
    self._images = rng.normal(size=(count, *self.image_shape)).astype(
        np.float32
    )
    self._labels = rng.integers(0, self.num_classes, count).astype(np.int32)
    self.eval_examples = self.eval_examples or self.global_batch_size

  @property
  def num_train_examples(self) -> int:
    return len(self._labels)

  @property
  def eval_split_names(self) -> tuple[str, ...]:
    return ('test',)

  def _batch(self, index: int) -> sharding.Batch:
    rows = slice(
        index * self.global_batch_size, (index + 1) * self.global_batch_size
    )
    return {'image': self._images[rows], 'label': self._labels[rows]}

  def train_batches(self, start_step: int, num_steps: int) -> Iterator:
    """Batches of steps start_step .. num_steps - 1 (cycling the arrays)."""
    for step in range(start_step, num_steps):
      yield sharding.to_device_shape(
          self._batch(step % self.num_batches), self.local_device_count
      )

  def eval_batches(self, split: str) -> Iterator:
    """The 'test' split in whole batches, every example real."""
    del split
    for index in range(self.eval_examples // self.global_batch_size):
      batch = self._batch(index % self.num_batches)
      batch['mask'] = np.ones(self.global_batch_size, np.float32)
      yield sharding.to_device_shape(batch, self.local_device_count)

  def examples(self, split: str):
    del split
    return self._images, self._labels

  def model_inputs(self, images: np.ndarray) -> np.ndarray:
    return images

  def label_noise_record(self) -> None:
    return None
