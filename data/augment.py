"""Training transforms on batches of uint8 images, by name.

Every transform is `fn(images uint8 [B, H, W, C], seed int[2]) -> uint8
[B, H, W, C]` built from stateless random ops; the pipeline seeds each batch
with (run seed, step, host), so a run's augmentations are a function of
those and a resumed run repeats them exactly.

The paper's basic augmentation (flip, pad, random crop) and cutout act on the
whole batch at once: one random draw gives every image its own offsets, flip
and patch, and two gathers move the pixels. Per-image tf.data maps would
spend more time in per-element overhead than in these operations. The
AutoAugment and RandAugment policies, whose operations differ from image to
image, run per image (`per_image`) on per-image seeds.

Beyond the paper's basic augmentation: `cutout` (basic, then one 16x16
patch), `autoaugment` (basic, then an AutoAugment policy: CIFAR-10's by
default, the pipeline picks the dataset's with
`policies.policy_for_dataset`), `autoaugment_cutout` (basic, policy, then
cutout: the paper's SVHN setting) and `randaugment` (basic, then N random
operations at magnitude M). Each stage draws from its own sub-seed.
"""

import functools
from typing import Callable

import tensorflow as tf

from data import autoaugment
from data import catalog
from data import cutout
from data import policies

Transform = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def identity(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  del seed
  return images


def flip_and_crop(
    images: tf.Tensor, seed: tf.Tensor, padding: int = 4, flip: bool = True
) -> tf.Tensor:
  """Per image: zero-pad `padding` pixels, crop back at a uniform offset and
  (if `flip`) mirror left-right with probability 1/2.

  Args:
    images: uint8 [B, H, W, C].
    seed: int tensor [2].
    padding: pixels of zero padding on each side.
    flip: whether to flip.

  Returns:
    uint8 [B, H, W, C].
  """
  shape = tf.shape(images)
  height, width = shape[1], shape[2]
  draws = tf.random.stateless_uniform(
      [shape[0], 3], seed, 0, tf.int32.max, tf.int32
  )
  top = draws[:, :1] % (2 * padding + 1)
  left = draws[:, 1:2] % (2 * padding + 1)
  flipped = tf.logical_and(flip, draws[:, 2:] % 2 == 1)
  columns = tf.range(width)[None]
  columns = left + tf.where(flipped, width - 1 - columns, columns)
  rows = top + tf.range(height)[None]
  padded = tf.pad(
      images, [[0, 0], [padding, padding], [padding, padding], [0, 0]]
  )
  images = tf.gather(padded, rows, axis=1, batch_dims=1)
  return tf.gather(images, columns, axis=2, batch_dims=1)


def per_image(fn: Transform) -> Transform:
  """Lifts fn(image [H, W, C], seed [2]) to batches, one seed per image."""

  def apply(images, seed):
    seeds = tf.random.stateless_uniform(
        [tf.shape(images)[0], 2], seed, None, None, tf.int64
    )
    out = tf.map_fn(
        lambda args: fn(*args),
        (images, seeds),
        fn_output_signature=images.dtype,
    )
    return tf.ensure_shape(out, images.shape)

  return apply


def _sub_seeds(seed: tf.Tensor, count: int) -> list[tf.Tensor]:
  return tf.unstack(tf.random.experimental.stateless_split(seed, count))


def basic_cutout(
    images: tf.Tensor,
    seed: tf.Tensor,
    padding: int = 4,
    cutout_size: int = cutout.DEFAULT_SIZE,
) -> tf.Tensor:
  """Basic, then one cutout patch per image (DeVries & Taylor, 2017)."""
  basic_seed, cutout_seed = _sub_seeds(seed, 2)
  return cutout.random_cutout(
      flip_and_crop(images, basic_seed, padding), cutout_seed, cutout_size
  )


def basic_then(
    policy: Transform,
    images: tf.Tensor,
    seed: tf.Tensor,
    padding: int = 4,
    cutout_size: int = 0,
) -> tf.Tensor:
  """Basic, then a per-image policy, then cutout if cutout_size."""
  basic_seed, policy_seed, cutout_seed = _sub_seeds(seed, 3)
  images = per_image(policy)(
      flip_and_crop(images, basic_seed, padding), policy_seed
  )
  if cutout_size:
    images = cutout.random_cutout(images, cutout_seed, cutout_size)
  return images


# The augmentations of catalog.AUGMENTATIONS that act on in-memory batches.
TRAIN_TRANSFORMS = tuple(catalog.augmentations(streamed=False))


def make_train_transform(
    name: str,
    crop_padding: int = 4,
    autoaugment_policy: str = 'cifar10',
    randaugment_layers: int = 2,
    randaugment_magnitude: float = 9.0,
) -> Transform:
  """Returns the batch transform called `name`.

  Args:
    name: one of `TRAIN_TRANSFORMS`: 'none', 'basic' (flip, pad, crop),
      'crop' (pad and crop without flipping, for digits and text), 'cutout',
      'autoaugment', 'autoaugment_cutout', 'randaugment'.
    crop_padding: pixels of zero padding before the random crop.
    autoaugment_policy: for the autoaugment entries, a key of
      `policies.POLICIES` ('cifar10', 'svhn', 'imagenet').
    randaugment_layers: for 'randaugment', the number N of operations.
    randaugment_magnitude: for 'randaugment', the magnitude M in [0, 10].

  Returns:
    fn(images uint8 [B, H, W, C], seed int[2]) -> uint8 [B, H, W, C].
  """
  if name not in TRAIN_TRANSFORMS:
    raise ValueError(
        f'unknown augment {name!r}; valid: {sorted(TRAIN_TRANSFORMS)}'
    )
  padding = crop_padding
  if name.startswith('autoaugment'):
    if autoaugment_policy not in policies.POLICIES:
      raise ValueError(
          f'autoaugment_policy must be one of '
          f'{sorted(policies.POLICIES)}, got '
          f'{autoaugment_policy!r}'
      )
    return functools.partial(
        basic_then,
        autoaugment.make_autoaugment(autoaugment_policy),
        padding=padding,
        cutout_size=cutout.DEFAULT_SIZE if name.endswith('cutout') else 0,
    )
  if name == 'randaugment':
    return functools.partial(
        basic_then,
        autoaugment.make_randaugment(randaugment_layers, randaugment_magnitude),
        padding=padding,
    )
  return {
      'none': identity,
      'basic': functools.partial(flip_and_crop, padding=padding),
      'crop': functools.partial(flip_and_crop, padding=padding, flip=False),
      'cutout': functools.partial(basic_cutout, padding=padding),
  }[name]
