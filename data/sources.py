"""Where examples come from: tfds datasets and the offline digits set.

A source loads a split into memory as numpy arrays (uint8 images [N, H, W, C],
int32 labels [N]). The paper's small datasets (CIFAR, SVHN, Fashion-MNIST)
fit in host memory, so they are decoded once and every epoch after that is a
gather.

SVHN's validation holdout is the official code's, the last 7,328 images of
'train' (`Source.holdout`); the others hold out a seeded random
`validation_fraction` (data/in_memory.py).

Fashion-MNIST stays at 28x28x1, as in the official code (the CIFAR models
pool globally, and their first convolution takes one input channel). A
folder of images (`folder`, with
config.data_dir its root) reads `train/<label>/*.png|jpg` and
`test/<label>/*.png|jpg`; its images must share one size unless
config.image_size is set, which resizes each as it is read.
"""

import dataclasses
import functools
import os
from typing import Callable

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from data import catalog


@dataclasses.dataclass(frozen=True)
class Source:
  """A dataset: how to load a split, and facts the pipeline needs.

  Attributes:
    load: split name ('train', 'test', or one of `holdout`) -> (images,
      labels).
    num_classes: number of classes.
    mean: per-channel mean of the training images, on the 0-255 scale.
    std: per-channel standard deviation, on the 0-255 scale.
    holdout: the names `load` takes for (the training split less the
      validation holdout, the holdout) where the official code fixes which
      examples validate; None holds out a random fraction of 'train'
      (data/in_memory.py).
  """

  load: Callable[[str], tuple[np.ndarray, np.ndarray]]
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  holdout: tuple[str, str] | None = None


class DatasetNotPreparedError(RuntimeError):
  """A tfds dataset is not in data_dir and cannot be downloaded here."""


def not_prepared_error(builder) -> DatasetNotPreparedError:
  """The error for a tfds dataset missing from its data_dir, with the
  command that prepares it."""
  return DatasetNotPreparedError(
      f'tfds dataset {builder.name!r} is not prepared in data_dir='
      f'{builder.data_dir!r}; prepare it on a machine with internet with '
      f'`tfds build {builder.name} --data_dir=DIR` and set config.data_dir=DIR'
  )


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
    raise not_prepared_error(builder) from e
  images, labels = [], []
  for batch in tfds.as_numpy(ds.batch(4096)):
    images.append(batch['image'])
    labels.append(batch['label'])
  return (
      np.concatenate(images).astype(np.uint8),
      np.concatenate(labels).astype(np.int32),
  )


def tfds_source(name: str, data_dir: str | None = None) -> Source:
  """A tfds dataset of catalog.IN_MEMORY, loaded whole."""
  return Source(
      lambda split: load_tfds_split(name, split, data_dir),
      *catalog.IN_MEMORY[name],
  )


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
  rows = {'test': order[:DIGITS_TEST_SIZE], 'train': order[DIGITS_TEST_SIZE:]}[
      split
  ]
  images = (digits.images[rows] * 15).astype(np.uint8)[..., None]
  return images, digits.target[rows].astype(np.int32)


# The official SVHN holdout (sam_jax/datasets/dataset_source.py): the last
# 7,328 of the 73,257 'train' images validate, the first 65,929 train (with
# 'extra', which the official code always adds; without it here too).
SVHN_TRAIN_PART = 'train[:65929]'
SVHN_VALIDATION = 'train[65929:]'


def svhn_source(data_dir: str | None = None, extra: bool = False) -> Source:
  """SVHN cropped digits; `extra` trains on train + extra (604,388 images).

  Args:
    data_dir: tfds data directory, or None for the default.
    extra: add the 531,131 'extra' images to the training split, as the
      paper's Table 5 does (with the holdout: 65,929 + 531,131).

  Returns:
    A `Source` whose `load` also takes SVHN_TRAIN_PART and SVHN_VALIDATION.
  """

  def load(split):
    # tfds slices by its record order; rows of a loaded split would follow
    # the read's interleaving of shards instead.
    if extra and split in ('train', SVHN_TRAIN_PART):
      split += '+extra'
    return load_tfds_split('svhn_cropped', split, data_dir)

  return Source(
      load,
      *catalog.IN_MEMORY['svhn_cropped'],
      holdout=(SVHN_TRAIN_PART, SVHN_VALIDATION),
  )


IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')


