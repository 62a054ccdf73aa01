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
def test_batch_cutout_is_one_patch_for_the_whole_batch(channels):
  # The official code: one mask for the batch, after normalisation, 0.
  batch = (
      np.random.default_rng(0)
      .normal(1.0, 0.1, (20, 32, 32, channels))
      .astype(np.float32)
  )
  out = cutout.batch_cutout(tf.constant(batch), tf.constant([7, 0])).numpy()
  assert out.dtype == np.float32 and out.shape == batch.shape
  painted = (out == 0).all(-1)
  for mask in painted[1:]:
    np.testing.assert_array_equal(mask, painted[0])
  # 16x16 clipped at the border: between 8x8 (a corner) and 16x16.
  assert 64 <= painted[0].sum() <= 256
  rows, cols = np.nonzero(painted[0])
  assert painted[0][
      rows.min() : rows.max() + 1, cols.min() : cols.max() + 1
  ].all()
  np.testing.assert_array_equal(out[~painted], batch[~painted])


def test_patch_centres_cover_the_image_and_follow_the_seed():
  batch = tf.ones((1, 32, 32, 3))
  masks = [
      cutout.batch_cutout(batch, tf.constant([i, 0])).numpy()[0, ..., 0] == 0
      for i in range(200)
  ]
  centres = {tuple(np.argwhere(m).mean(0).round()) for m in masks}
  assert len(centres) > 100
  painted_anywhere = np.any(masks, axis=0)
  assert painted_anywhere[:4, :4].any() and painted_anywhere[-4:, -4:].any()
  again = cutout.batch_cutout(batch, tf.constant([3, 0])).numpy()[0, ..., 0]
  np.testing.assert_array_equal(again == 0, masks[3])


def test_bad_size():
  with pytest.raises(ValueError, match='cutout size'):
    cutout.batch_cutout(tf.ones((1, 4, 4, 1)), tf.constant([0, 0]), size=-1)
