"""What the data package offers, as facts: dataset names, their splits and
statistics, and the augmentations. No TensorFlow here, so that configs can
be checked (sam/run/checks.py) wherever jax runs.
"""

import dataclasses
from typing import NamedTuple


class Statistics(NamedTuple):
  """A dataset's classes and per-channel statistics on the 0-255 scale."""

  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]


# RGB on the 0-255 scale; the statistics of ImageNet's training set, which
# the paper's finetuned models were pretrained with.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

# Datasets decoded once into host memory (data/sources.py), with the
# statistics of their training sets. 'folder' measures its own.
IN_MEMORY = {
    'cifar10': Statistics(10, (125.3, 123.0, 113.9), (63.0, 62.1, 66.7)),
    'cifar100': Statistics(100, (129.3, 124.1, 112.4), (68.2, 65.4, 70.4)),
    'digits': Statistics(10, (73.13,), (90.16,)),
    'svhn_cropped': Statistics(10, (111.6, 113.2, 120.6), (50.5, 51.3, 50.2)),
    # Fashion-MNIST's 72.9 / 90.0 (0.2860 / 0.3530 of 255) over 28x28,
    # rescaled to the zero-padded 32x32 images.
    'fashion_mnist': Statistics(10, (55.84,), (84.61,)),
    'folder': None,
}


@dataclasses.dataclass(frozen=True)
class StreamedSpec:
  """A streamed dataset's splits ('+' joins tfds splits) and statistics."""

  train: str = 'train'
  test: str = 'test'
  mean: tuple[float, ...] = IMAGENET_MEAN
  std: tuple[float, ...] = IMAGENET_STD


# The paper's streamed datasets (Tables 2 and 3). Another tfds name streams
# with StreamedSpec() ('validation' stands in for a missing 'test').
STREAMED = {
    'imagenet2012': StreamedSpec(test='validation'),
    'oxford_flowers102': StreamedSpec(train='train+validation'),
    'oxford_iiit_pet': StreamedSpec(),
    'cars196': StreamedSpec(),
    'food101': StreamedSpec(test='validation'),
    # CIFAR upsampled to a finetuned model's resolution (data.streaming).
    'cifar10': StreamedSpec(
        mean=IN_MEMORY['cifar10'].mean, std=IN_MEMORY['cifar10'].std
    ),
    'cifar100': StreamedSpec(
        mean=IN_MEMORY['cifar100'].mean, std=IN_MEMORY['cifar100'].std
    ),
}


class Augmentation(NamedTuple):
  """A training augmentation: what it does, for each kind of dataset.

  Attributes:
    in_memory: on batches of images held in memory (data/augment.py), or ''
      when it does not apply there.
    streamed: on streamed images (data/streaming.py), or ''.
  """

  in_memory: str
  streamed: str


# The one table of augmentation names (config.data.augment).
AUGMENTATIONS = {
    'none': Augmentation(
        'the images as they are', 'the evaluation crop (centre 0.875, resized)'
    ),
    'basic': Augmentation(
        "flip, pad and random crop (the paper's basic)",
        'random-resized (Inception) crop and flip',
    ),
    'crop': Augmentation('pad and random crop, no flip (digits)', ''),
    'cutout': Augmentation('basic, then one 16x16 cutout patch', ''),
    'autoaugment': Augmentation(
        "basic, then the dataset's AutoAugment " 'policy',
        'the Inception crop, then the ' 'AutoAugment policy',
    ),
    'autoaugment_cutout': Augmentation(
        'basic, AutoAugment, then cutout ' "(the paper's SVHN setting)", ''
    ),
    'randaugment': Augmentation(
        'basic, then RandAugment (N ops at ' 'magnitude M)',
        'the Inception crop, then ' 'RandAugment',
    ),
}


def uses_streaming(dataset: str, streaming: bool) -> bool:
  """Whether `dataset` is streamed rather than held in memory."""
  return streaming or dataset not in IN_MEMORY


def augmentations(streamed: bool) -> list[str]:
  """The augmentation names valid for a streamed or in-memory dataset."""
  return sorted(
      name
      for name, a in AUGMENTATIONS.items()
      if (a.streamed if streamed else a.in_memory)
  )
