"""Training augmentations of in-memory batches, by name, in the official
code's order.

An augmentation is two stages (`Augmentation`): `images`, a batch transform
`fn(images uint8 [B, H, W, C], seed) -> uint8 [B, H, W, C]` applied before
normalisation, and `cutout_size`, the side of one cutout patch that the
pipeline applies to the whole normalised global batch (data/cutout.py). The
seed is an int[2] or a `SliceSeed`: the pipeline seeds each global batch
with (run seed, step), and every random draw is made for the whole global
batch and sliced to the host's rows, so an example's augmentation depends on
the run seed, the step and its row only, not on how many hosts share the
batch, and a resumed run repeats it.

The order is the official SAM code's (sam_jax/datasets/dataset_source.py):
the AutoAugment policy (per image, data/autoaugment.py), then flip, pad by
reflection and random crop (one random draw and two gathers for the whole
batch), then normalisation, then cutout. The names (catalog.AUGMENTATIONS):
'none', 'basic' (flip and crop), 'crop' (no flip: digits), 'cutout' (basic,
cutout), 'autoaugment' (policy, basic), 'autoaugment_cutout' (policy, basic,
cutout), 'aa_only' and 'aa_only_cutout' (the policy without flip or crop,
with or without cutout: the official SVHN setting) and 'randaugment' (N
random operations at magnitude M, then basic). Each stage draws from its own
sub-seed.
"""

import functools
from typing import Callable, NamedTuple

import tensorflow as tf

from data import autoaugment
from data import catalog
from data import cutout
from data import policies


class SliceSeed(NamedTuple):
  """The randomness of rows [start, start + B) of a global batch.

  Attributes:
    seed: int tensor [2], the seed of the whole global batch.
    start: the first row of this host's slice.
    total: rows of the global batch; None: the batch is the whole of it.
  """

  seed: tf.Tensor
  start: int = 0
  total: int | None = None


def _as_slice_seed(seed) -> SliceSeed:
  return seed if isinstance(seed, SliceSeed) else SliceSeed(seed)


def uniform_rows(seed, count, columns: int, dtype=tf.int32) -> tf.Tensor:
  """Uniform integers for `count` rows, drawn for the whole global batch.

  Args:
    seed: an int[2] seed or a `SliceSeed`.
    count: rows of this slice.
    columns: draws per row.
    dtype: tf.int32 (in [0, 2^31 - 1)) or tf.int64 (full range: seeds).

  Returns:
    [count, columns] of `dtype`: rows start..start + count of the draws of
    the global batch.
  """
  seed = _as_slice_seed(seed)
  total = count if seed.total is None else seed.total
  if dtype == tf.int64:
    draws = tf.random.stateless_uniform(
        [total, columns], seed.seed, None, None, tf.int64
    )
  else:
    draws = tf.random.stateless_uniform(
        [total, columns], seed.seed, 0, tf.int32.max, tf.int32
    )
  return draws[seed.start : seed.start + count]


def split_seed(seed, count: int) -> list[SliceSeed]:
  """`count` independent seeds for the same slice."""
  seed = _as_slice_seed(seed)
  subs = tf.unstack(tf.random.experimental.stateless_split(seed.seed, count))
  return [seed._replace(seed=sub) for sub in subs]


Transform = Callable[[tf.Tensor, SliceSeed | tf.Tensor], tf.Tensor]


class Augmentation(NamedTuple):
  """A named augmentation as the in-memory pipeline applies it.

  Attributes:
    images: the uint8 batch transform, before normalisation.
    cutout_size: > 0: one patch of this side for the normalised batch.
  """

  images: Transform
  cutout_size: int = 0