def folder_classes(root: str) -> list[str]:
  """Class names: the sorted subfolders of root/train."""
  train_dir = os.path.join(root, 'train')
  if not os.path.isdir(train_dir):
    raise ValueError(
        f'data_dir={root!r} for dataset folder must hold '
        f'train/<label>/*.png|jpg (and test/<label>/...)'
    )
  return sorted(
      entry
      for entry in os.listdir(train_dir)
      if os.path.isdir(os.path.join(train_dir, entry))
  )


@functools.lru_cache(maxsize=4)
def load_image_folder(root: str, split: str, size: int = 0):
  """Decodes root/split/<label>/*.png|jpg into memory.

  Args:
    root: the folder holding train/ and test/.
    split: subfolder name, e.g. 'train' or 'test'.
    size: > 0 resizes every image to size x size (bilinear) as it is read,
      so images of different sizes can be used; 0 keeps them as they are.

  Returns:
    (images uint8 [N, H, W, 3], labels int32 [N]); labels index the sorted
    class folders of root/train.
  """
  classes = folder_classes(root)
  images, labels = [], []
  for label, name in enumerate(classes):
    class_dir = os.path.join(root, split, name)
    if not os.path.isdir(class_dir):
      continue
    for file_name in sorted(os.listdir(class_dir)):
      if file_name.lower().endswith(IMAGE_EXTENSIONS):
        with Image.open(os.path.join(class_dir, file_name)) as picture:
          picture = picture.convert('RGB')
          if size:
            picture = picture.resize((size, size), Image.BILINEAR)
          images.append(np.asarray(picture))
        labels.append(label)
  if not images:
    raise ValueError(f'no .png/.jpg images under {os.path.join(root, split)}')
  shapes = {image.shape for image in images}
  if len(shapes) > 1:
    raise ValueError(
        f'images under {os.path.join(root, split)} must share '
        f'one size, or set config.image_size to resize them; '
        f'found {sorted(shapes)[:4]}'
    )
  return np.stack(images).astype(np.uint8), np.asarray(labels, np.int32)


def folder_source(data_dir: str | None, size: int = 0) -> Source:
  """A user's own images; statistics are measured on the training split.

  Args:
    data_dir: the folder holding train/<label>/ and test/<label>/.
    size: > 0 resizes every image to size x size as it is read.

  Returns:
    A `Source`.
  """
  if not data_dir:
    raise ValueError(
        'dataset folder needs config.data_dir, the folder that '
        'holds train/<label>/ and test/<label>/'
    )
  train_images, _ = load_image_folder(data_dir, 'train', size)
  pixels = train_images.reshape(-1, train_images.shape[-1]).astype(np.float64)
  return Source(
      functools.partial(load_image_folder, data_dir, size=size),
      len(folder_classes(data_dir)),
      tuple(pixels.mean(0).round(2)),
      tuple(pixels.std(0).round(2)),
  )


def create_source(
    name: str,
    data_dir: str | None = None,
    svhn_extra: bool = False,
    image_size: int = 0,
) -> Source:
  """Returns the source called `name`; see SOURCES for the valid names.

  Args:
    name: a key of SOURCES.
    data_dir: tfds data directory (for `folder`: the image folder's root).
    svhn_extra: for svhn_cropped, train on train + extra.
    image_size: for `folder`, > 0 resizes the images as they are read.

  Returns:
    A `Source`.
  """
  if name not in SOURCES:
    raise ValueError(f'unknown dataset {name!r}; valid: {sorted(SOURCES)}')

  if svhn_extra and name != 'svhn_cropped':
    raise ValueError(
        f'svhn_extra is only valid with dataset svhn_cropped, '
        f'got dataset {name!r}'
    )
  if name == 'svhn_cropped':
    return svhn_source(data_dir, svhn_extra)
  if name == 'folder':
    return folder_source(data_dir, image_size)
  return SOURCES[name](data_dir)


# The loaders of catalog.IN_MEMORY, by name.
SOURCES: dict[str, Callable[[str | None], Source]] = {
    'cifar10': functools.partial(tfds_source, 'cifar10'),
    'cifar100': functools.partial(tfds_source, 'cifar100'),
    'digits': lambda d: Source(load_digits_split, *catalog.IN_MEMORY['digits']),
    'svhn_cropped': svhn_source,
    'fashion_mnist': functools.partial(tfds_source, 'fashion_mnist'),
    'folder': folder_source,
}
