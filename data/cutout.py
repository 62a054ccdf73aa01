"""Cutout (DeVries & Taylor, 2017): a square patch is blanked.

The patch centre is uniform over the image and the patch is clipped at the
border, so a patch near an edge covers less area. `batch_cutout` is the
paper's (the official code's): one patch for the whole batch, after
normalisation, filled with 0 (the mean). `cutout_at` paints one uint8 image,
for AutoAugment's Cutout operation (filled with grey, 128).
"""

import tensorflow as tf

DEFAULT_SIZE = 16
DEFAULT_FILL = 128


def cutout_at(
    image: tf.Tensor,
    center_y: tf.Tensor,
    center_x: tf.Tensor,
    size: tf.Tensor | int,
    fill: int = DEFAULT_FILL,
) -> tf.Tensor:
  """Paints a `size` x `size` square centred at (center_y, center_x).

  Args:
    image: uint8 [H, W, C].
    center_y: int32 scalar row of the patch centre.
    center_x: int32 scalar column of the patch centre.
    size: side of the square in pixels (may be a tensor); clipped at borders.
    fill: value written into the patch.

  Returns:
    uint8 [H, W, C].
  """
  shape = tf.shape(image)
  size = tf.cast(size, tf.int32)
  top = tf.clip_by_value(center_y - size // 2, 0, shape[0])
  bottom = tf.clip_by_value(center_y - size // 2 + size, 0, shape[0])
  left = tf.clip_by_value(center_x - size // 2, 0, shape[1])
  right = tf.clip_by_value(center_x - size // 2 + size, 0, shape[1])
  # A full-shape 0/1 mask and uint8 arithmetic (image + mask * (fill -
  # image), exact modulo 256) avoid tf.where and broadcasting, both slow on
  # small images.
  mask = tf.pad(
      tf.ones([bottom - top, right - left, shape[2]], image.dtype),
      [[top, shape[0] - bottom], [left, shape[1] - right], [0, 0]],
  )
  return image + mask * (tf.cast(fill, image.dtype) - image)


def batch_cutout(
    images: tf.Tensor,
    seed: tf.Tensor,
    size: int = DEFAULT_SIZE,
    fill: float = 0.0,
) -> tf.Tensor:
  """One patch, at one uniformly drawn centre, for the whole batch.

  The official SAM code's cutout (sam_jax/datasets/augmentation.py), whose
  README calls it critical that one mask serves the whole batch: it runs on
  the normalised batch and fills 0, the dataset mean.

  Args:
    images: float [B, H, W, C], normalised.
    seed: int tensor [2]; the same seed gives the same patch.
    size: side of the square in pixels; clipped at the borders.
    fill: value written into the patch.

  Returns:
    float [B, H, W, C].
  """
  if size < 0:
    raise ValueError(f'cutout size must be >= 0, got {size}')
  shape = tf.shape(images)
  centre = (
      tf.random.stateless_uniform([2], seed, 0, tf.int32.max, tf.int32)
      % shape[1:3]
  )
  start = centre - size // 2
  rows = tf.range(shape[1])
  columns = tf.range(shape[2])
  inside_rows = (rows >= start[0]) & (rows < start[0] + size)
  inside_columns = (columns >= start[1]) & (columns < start[1] + size)
  patch = inside_rows[:, None, None] & inside_columns[None, :, None]
  return tf.where(patch[None], tf.cast(fill, images.dtype), images)
