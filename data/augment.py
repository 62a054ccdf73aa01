"""Per-example training transforms on uint8 images, by name.

Every transform is `fn(image_uint8[H, W, C], seed int[2]) -> uint8[H, W, C]`
built from stateless random ops, so a run's augmentations are a function of
(run seed, step, example) and a resumed run repeats them exactly.

Beyond the paper's basic augmentation: `cutout` (basic, then one 16x16
patch), `autoaugment` (basic, then an AutoAugment policy: CIFAR-10's by
default, the pipeline picks the dataset's with
`autoaugment.policy_for_dataset`), `autoaugment_cutout` (basic, policy, then
cutout: the paper's SVHN setting) and `randaugment` (basic, then N random
operations at magnitude M). Each stage draws from its own sub-seed.
"""

import functools
from typing import Callable

import tensorflow as tf

from data import autoaugment
from data import cutout

Transform = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def identity(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  del seed
  return image


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Horizontal flip with probability 1/2."""
  return tf.image.stateless_random_flip_left_right(image, seed)


def pad_and_crop(image: tf.Tensor, seed: tf.Tensor, padding: int) -> tf.Tensor:
  """Zero-pads `padding` pixels on each side and crops back at random."""
  shape = tf.shape(image)
  padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
  return tf.image.stateless_random_crop(padded, shape, seed)


def basic(image: tf.Tensor, seed: tf.Tensor, padding: int = 4) -> tf.Tensor:
  """The paper's basic augmentation: flip, 4-pixel pad, random crop."""
  flip_seed, crop_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  return pad_and_crop(random_flip(image, flip_seed), crop_seed, padding)


def crop_only(image: tf.Tensor, seed: tf.Tensor, padding: int = 4) -> tf.Tensor:
  """Pad and random crop without flipping (for digits and text)."""
  return pad_and_crop(image, seed, padding)


def _sub_seeds(seed: tf.Tensor, count: int) -> list[tf.Tensor]:
  return tf.unstack(tf.random.experimental.stateless_split(seed, count))


def basic_cutout(image: tf.Tensor, seed: tf.Tensor, padding: int = 4,
                 cutout_size: int = cutout.DEFAULT_SIZE) -> tf.Tensor:
  """Basic, then one cutout patch (DeVries & Taylor, 2017)."""
  basic_seed, cutout_seed = _sub_seeds(seed, 2)
  return cutout.random_cutout(basic(image, basic_seed, padding), cutout_seed,
                              cutout_size)


def basic_autoaugment(image: tf.Tensor, seed: tf.Tensor, padding: int = 4,
                      policy: str = 'cifar10',
                      cutout_size: int = 0) -> tf.Tensor:
  """Basic, then one AutoAugment sub-policy, then cutout if cutout_size."""
  basic_seed, policy_seed, cutout_seed = _sub_seeds(seed, 3)
  image = autoaugment.make_autoaugment(policy)(
      basic(image, basic_seed, padding), policy_seed)
  if cutout_size:
    image = cutout.random_cutout(image, cutout_seed, cutout_size)
  return image


def basic_randaugment(image: tf.Tensor, seed: tf.Tensor, padding: int = 4,
                      num_layers: int = 2,
                      magnitude: float = 9.0) -> tf.Tensor:
  """Basic, then RandAugment (N = num_layers, M = magnitude)."""
  basic_seed, rand_seed = _sub_seeds(seed, 2)
  return autoaugment.make_randaugment(num_layers, magnitude)(
      basic(image, basic_seed, padding), rand_seed)


TRAIN_TRANSFORMS: dict[str, Callable[..., tf.Tensor]] = {
    'none': identity,
    'basic': basic,
    'crop': crop_only,
    'cutout': basic_cutout,
    'autoaugment': basic_autoaugment,
    'autoaugment_cutout': functools.partial(
        basic_autoaugment, cutout_size=cutout.DEFAULT_SIZE),
    'randaugment': basic_randaugment,
}


def make_train_transform(name: str, crop_padding: int = 4,
                         autoaugment_policy: str = 'cifar10',
                         randaugment_layers: int = 2,
                         randaugment_magnitude: float = 9.0) -> Transform:
  """Returns the per-example transform called `name`.

  Args:
    name: a key of `TRAIN_TRANSFORMS`.
    crop_padding: pixels of zero padding before the random crop.
    autoaugment_policy: for the autoaugment entries, a key of
      `autoaugment.POLICIES` ('cifar10', 'svhn', 'imagenet').
    randaugment_layers: for 'randaugment', the number N of operations.
    randaugment_magnitude: for 'randaugment', the magnitude M in [0, 10].

  Returns:
    fn(image, seed) -> image.
  """
  if name not in TRAIN_TRANSFORMS:
    raise ValueError(
        f'unknown augment {name!r}; valid: {sorted(TRAIN_TRANSFORMS)}')
  fn = TRAIN_TRANSFORMS[name]
  options = {}
  if name != 'none':
    options['padding'] = crop_padding
  if name.startswith('autoaugment'):
    if autoaugment_policy not in autoaugment.POLICIES:
      raise ValueError(f'autoaugment_policy must be one of '
                       f'{sorted(autoaugment.POLICIES)}, got '
                       f'{autoaugment_policy!r}')
    options['policy'] = autoaugment_policy
  if name == 'randaugment':
    # Raises on a bad N or M now rather than at the first batch.
    autoaugment.make_randaugment(randaugment_layers, randaugment_magnitude)
    options.update(num_layers=randaugment_layers,
                   magnitude=randaugment_magnitude)
  return functools.partial(fn, **options) if options else fn
