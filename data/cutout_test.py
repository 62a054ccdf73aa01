"""Tests for data/cutout.py."""

import numpy as np
import pytest
import tensorflow as tf

from data import cutout


def _image(size=32):
  return (
      np.arange(size * size * 3, dtype=np.int64)
      .reshape(size, size, 3)
      .astype(np.uint8)
      % 100
      + 150
  )


def test_cutout_at_paints_exact_square_and_clips_at_border():
  image = _image()
  out = cutout.cutout_at(tf.constant(image), 10, 20, 16, fill=7).numpy()
  assert out.dtype == np.uint8 and out.shape == image.shape
  expected = image.copy()
  expected[2:18, 12:28] = 7
  np.testing.assert_array_equal(out, expected)
  corner = cutout.cutout_at(tf.constant(image), 0, 0, 16, fill=7).numpy()
  assert (corner == 7).all(-1).sum() == 8 * 8


@pytest.mark.parametrize('channels', [1, 3])
def test_random_cutout_shape_dtype_area_and_fill(channels):
  image = _image()[..., :channels]
  batch = np.repeat(image[None], 20, 0)
  out = cutout.random_cutout(tf.constant(batch), tf.constant([7, 0])).numpy()
  assert out.dtype == np.uint8 and out.shape == batch.shape
  for result in out:
    painted = (result != image).any(-1)
    # 16x16 clipped at the border: between 8x8 (a corner) and 16x16.
    assert 64 <= painted.sum() <= 256
    assert (result[painted] == cutout.DEFAULT_FILL).all()
    rows, cols = np.nonzero(painted)
    assert painted[
        rows.min() : rows.max() + 1, cols.min() : cols.max() + 1
    ].all()


def test_positions_independent_per_image_and_deterministic():
  image = _image()
  batch = tf.constant(np.repeat(image[None], 64, 0))
  outs = cutout.random_cutout(batch, tf.constant([0, 0])).numpy()
  centres = {
      tuple(np.argwhere((o != image).any(-1)).mean(0).round()) for o in outs
  }
  assert len(centres) > 40
  again = cutout.random_cutout(batch, tf.constant([0, 0])).numpy()
  np.testing.assert_array_equal(again, outs)
  other = cutout.random_cutout(batch, tf.constant([1, 0])).numpy()
  assert not np.array_equal(other, outs)
  # Centres spread over the whole image, corners included.
  painted_anywhere = (outs != image).any(-1).any(0)
  assert painted_anywhere[:4, :4].any() and painted_anywhere[-4:, -4:].any()


def test_bad_size():
  with pytest.raises(ValueError, match='cutout size'):
    cutout.random_cutout(
        tf.constant(_image()[None]), tf.constant([0, 0]), size=-1
    )
