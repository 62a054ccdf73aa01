"""Cutout (DeVries & Taylor, 2017): one square patch per image is blanked.

The patch centre is uniform over the image and the patch is clipped at the
border, as in the original method, so a patch near an edge covers less area.
Every image of a batch gets its own position (`random_cutout`); `cutout_at`
paints one image, for AutoAugment's Cutout operation.

The original code zeroes the patch after normalisation, i.e. paints it with
the dataset mean. Our transforms run before normalisation on uint8 images, so
the default fill is mid-grey (128), close to the mean of natural-image data.
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


def random_cutout(
    images: tf.Tensor,
    seed: tf.Tensor,
    size: int = DEFAULT_SIZE,
    fill: int = DEFAULT_FILL,
) -> tf.Tensor:
  """One patch per image, each at its own uniformly drawn centre.

  Args:
    images: uint8 [B, H, W, C].
    seed: int tensor [2]; every image's centre comes from one draw.
    size: side of the square in pixels.
    fill: value written into the patch.

  Returns:
    uint8 [B, H, W, C]; the same seed gives the same patches.
  """
  if size < 0:
    raise ValueError(f'cutout size must be >= 0, got {size}')
  shape = tf.shape(images)
  centre = (
      tf.random.stateless_uniform(
          [shape[0], 2], seed, 0, tf.int32.max, tf.int32
      )
      % shape[1:3]
  )
  start = centre - size // 2  # [B, 2]: top, left.
  inside = []
  for axis in (0, 1):
    pixel = tf.range(shape[1 + axis])[None]
    inside.append(
        (pixel >= start[:, axis : axis + 1])
        & (pixel < start[:, axis : axis + 1] + size)
    )
  patch = inside[0][:, :, None, None] & inside[1][:, None, :, None]
  return tf.where(patch, tf.cast(fill, images.dtype), images)
