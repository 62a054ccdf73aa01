"""ImageNet-style preprocessing: Inception random-resized crop and centre crop.

Training: sample a box covering 8%-100% of the image with aspect ratio in
[3/4, 4/3] (Szegedy et al., 2015), resize it to `size` x `size`, flip
horizontally with probability 1/2. If ten attempts find no such box, fall back
to the evaluation crop. Evaluation: the central square of side
size / (size + 32) x the shorter side, resized to `size`: the official
code's padded centre crop (CROP_PADDING = 32), 0.875 at 224 (224 of 256),
0.937 at 475 and 0.949 at 600, EfficientNet's resolutions. Resizing is
bicubic, as in the official SAM code
(sam_jax/datasets/dataset_source_imagenet.py, `_decode_and_center_crop`).

Each transform comes in two forms: on a decoded uint8 image (the pipeline's
per-example contract, also used for fine-tuning sets held in memory) and on
encoded bytes (data/streaming.py), where for a JPEG only the cropped window
is decoded, which is several times faster for full-size ImageNet images.
"""

import tensorflow as tf

# The evaluation crop is the centre size x size of the image scaled to
# size + CROP_PADDING on its shorter side (224 of 256).
CROP_PADDING = 32
AREA_RANGE = (0.08, 1.0)
ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)
MAX_ATTEMPTS = 10


def eval_crop_fraction(size: int) -> float:
  """The side of the evaluation crop over the image's shorter side.

  Args:
    size: the output side.

  Returns:
    size / (size + CROP_PADDING): 0.875 at 224, 0.949 at 600.
  """
  return size / (size + CROP_PADDING)


def _center_crop_window(shape, size: int) -> tf.Tensor:
  """[top, left, side, side] of the centre square for output side `size`;
  the side is truncated, as the official code casts it to int32."""
  height, width = shape[0], shape[1]
  side = tf.cast(
      eval_crop_fraction(size) * tf.cast(tf.minimum(height, width), tf.float32),
      tf.int32,
  )
  return tf.stack(
      [(height - side + 1) // 2, (width - side + 1) // 2, side, side]
  )


def _random_crop_window(shape, seed, size: int) -> tf.Tensor:
  """[top, left, height, width] of an Inception crop, or the centre crop."""
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape,
      bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
      seed=seed,
      min_object_covered=0.1,
      aspect_ratio_range=ASPECT_RATIO_RANGE,
      area_range=AREA_RANGE,
      max_attempts=MAX_ATTEMPTS,
      use_image_if_no_bounding_boxes=True,
  )
  window = tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])
  # When every attempt fails the op returns the whole image; use the
  # evaluation crop then, as the reference Inception preprocessing does.
  failed = tf.reduce_all(tf.equal(crop_size[:2], shape[:2]))
  return tf.where(failed, _center_crop_window(shape, size), window)


def _resize(image, size: int) -> tf.Tensor:
  """Bicubic, as the official code (tf.compat.v1 resize_bicubic), rounded
  back to uint8 (the official code normalises the float result)."""
  resized = tf.compat.v1.image.resize_bicubic(image[None], [size, size])[0]
  return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def _crop(image, window):
  return tf.image.crop_to_bounding_box(
      image, window[0], window[1], window[2], window[3]
  )


def train_transform(image, seed, size: int = 224) -> tf.Tensor:
  """Random-resized crop and flip of a decoded image.

  Args:
    image: uint8 [H, W, C].
    seed: int tensor [2].
    size: output side.

  Returns:
    uint8 [size, size, C]; the same seed gives the same output.
  """
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2)
  )
  window = _random_crop_window(tf.shape(image), crop_seed, size)
  image = _resize(_crop(image, window), size)
  return tf.image.stateless_random_flip_left_right(image, flip_seed)


def eval_transform(image, size: int = 224) -> tf.Tensor:
  """Centre crop (size / (size + 32) of the shorter side) resized to `size`.

  Args:
    image: uint8 [H, W, C].
    size: output side.

  Returns:
    uint8 [size, size, C].
  """
  window = _center_crop_window(tf.shape(image), size)
  return _resize(_crop(image, window), size)


def decode_and_train_transform(encoded, seed, size: int = 224):
  """`train_transform` on an encoded image, decoding only the crop window of
  a JPEG (PNG and the other formats are decoded whole first).

  Args:
    encoded: scalar string tensor holding a JPEG, PNG, GIF or BMP.
    seed: int tensor [2].
    size: output side.

  Returns:
    uint8 [size, size, 3].
  """

  def from_jpeg():
    crop_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 2)
    )
    shape = tf.image.extract_jpeg_shape(encoded)
    window = _random_crop_window(shape, crop_seed, size)
    image = _resize(
        tf.image.decode_and_crop_jpeg(encoded, window, channels=3), size
    )
    return tf.image.stateless_random_flip_left_right(image, flip_seed)

  return tf.cond(
      tf.io.is_jpeg(encoded),
      from_jpeg,
      lambda: train_transform(_decode(encoded), seed, size),
  )


def decode_and_eval_transform(encoded, size: int = 224):
  """`eval_transform` on an encoded image, decoding only the centre window
  of a JPEG.

  Args:
    encoded: scalar string tensor holding a JPEG, PNG, GIF or BMP.
    size: output side.

  Returns:
    uint8 [size, size, 3].
  """

  def from_jpeg():
    window = _center_crop_window(tf.image.extract_jpeg_shape(encoded), size)
    return _resize(
        tf.image.decode_and_crop_jpeg(encoded, window, channels=3), size
    )

  return tf.cond(
      tf.io.is_jpeg(encoded),
      from_jpeg,
      lambda: eval_transform(_decode(encoded), size),
  )


def _decode(encoded) -> tf.Tensor:
  image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def make_train_transform(size: int = 224):
  """Returns fn(image, seed) -> uint8 [size, size, C] for the pipeline."""
  if size <= 0:
    raise ValueError(f'image size must be positive, got {size}')
  return lambda image, seed: train_transform(image, seed, size)
