"""Per-example training transforms on uint8 images, by name.

Every transform is `fn(image_uint8[H, W, C], seed int[2]) -> uint8[H, W, C]`
built from stateless random ops, so a run's augmentations are a function of
(run seed, step, example) and a resumed run repeats them exactly.
"""

from typing import Callable

import tensorflow as tf

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


TRAIN_TRANSFORMS: dict[str, Callable[..., tf.Tensor]] = {
    'none': identity,
    'basic': basic,
    'crop': crop_only,
}


def make_train_transform(name: str, crop_padding: int = 4) -> Transform:
  """Returns the per-example transform called `name`.

  Args:
    name: a key of `TRAIN_TRANSFORMS`.
    crop_padding: pixels of zero padding before the random crop.

  Returns:
    fn(image, seed) -> image.
  """
  if name not in TRAIN_TRANSFORMS:
    raise ValueError(
        f'unknown augment {name!r}; valid: {sorted(TRAIN_TRANSFORMS)}')
  fn = TRAIN_TRANSFORMS[name]
  if name in ('basic', 'crop'):
    return lambda image, seed: fn(image, seed, padding=crop_padding)
  return fn
