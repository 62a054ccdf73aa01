"""Tests for data/imagenet_transforms.py."""

import io

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from data import imagenet_transforms


def _picture(height=60, width=80):
  """Quadrant colours make crops, flips and centring visible."""
  image = np.zeros((height, width, 3), np.uint8)
  image[: height // 2, : width // 2] = (255, 0, 0)
  image[: height // 2, width // 2 :] = (0, 255, 0)
  image[height // 2 :, : width // 2] = (0, 0, 255)
  image[height // 2 :, width // 2 :] = (255, 255, 0)
  return image


def _encode(image, image_format='JPEG'):
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format=image_format, quality=95)
  return buffer.getvalue()


def test_train_transform_shape_dtype_and_determinism():
  image = tf.constant(_picture())
  outs = [
      imagenet_transforms.train_transform(
          image, tf.constant([i, 3]), 24
      ).numpy()
      for i in range(12)
  ]
  for out in outs:
    assert out.shape == (24, 24, 3) and out.dtype == np.uint8
  again = imagenet_transforms.train_transform(image, tf.constant([5, 3]), 24)
  np.testing.assert_array_equal(again.numpy(), outs[5])
  assert len({o.tobytes() for o in outs}) >= 10


def test_train_crops_cover_area_and_aspect_ranges():
  shape = tf.constant([300, 400, 3])
  areas, ratios = [], []
  for i in range(200):
    window = imagenet_transforms._random_crop_window(
        shape, tf.constant([i, 0]), 224
    )
    top, left, height, width = window.numpy()
    assert 0 <= top and top + height <= 300 and 0 <= left
    assert left + width <= 400
    areas.append(height * width / (300 * 400))
    ratios.append(width / height)
  assert 0.07 <= min(areas) < 0.2 and max(areas) > 0.8
  # A crop of whole pixels can stray a little outside [3/4, 4/3]; the
  # centre-crop fallback is square.
  assert 0.7 <= min(ratios) and max(ratios) <= 1.4


def test_flip_happens_about_half_the_time():
  image = tf.constant(_picture(40, 40))
  # Red starts top-left; after a flip the top-left of any crop is green-ish.
  flipped = 0
  for i in range(100):
    out = imagenet_transforms.train_transform(image, tf.constant([i, 1]), 8)
    corner = out.numpy()[0, 0].astype(int)
    if corner[0] < 128 and corner[1] > 128:
      flipped += 1
    elif corner[0] > 128 and corner[1] > 128:  # Crop inside yellow: unknown.
      flipped += 0.5
  assert 30 <= flipped <= 70


def test_eval_transform_centre_crop():
  image = _picture(64, 128)
  out = imagenet_transforms.eval_transform(tf.constant(image), 28).numpy()
  assert out.shape == (28, 28, 3) and out.dtype == np.uint8
  # Side int(28 / (28 + 32) * 64) = 29, centred: rows 18..46, columns 50..78.
  crop = tf.constant(image[18:47, 50:79])
  np.testing.assert_array_equal(out, imagenet_transforms._resize(crop, 28))
  # The crop straddles the centre, so all four quadrant colours survive.
  np.testing.assert_array_equal(out[0, 0], [255, 0, 0])
  np.testing.assert_array_equal(out[-1, -1], [255, 255, 0])


@pytest.mark.parametrize(
    'size, fraction, side',
    [(224, 0.875, 560), (475, 0.9369, 599), (600, 0.9494, 607)],
)
def test_eval_crop_is_the_official_padded_fraction(size, fraction, side):
  # The official crop (dataset_source_imagenet.py, _decode_and_center_crop):
  # size / (size + 32) of the shorter side, truncated to whole pixels; a
  # fixed 0.875 would take 560 pixels of 640 at every size.
  assert imagenet_transforms.eval_crop_fraction(size) == pytest.approx(
      fraction, abs=1e-4
  )
  window = imagenet_transforms._center_crop_window(
      tf.constant([640, 800, 3]), size
  )
  top, left = (640 - side + 1) // 2, (800 - side + 1) // 2
  np.testing.assert_array_equal(window.numpy(), [top, left, side, side])
  # The training crop falls back to it when no Inception box is found (a
  # sliver of an image whose every box breaks the aspect ratio range).
  sliver = tf.constant([4, 640, 3])
  np.testing.assert_array_equal(
      imagenet_transforms._random_crop_window(
          sliver, tf.constant([0, 0]), size
      ),
      imagenet_transforms._center_crop_window(sliver, size),
  )


@pytest.mark.parametrize('image_format', ['JPEG', 'PNG'])
def test_encoded_paths_match_decoded_paths(image_format):
  image = _picture(96, 120)
  encoded = tf.constant(_encode(image, image_format))
  decoded = tf.io.decode_image(encoded, channels=3)
  if image_format == 'PNG':  # Lossless.
    np.testing.assert_array_equal(decoded.numpy(), image)
  seed = tf.constant([4, 2])
  np.testing.assert_array_equal(
      imagenet_transforms.decode_and_train_transform(encoded, seed, 32).numpy(),
      imagenet_transforms.train_transform(decoded, seed, 32).numpy(),
  )
  np.testing.assert_array_equal(
      imagenet_transforms.decode_and_eval_transform(encoded, 32).numpy(),
      imagenet_transforms.eval_transform(decoded, 32).numpy(),
  )


def test_make_train_transform_in_tf_data_and_bad_size():
  fn = imagenet_transforms.make_train_transform(16)
  seeds = np.stack([np.arange(4), np.zeros(4)], 1).astype(np.int64)
  dataset = tf.data.Dataset.from_tensor_slices(seeds).map(
      lambda s: fn(tf.constant(_picture()), s)
  )
  outs = np.stack(list(dataset.as_numpy_iterator()))
  assert outs.shape == (4, 16, 16, 3)
  with pytest.raises(ValueError, match='image size'):
    imagenet_transforms.make_train_transform(0)


def test_the_bicubic_resize_is_rounded_to_uint8():
  # The official code keeps the bicubic output as floats; ours rounds it to
  # the nearest uint8 (at most 0.5 / 255 away where it is not clipped), so
  # that every augmentation op works on one uint8 image type.
  image = np.random.default_rng(0).integers(0, 256, (37, 29, 3), np.uint8)
  floats = tf.compat.v1.image.resize_bicubic(image[None], [20, 20])[0].numpy()
  out = imagenet_transforms._resize(tf.constant(image), 20).numpy()
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out, np.clip(np.round(floats), 0, 255))
  # Rounded, not truncated: on noise the two differ on about half the pixels.
  assert (out != np.clip(np.floor(floats), 0, 255)).mean() > 0.3
