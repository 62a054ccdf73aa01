"""Tests for the svhn_cropped, fashion_mnist and folder sources."""

import os

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from data import sources


def test_svhn_source_loads_mock_data():
  with tfds.testing.mock_data(num_examples=6):
    source = sources.create_source('svhn_cropped')
    images, labels = source.load('train')
  assert source.num_classes == 10 and len(source.mean) == 3
  assert images.shape == (6, 32, 32, 3) and images.dtype == np.uint8
  assert labels.dtype == np.int32 and labels.max() < 10


def test_svhn_extra_reads_train_plus_extra(monkeypatch):
  # mock_data ignores split arithmetic, so record the split names instead.
  requested = []
  monkeypatch.setattr(
      sources,
      'load_tfds_split',
      lambda name, split, data_dir: requested.append((name, split)),
  )
  with_extra = sources.create_source('svhn_cropped', svhn_extra=True)
  without = sources.create_source('svhn_cropped')
  with_extra.load('train')
  with_extra.load('test')
  without.load('train')
  # The official holdout: extra joins the training part, never validation.
  assert with_extra.holdout == without.holdout
  for source in (with_extra, without):
    for split in source.holdout:
      source.load(split)
  assert requested == [
      ('svhn_cropped', 'train+extra'),
      ('svhn_cropped', 'test'),
      ('svhn_cropped', 'train'),
      ('svhn_cropped', 'train[:65929]+extra'),
      ('svhn_cropped', 'train[65929:]'),
      ('svhn_cropped', 'train[:65929]'),
      ('svhn_cropped', 'train[65929:]'),
  ]
  # CIFAR keeps its documented departure, a seed-0 random 10%.
  assert sources.create_source('cifar10').holdout is None


def test_fashion_mnist_stays_28x28_with_the_official_statistics():
  # The official code: image_size 28, one channel, MNIST's mean and std.
  with tfds.testing.mock_data(num_examples=5):
    source = sources.create_source('fashion_mnist')
    images, labels = source.load('train')
    raw = next(
        iter(
            tfds.as_numpy(
                tfds.load('fashion_mnist', split='train', batch_size=5)
            )
        )
    )['image']
  assert images.shape == (5, 28, 28, 1) and images.dtype == np.uint8
  assert labels.shape == (5,)
  np.testing.assert_array_equal(images, raw)
  np.testing.assert_allclose(source.mean, [0.1307 * 255], rtol=1e-6)
  np.testing.assert_allclose(source.std, [0.3081 * 255], rtol=1e-6)


@pytest.mark.parametrize(
    'name,mean,std',
    [
        (
            'cifar10',
            (0.49139968, 0.48215841, 0.44653091),
            (0.24703223, 0.24348513, 0.26158784),
        ),
        (
            'cifar100',
            (0.50707516, 0.48654887, 0.44091784),
            (0.26733429, 0.25643846, 0.27615047),
        ),
        (
            'svhn_cropped',
            (0.43090966, 0.4302428, 0.44634357),
            (0.19759192, 0.20029082, 0.19811132),
        ),
    ],
)
def test_statistics_are_the_official_codes(name, mean, std):
  source = sources.create_source(name)
  np.testing.assert_allclose(np.array(source.mean) / 255, mean, rtol=1e-7)
  np.testing.assert_allclose(np.array(source.std) / 255, std, rtol=1e-7)


def _write_folder(root, split, counts, size=(6, 5), fmt='png'):
  rng = np.random.default_rng(len(split))
  for label, count in counts.items():
    os.makedirs(os.path.join(root, split, label), exist_ok=True)
    for i in range(count):
      pixels = rng.integers(0, 256, size[::-1] + (3,), dtype=np.uint8)
      Image.fromarray(pixels).save(
          os.path.join(root, split, label, f'{i}.{fmt}')
      )


def test_folder_source_reads_labels_from_train_folders(tmp_path):
  root = str(tmp_path)
  _write_folder(root, 'train', {'cat': 3, 'dog': 2, 'emu': 1})
  _write_folder(root, 'test', {'dog': 2, 'emu': 1}, fmt='jpg')
  source = sources.create_source('folder', root)
  images, labels = source.load('train')
  assert source.num_classes == 3
  assert images.shape == (6, 5, 6, 3) and images.dtype == np.uint8
  np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 2])
  pixels = images.reshape(-1, 3).astype(np.float64)
  np.testing.assert_allclose(source.mean, pixels.mean(0), atol=0.01)
  np.testing.assert_allclose(source.std, pixels.std(0), atol=0.01)
  test_images, test_labels = source.load('test')
  # 'dog' is class 1 of train's sorted folders even though test lacks 'cat'.
  np.testing.assert_array_equal(test_labels, [1, 1, 2])
  assert test_images.shape == (3, 5, 6, 3)


def test_folder_source_errors(tmp_path):
  with pytest.raises(ValueError, match='data_dir'):
    sources.create_source('folder', None)
  with pytest.raises(ValueError, match='train/<label>'):
    sources.create_source('folder', str(tmp_path))
  _write_folder(str(tmp_path), 'train', {'a': 1})
  _write_folder(str(tmp_path), 'train', {'b': 1}, size=(7, 7))
  with pytest.raises(ValueError, match='one size, or set config.image_size'):
    sources.create_source('folder', str(tmp_path))
  resized = sources.create_source('folder', str(tmp_path), image_size=4)
  images, labels = resized.load('train')
  assert images.shape == (2, 4, 4, 3) and list(labels) == [0, 1]
  with pytest.raises(ValueError, match='svhn_extra'):
    sources.create_source('cifar10', svhn_extra=True)
