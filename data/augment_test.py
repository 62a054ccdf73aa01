"""Tests for the augment registry's cutout / AutoAugment / RandAugment
entries (data/augment.py)."""

import numpy as np
import pytest
import tensorflow as tf

from data import augment
from data import cutout

NEW_ENTRIES = ('cutout', 'autoaugment', 'autoaugment_cutout', 'randaugment')


def _image():
  y, x = np.mgrid[:32, :32]
  return np.stack([x * 7, y * 7, (x + y) * 3 + 20], -1).astype(np.uint8)


def _outputs(transform, count=8):
  """Eager outputs for seeds (i, 2); eager keeps these tests fast."""
  seeds = np.stack([np.arange(count), np.full(count, 2)], 1).astype(np.int64)
  return seeds, np.stack([transform(tf.constant(_image()),
                                    tf.constant(seed)).numpy()
                          for seed in seeds])


@pytest.mark.parametrize('name', NEW_ENTRIES)
def test_entry_shape_dtype_determinism(name):
  transform = augment.make_train_transform(name, crop_padding=4)
  seeds, outs = _outputs(transform)
  assert outs.shape == (8, 32, 32, 3) and outs.dtype == np.uint8
  assert len({o.tobytes() for o in outs}) == 8
  again = transform(tf.constant(_image()), tf.constant(seeds[3])).numpy()
  np.testing.assert_array_equal(again, outs[3])


def test_entry_in_tf_data_matches_eager():
  transform = augment.make_train_transform('autoaugment_cutout',
                                           autoaugment_policy='svhn')
  seeds, eager = _outputs(transform, count=4)
  dataset = tf.data.Dataset.from_tensor_slices(seeds).map(
      lambda s: transform(tf.constant(_image()), s))
  np.testing.assert_array_equal(np.stack(list(dataset.as_numpy_iterator())),
                                eager)


def test_cutout_entry_is_basic_plus_one_grey_patch():
  _, outs = _outputs(augment.make_train_transform('cutout'))
  for out in outs:
    grey = (out == cutout.DEFAULT_FILL).all(-1)
    # A 16x16 patch clipped at the border covers 64..256 pixels (the
    # gradient image has no grey pixels of its own).
    assert 64 <= grey.sum() <= 256


def test_autoaugment_cutout_uses_the_named_policy():
  svhn = augment.make_train_transform('autoaugment_cutout',
                                      autoaugment_policy='svhn')
  cifar = augment.make_train_transform('autoaugment_cutout')
  _, svhn_outs = _outputs(svhn)
  _, cifar_outs = _outputs(cifar)
  assert not np.array_equal(svhn_outs, cifar_outs)
  for out in svhn_outs:
    assert (out == cutout.DEFAULT_FILL).all(-1).sum() >= 64


def test_bad_options():
  with pytest.raises(ValueError, match='unknown augment'):
    augment.make_train_transform('autoaugment_svhn')
  with pytest.raises(ValueError, match='autoaugment_policy'):
    augment.make_train_transform('autoaugment', autoaugment_policy='mnist')
  with pytest.raises(ValueError, match='magnitude'):
    augment.make_train_transform('randaugment', randaugment_magnitude=20)
