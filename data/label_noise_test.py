"""Tests for data/label_noise.py."""

import numpy as np
import pytest

from data import label_noise


def _labels(n=10_000, k=10, seed=1):
  return np.random.default_rng(seed).integers(0, k, size=n).astype(np.int32)


@pytest.mark.parametrize('fraction', [0.2, 0.4, 0.6, 0.8])
def test_different_mode_flips_exact_count_never_to_same_class(fraction):
  labels = _labels()
  noisy, changed = label_noise.corrupt_labels(
      labels, 10, fraction, seed=0, mode='different'
  )
  assert noisy.dtype == np.int32 and noisy.shape == labels.shape
  assert changed.sum() == round(fraction * labels.size)
  np.testing.assert_array_equal(changed, noisy != labels)
  assert noisy.min() >= 0 and noisy.max() < 10


def test_different_mode_per_class_roughly_uniform():
  labels = _labels(n=20_000)
  noisy, changed = label_noise.corrupt_labels(
      labels, 10, 0.4, seed=3, mode='different'
  )
  stats = label_noise.noise_statistics(labels, noisy, 10)
  # Each class keeps ~40% corrupted (binomial std ~1.1% for ~2000 examples).
  np.testing.assert_allclose(
      stats['per_class_flipped_fraction'], 0.4, atol=0.05
  )
  np.testing.assert_allclose(stats['per_class_noisy_share'], 0.1, atol=0.02)
  # The new label of class c is uniform over the 9 other classes.
  from_zero = noisy[changed & (labels == 0)]
  counts = np.bincount(from_zero, minlength=10)
  assert counts[0] == 0
  np.testing.assert_allclose(counts[1:] / counts.sum(), 1 / 9, atol=0.04)


def test_uniform_mode_is_the_default_and_keeps_about_one_in_k():
  labels = _labels(n=20_000)
  default = label_noise.corrupt_labels(labels, 10, 0.5, seed=0)
  noisy, changed = label_noise.corrupt_labels(
      labels, 10, 0.5, seed=0, mode='uniform'
  )
  np.testing.assert_array_equal(default[0], noisy)
  # About 10,000 labels are redrawn and 1/10 of those keep their class:
  # 9,000 change (binomial std ~67).
  assert abs(changed.sum() - 9_000) < 300
  np.testing.assert_array_equal(changed, noisy != labels)


def test_uniform_mode_redraws_over_all_classes():
  labels = _labels(n=50_000)
  noisy, _ = label_noise.corrupt_labels(labels, 10, 0.4, seed=2)
  # A class-0 label stays 0 with probability (1 - r) + r / K = 0.64 and
  # lands on each other class with probability r / K = 0.04.
  landed = np.bincount(noisy[labels == 0], minlength=10) / (labels == 0).sum()
  np.testing.assert_allclose(landed[0], 0.64, atol=0.02)
  np.testing.assert_allclose(landed[1:], 0.04, atol=0.01)


def test_uniform_mode_draws_each_example_independently():
  labels = _labels(n=7)
  counts = {
      int(label_noise.corrupt_labels(labels, 10, 0.3, seed=s)[1].sum())
      for s in range(50)
  }
  # Not a fixed count: per-example coin flips give several totals.
  assert len(counts) > 2


def test_deterministic_for_seed_and_differs_across_seeds():
  labels = _labels()
  a = label_noise.corrupt_labels(labels, 10, 0.3, seed=7)
  b = label_noise.corrupt_labels(labels, 10, 0.3, seed=7)
  c = label_noise.corrupt_labels(labels, 10, 0.3, seed=8)
  np.testing.assert_array_equal(a[0], b[0])
  assert (a[0] != c[0]).any()


def test_zero_fraction_is_identity_and_rounding():
  labels = _labels(n=7)
  noisy, changed = label_noise.corrupt_labels(labels, 10, 0.0, seed=0)
  np.testing.assert_array_equal(noisy, labels)
  assert not changed.any()
  # 'different': 0.3 * 7 = 2.1 examples round to 2.
  _, changed = label_noise.corrupt_labels(
      labels, 10, 0.3, seed=0, mode='different'
  )
  assert changed.sum() == 2


def test_does_not_modify_input():
  labels = _labels(n=100)
  original = labels.copy()
  label_noise.corrupt_labels(labels, 10, 0.5, seed=0)
  np.testing.assert_array_equal(labels, original)


@pytest.mark.parametrize(
    'kwargs, match',
    [
        (dict(fraction=1.0), 'fraction'),
        (dict(fraction=-0.1), 'fraction'),
        (dict(mode='flip'), 'mode'),
        (dict(num_classes=1), 'num_classes'),
        (dict(num_classes=3), 'labels must lie'),
    ],
)
def test_bad_input(kwargs, match):
  args = dict(labels=_labels(n=50), num_classes=10, fraction=0.2, seed=0)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    label_noise.corrupt_labels(**args)