def identity(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  del seed
  return images


def flip_and_crop(
    images: tf.Tensor, seed: tf.Tensor, padding: int = 4, flip: bool = True
) -> tf.Tensor:
  """Per image: (if `flip`) mirror left-right with probability 1/2, pad
  `padding` pixels by reflection and crop back at a uniform offset.

  Args:
    images: uint8 [B, H, W, C].
    seed: int tensor [2] or a `SliceSeed`.
    padding: pixels of reflection padding on each side.
    flip: whether to flip.

  Returns:
    uint8 [B, H, W, C].
  """
  shape = tf.shape(images)
  height, width = shape[1], shape[2]
  draws = uniform_rows(seed, shape[0], 3)
  top = draws[:, :1] % (2 * padding + 1)
  left = draws[:, 1:2] % (2 * padding + 1)
  flipped = tf.logical_and(flip, draws[:, 2:] % 2 == 1)
  # Flipping the padded image and cropping at the mirrored offset is the
  # crop of the flipped image: reflection padding is symmetric.
  columns = left + tf.range(width)[None]
  columns = tf.where(flipped, width + 2 * padding - 1 - columns, columns)
  rows = top + tf.range(height)[None]
  padded = tf.pad(
      images,
      [[0, 0], [padding, padding], [padding, padding], [0, 0]],
      mode='REFLECT',
  )
  images = tf.gather(padded, rows, axis=1, batch_dims=1)
  return tf.gather(images, columns, axis=2, batch_dims=1)


def per_image(fn: Transform) -> Transform:
  """Lifts fn(image [H, W, C], seed [2]) to batches, one seed per image."""

  def apply(images, seed):
    seeds = uniform_rows(seed, tf.shape(images)[0], 2, tf.int64)
    out = tf.map_fn(
        lambda args: fn(*args),
        (images, seeds),
        fn_output_signature=images.dtype,
    )
    return tf.ensure_shape(out, images.shape)

  return apply


def policy_then(
    policy: Transform,
    crop: Transform | None,
    images: tf.Tensor,
    seed: tf.Tensor,
) -> tf.Tensor:
  """A per-image policy, then (if given) the batch flip and crop."""
  policy_seed, crop_seed = split_seed(seed, 2)
  images = per_image(policy)(images, policy_seed)
  return crop(images, crop_seed) if crop else images


# The augmentations of catalog.AUGMENTATIONS that act on in-memory batches.
TRAIN_TRANSFORMS = tuple(catalog.augmentations(streamed=False))


def make_train_augmentation(
    name: str,
    crop_padding: int = 4,
    autoaugment_policy: str = 'cifar10',
    randaugment_layers: int = 2,
    randaugment_magnitude: float = 9.0,
) -> Augmentation:
  """Returns the augmentation called `name` (see the module doc).

  Args:
    name: one of `TRAIN_TRANSFORMS`.
    crop_padding: pixels of reflection padding before the random crop.
    autoaugment_policy: for the AutoAugment names, a key of
      `policies.POLICIES` ('cifar10', 'svhn', 'imagenet').
    randaugment_layers: for 'randaugment', the number N of operations.
    randaugment_magnitude: for 'randaugment', the magnitude M in [0, 10].

  Returns:
    The Augmentation.
  """
  if name not in TRAIN_TRANSFORMS:
    raise ValueError(
        f'unknown augment {name!r}; valid: {sorted(TRAIN_TRANSFORMS)}'
    )
  crop = functools.partial(flip_and_crop, padding=crop_padding)
  size = cutout.DEFAULT_SIZE if name.endswith('cutout') else 0
  if name.startswith(('autoaugment', 'aa_only')):
    if autoaugment_policy not in policies.POLICIES:
      raise ValueError(
          f'autoaugment_policy must be one of '
          f'{sorted(policies.POLICIES)}, got '
          f'{autoaugment_policy!r}'
      )
    policy = autoaugment.make_autoaugment(autoaugment_policy)
    return Augmentation(
        functools.partial(
            policy_then,
            policy,
            crop if name.startswith('autoaugment') else None,
        ),
        size,
    )
  if name == 'randaugment':
    policy = autoaugment.make_randaugment(
        randaugment_layers, randaugment_magnitude
    )
    return Augmentation(functools.partial(policy_then, policy, crop))
  return Augmentation(
      {
          'none': identity,
          'basic': crop,
          'crop': functools.partial(
              flip_and_crop, padding=crop_padding, flip=False
          ),
          'cutout': crop,
      }[name],
      size,
  )
