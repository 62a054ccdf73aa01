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


def _scaled(*values: float) -> tuple[float, ...]:
  """Statistics on the [0, 1] scale, as the official code gives them, on
  the 0-255 scale of this pipeline."""
  return tuple(255.0 * v for v in values)


# Datasets decoded once into host memory (data/sources.py), with the
# normalisation statistics of the official SAM code
# (sam_jax/datasets/dataset_source.py), which applies them to pixels in
# [0, 1]. Fashion-MNIST there takes MNIST's mean and std (0.1307, 0.3081),
# not its own: kept, as they produced Table 5. 'folder' measures its own.
IN_MEMORY = {
    'cifar10': Statistics(
        10,
        _scaled(0.49139968, 0.48215841, 0.44653091),
        _scaled(0.24703223, 0.24348513, 0.26158784),
    ),
    'cifar100': Statistics(
        100,
        _scaled(0.50707516, 0.48654887, 0.44091784),
        _scaled(0.26733429, 0.25643846, 0.27615047),
    ),
    'digits': Statistics(10, (73.13,), (90.16,)),
    'svhn_cropped': Statistics(
        10,
        _scaled(0.43090966, 0.4302428, 0.44634357),
        _scaled(0.19759192, 0.20029082, 0.19811132),
    ),
    'fashion_mnist': Statistics(10, _scaled(0.1307), _scaled(0.3081)),
    'folder': None,
}


# The paper's validation holdout for the rho search: 10% of train. SVHN's is
# the official code's fixed one, the last 7,328 of its 73,257 (data/sources.py).
HOLDOUT_FRACTION = 0.1


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
        "flip, reflection pad and random crop (the paper's basic)",
        'random-resized (Inception) crop and flip',
    ),
    'crop': Augmentation(
        'reflection pad and random crop, no flip (digits)', ''
    ),
    'cutout': Augmentation(
        'basic, then one 16x16 patch for the whole normalised batch', ''
    ),
    'autoaugment': Augmentation(
        "the dataset's AutoAugment policy, then basic",
        'the Inception crop, then the AutoAugment policy',
    ),
    'autoaugment_cutout': Augmentation('AutoAugment, basic, then cutout', ''),
    'aa_only': Augmentation(
        'the AutoAugment policy alone (no flip or crop)', ''
    ),
    'aa_only_cutout': Augmentation(
        'the AutoAugment policy, then cutout (the official SVHN setting)', ''
    ),
    'randaugment': Augmentation(
        'RandAugment (N ops at magnitude M), then basic',
        'the Inception crop, then RandAugment',
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
