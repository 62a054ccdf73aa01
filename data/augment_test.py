"""Tests for the batch transforms of data/augment.py."""

import numpy as np
import pytest
import tensorflow as tf

from data import augment

BATCH = 8


def _images(count=BATCH):
  """Distinct gradient images (no grey pixels), one per batch row."""
  y, x = np.mgrid[:32, :32]
  base = np.stack([x * 7, y * 7, (x + y) * 3 + 20], -1)
  return np.stack([(base + i) % 120 + 1 for i in range(count)]).astype(np.uint8)


def _run(transform, seed=(3, 2), images=None):
  images = _images() if images is None else images
  return transform(tf.constant(images), tf.constant(seed, tf.int64)).numpy()


def _crops(image, padding):
  """Every (top, left, flipped) crop of the reflection-padded image (the
  official code's np.pad mode: 'reflect')."""
  padded = np.pad(
      image, [(padding, padding), (padding, padding), (0, 0)], mode='reflect'
  )
  side = image.shape[0]
  for top in range(2 * padding + 1):
    for left in range(2 * padding + 1):
      crop = padded[top : top + side, left : left + side]
      yield (top, left, False), crop
      yield (top, left, True), crop[:, ::-1]


@pytest.mark.parametrize('flip', [True, False])
def test_flip_and_crop_is_a_reflection_padded_crop_per_image(flip):
  images = _images()
  found = []
  for seed in range(12):
    out = _run(lambda x, s: augment.flip_and_crop(x, s, 4, flip), (seed, 0))
    assert out.shape == images.shape and out.dtype == np.uint8
    for image, result in zip(images, out):
      matches = [
          key for key, crop in _crops(image, 4) if np.array_equal(crop, result)
      ]
      assert matches, 'output is no crop of the padded image'
      found.append(matches[0])
  tops, lefts, flips = zip(*found)
  # 96 draws cover most of the 9 offsets each way; flips about half.
  assert len(set(tops)) >= 7 and len(set(lefts)) >= 7
  assert (30 <= sum(flips) <= 66) if flip else not any(flips)


@pytest.mark.parametrize('name', augment.TRAIN_TRANSFORMS)
def test_entry_shape_dtype_determinism(name):
  augmentation = augment.make_train_augmentation(name, crop_padding=4)
  out = _run(augmentation.images)
  assert out.shape == (BATCH, 32, 32, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(_run(augmentation.images), out)
  assert augmentation.cutout_size == (16 if name.endswith('cutout') else 0)
  if name != 'none':
    assert not np.array_equal(_run(augmentation.images, (4, 2)), out)
    # Every image gets its own draw: the same image in every row comes out
    # in several different ways (the policy alone blanks some to one grey).
    same = np.repeat(_images(1), BATCH, 0)
    assert (
        len({o.tobytes() for o in _run(augmentation.images, images=same)}) >= 3
    )


def test_transforms_in_tf_data_match_eager():
  transform = augment.make_train_augmentation(
      'autoaugment_cutout', autoaugment_policy='svhn'
  ).images
  seeds = np.array([[0, 1], [0, 2]], np.int64)
  dataset = tf.data.Dataset.from_tensor_slices(seeds).map(
      lambda s: transform(tf.constant(_images()), s)
  )
  for seed, out in zip(seeds, dataset.as_numpy_iterator()):
    np.testing.assert_array_equal(out, _run(transform, seed))


def test_the_policy_comes_before_flip_and_crop():
  # The official order: AutoAugment on the image, then flip and crop. A
  # policy that paints the whole image one grey proves the order: after a
  # crop of a uniform image it is still uniform; a flip or crop after a
  # border-dependent policy would move the border.
  paint = lambda image, seed: tf.fill(tf.shape(image), tf.constant(7, tf.uint8))
  marked = lambda image, seed: tf.tensor_scatter_nd_update(
      image, [[0, 0]], tf.constant([[255, 0, 0]], tf.uint8)
  )
  crop = lambda x, s: augment.flip_and_crop(x, s, 4)
  out = _run(lambda x, s: augment.policy_then(paint, crop, x, s))
  assert (out == 7).all()
  # A mark the policy puts in the corner is moved by the crop after it.
  moved = _run(lambda x, s: augment.policy_then(marked, crop, x, s))
  assert not all((o[0, 0] == [255, 0, 0]).all() for o in moved)


def test_aa_only_has_no_flip_or_crop():
  identity_policy = lambda image, seed: image
  out = _run(lambda x, s: augment.policy_then(identity_policy, None, x, s))
  np.testing.assert_array_equal(out, _images())


def test_svhn_aa_only_cutout_uses_the_svhn_policy():
  svhn = augment.make_train_augmentation(
      'aa_only_cutout', autoaugment_policy='svhn'
  )
  cifar = augment.make_train_augmentation('aa_only_cutout')
  assert svhn.cutout_size == 16
  assert not np.array_equal(_run(svhn.images), _run(cifar.images))


def test_per_image_gives_each_image_its_own_seed():
  seeds = augment.per_image(
      lambda image, seed: tf.fill(
          tf.shape(image), tf.cast(seed[0] % 251, tf.uint8)
      )
  )
  out = _run(seeds)
  assert len({int(o[0, 0, 0]) for o in out}) == BATCH


def test_bad_options():
  with pytest.raises(ValueError, match='unknown augment'):
    augment.make_train_augmentation('autoaugment_svhn')
  with pytest.raises(ValueError, match='autoaugment_policy'):
    augment.make_train_augmentation('autoaugment', autoaugment_policy='mnist')
  with pytest.raises(ValueError, match='magnitude'):
    augment.make_train_augmentation('randaugment', randaugment_magnitude=20)


@pytest.mark.parametrize('name', ['aa_only', 'aa_only_cutout'])
def test_aa_only_names_apply_the_policy_without_flip_or_crop(monkeypatch, name):
  # The official SVHN setting: the policy alone. With an identity policy the
  # images come out as they went in, where 'autoaugment' crops them.
  monkeypatch.setattr(
      augment.autoaugment,
      'make_autoaugment',
      lambda policy: lambda image, seed: image,
  )
  aa_only = augment.make_train_augmentation(name, autoaugment_policy='svhn')
  np.testing.assert_array_equal(_run(aa_only.images), _images())
  cropped = augment.make_train_augmentation('autoaugment')
  assert not np.array_equal(_run(cropped.images), _images())
