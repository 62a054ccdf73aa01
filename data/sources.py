"""Where examples come from: tfds datasets and the offline digits set.

A source loads a split into memory as numpy arrays (uint8 images [N, H, W, C],
int32 labels [N]). The paper's small datasets (CIFAR, SVHN, Fashion-MNIST)
fit in host memory, so they are decoded once and every epoch after that is a
gather.
"""

import dataclasses
from typing import Callable

import numpy as np
import tensorflow_datasets as tfds


@dataclasses.dataclass(frozen=True)
class Source:
  """A dataset: how to load a split, and facts the pipeline needs.

  Attributes:
    load: split name ('train' or 'test') -> (images, labels).
    num_classes: number of classes.
    mean: per-channel mean of the training images, on the 0-255 scale.
    std: per-channel standard deviation, on the 0-255 scale.
  """
  load: Callable[[str], tuple[np.ndarray, np.ndarray]]
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]


class DatasetNotPreparedError(RuntimeError):
  """A tfds dataset is not in data_dir and cannot be downloaded here."""


def load_tfds_split(name: str, split: str, data_dir: str | None):
  """Reads a whole tfds split into memory.

  Args:
    name: tfds dataset name.
    split: tfds split name.
    data_dir: tfds data directory, or None for the default.

  Returns:
    (images uint8 [N, H, W, C], labels int32 [N]).

  Raises:
    DatasetNotPreparedError: the dataset is not prepared in data_dir.
  """
  builder = tfds.builder(name, data_dir=data_dir)
  try:
    # download=False: offline, a download would retry for minutes first.
    ds = builder.as_dataset(split=split)
  except AssertionError as e:  # tfds's "dataset not found in data_dir".
    raise DatasetNotPreparedError(
        f'tfds dataset {name!r} is not prepared in data_dir='
        f'{builder.data_dir!r}; prepare it on a machine with internet with '
        f'`tfds build {name} --data_dir=DIR` and set config.data_dir=DIR'
    ) from e
  images, labels = [], []
  for batch in tfds.as_numpy(ds.batch(4096)):
    images.append(batch['image'])
    labels.append(batch['label'])
  return (np.concatenate(images).astype(np.uint8),
          np.concatenate(labels).astype(np.int32))


def tfds_source(name, num_classes, mean, std, data_dir=None) -> Source:
  return Source(lambda split: load_tfds_split(name, split, data_dir),
                num_classes, mean, std)


DIGITS_TEST_SIZE = 297


def load_digits_split(split: str):
  """scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels).

  The fixed split: a permutation with numpy seed 0; the first 297 examples
  are the test set, the other 1,500 the training set. Pixels 0..16 are
  scaled by 15 to 0..240.

  Args:
    split: 'train' or 'test'.

  Returns:
    (images uint8 [N, 8, 8, 1], labels int32 [N]).
  """
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  order = np.random.default_rng(0).permutation(len(digits.target))
  rows = {'test': order[:DIGITS_TEST_SIZE],
          'train': order[DIGITS_TEST_SIZE:]}[split]
  images = (digits.images[rows] * 15).astype(np.uint8)[..., None]
  return images, digits.target[rows].astype(np.int32)


def create_source(name: str, data_dir: str | None = None) -> Source:
  """Returns the source called `name`; see SOURCES for the valid names."""
  if name not in SOURCES:
    raise ValueError(f'unknown dataset {name!r}; valid: {sorted(SOURCES)}')
  return SOURCES[name](data_dir)


# Per-channel statistics of the training sets, on the 0-255 scale.
SOURCES: dict[str, Callable[[str | None], Source]] = {
    'cifar10': lambda d: tfds_source(
        'cifar10', 10, (125.3, 123.0, 113.9), (63.0, 62.1, 66.7), d),
    'cifar100': lambda d: tfds_source(
        'cifar100', 100, (129.3, 124.1, 112.4), (68.2, 65.4, 70.4), d),
    'digits': lambda d: Source(load_digits_split, 10, (73.13,), (90.16,)),
}
