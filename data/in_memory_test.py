"""The input pipeline on tfds mock CIFAR data and on the digits source."""

import collections
import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import base
from data import catalog
from data import datasets as datasets_lib
from data import in_memory
from data import sharding
from data import sources

NUM_EXAMPLES = 50


def make_config(**overrides):
  """A data section of mock CIFAR-10 (batches 8 and 12, set in `create`)."""
  c = base.base_config().data
  c.dataset = 'cifar10'
  c.augment = 'none'
  c.update(overrides)
  return c


# Runs before the module-scoped mock below is set up (it stays active until
# the module ends).
def test_missing_tfds_dataset_says_how_to_prepare_it(tmp_path):
  with pytest.raises(
      sources.DatasetNotPreparedError, match='tfds build cifar10 --data_dir'
  ):
    sources.load_tfds_split('cifar10', 'train', str(tmp_path))


@pytest.fixture(scope='module')
def mock_cifar():
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    yield


def create(config, process_index=0, process_count=1, devices=2, seed=0):
  return datasets_lib.create_datasets(
      config,
      batch_size=8,
      eval_batch_size=12,
      seed=seed,
      process_index=process_index,
      process_count=process_count,
      local_device_count=devices,
  )


def denormalize(datasets, images):
  return np.rint(images * np.array(datasets.std) + np.array(datasets.mean))


def as_keys(images):
  return collections.Counter(x.astype(np.uint8).tobytes() for x in images)


def test_train_batches_are_device_shaped_and_normalised(mock_cifar):
  datasets = create(make_config())
  batch = next(datasets.train_batches(0, 1))
  assert batch['image'].shape == (2, 4, 32, 32, 3)
  assert batch['image'].dtype == np.float32
  assert batch['label'].shape == (2, 4) and batch['label'].dtype == np.int32
  raw = denormalize(datasets, batch['image'].reshape(8, 32, 32, 3))
  np.testing.assert_allclose(
      (raw - np.array(datasets.mean)) / np.array(datasets.std),
      batch['image'].reshape(8, 32, 32, 3),
      atol=1e-5,
  )
  assert raw.min() >= 0 and raw.max() <= 255


def test_one_epoch_visits_each_training_example_at_most_once(mock_cifar):
  datasets = create(make_config())
  steps = datasets.steps_per_epoch
  assert steps == NUM_EXAMPLES // 8
  images = np.concatenate(
      [
          b['image'].reshape(-1, 32, 32, 3)
          for b in datasets.train_batches(0, steps)
      ]
  )
  seen = as_keys(denormalize(datasets, images))
  available = as_keys(datasets.train_images)
  assert sum(seen.values()) == steps * 8
  assert all(count <= available[key] for key, count in seen.items())


def test_training_iterator_has_no_tf_data_autotuning(
    mock_cifar, iterated_dataset_options
):
  iterated = iterated_dataset_options
  assert len(list(create(make_config()).train_batches(0, 3))) == 3
  assert len(iterated) == 1
  assert iterated[0].autotune.enabled is False


def test_a_resumed_stream_continues_the_exact_sequence(mock_cifar):
  datasets = create(make_config(augment='basic'))
  full = [b['image'] for b in datasets.train_batches(0, 9)]
  resumed = [b['image'] for b in datasets.train_batches(5, 9)]
  for a, b in zip(full[5:], resumed):
    np.testing.assert_array_equal(a, b)
  # Epochs are shuffled differently (steps 0 and 6 start epochs 0 and 1).
  assert not np.array_equal(full[0], full[6])
  other_seed = create(make_config(augment='basic'), seed=1)
  assert not np.array_equal(
      full[0], next(other_seed.train_batches(0, 1))['image']
  )


@pytest.mark.parametrize('augment', ['none', 'basic', 'autoaugment_cutout'])
def test_hosts_take_disjoint_slices_of_each_global_batch(mock_cifar, augment):
  # Augmented too: each host draws for the whole global batch and takes its
  # rows, and one cutout patch serves the global batch, so two hosts give
  # exactly the batch of one.
  one_host = create(make_config(augment=augment), devices=2)
  hosts = [
      create(
          make_config(augment=augment),
          process_index=i,
          process_count=2,
          devices=1,
      )
      for i in range(2)
  ]
  whole = next(one_host.train_batches(3, 4))['image'].reshape(8, -1)
  parts = [next(h.train_batches(3, 4))['image'].reshape(4, -1) for h in hosts]
  np.testing.assert_array_equal(whole, np.concatenate(parts))


def test_validation_holdout_is_ten_percent_and_disjoint(mock_cifar):
  datasets = create(make_config(validation_split=True))
  val_images, _ = datasets.eval_splits['validation']
  assert len(val_images) == NUM_EXAMPLES // 10
  assert len(datasets.train_labels) == NUM_EXAMPLES - NUM_EXAMPLES // 10
  train_rows, val_rows = in_memory.holdout_split(1000, 0.1)
  assert len(val_rows) == 100 and len(train_rows) == 900
  assert not set(train_rows) & set(val_rows)
  assert set(train_rows) | set(val_rows) == set(range(1000))


# svhn_cropped's split sizes; a fake example's label is its id, the offset
# of its split plus its position there in tfds's record order.
SVHN_SIZES = {'train': 73_257, 'extra': 531_131, 'test': 26_032}
SVHN_OFFSETS = {'train': 0, 'extra': 1_000_000, 'test': 2_000_000}


def fake_svhn_split(name, split, data_dir):
  """load_tfds_split on fake SVHN, slicing splits as tfds does."""
  del data_dir
  assert name == 'svhn_cropped'
  ids = []
  for part in split.split('+'):
    match = re.fullmatch(r'(\w+)(?:\[(\d*):(\d*)\])?', part)
    split_name, start, stop = match.groups()
    rows = np.arange(SVHN_SIZES[split_name])
    rows = rows[int(start) if start else None : int(stop) if stop else None]
    ids.append(SVHN_OFFSETS[split_name] + rows)
  labels = np.concatenate(ids).astype(np.int32)
  return np.zeros((len(labels), 2, 2, 3), np.uint8), labels


@pytest.mark.parametrize('extra', [True, False])
def test_svhn_holds_out_the_last_7328_of_train_as_the_official(
    monkeypatch, extra
):
  # sam_jax/datasets/dataset_source.py: train on train[:65929] (+ extra),
  # validate on train[65929:], whatever the fraction would draw at random.
  monkeypatch.setattr(sources, 'load_tfds_split', fake_svhn_split)
  config = make_config(
      dataset='svhn_cropped', svhn_extra=extra, validation_split=True
  )
  datasets = create(config)
  _, validation = datasets.eval_splits['validation']
  np.testing.assert_array_equal(validation, np.arange(65_929, 73_257))
  extra_ids = SVHN_OFFSETS['extra'] + np.arange(SVHN_SIZES['extra'])
  np.testing.assert_array_equal(
      datasets.train_labels,
      np.concatenate([np.arange(65_929), extra_ids if extra else []]),
  )
  assert datasets.num_train_examples == 65_929 + extra * 531_131
  _, test = datasets.eval_splits['test']
  assert len(test) == SVHN_SIZES['test']
  # Without the holdout: all of train (+ extra), the paper's 604,388.
  whole = create(make_config(dataset='svhn_cropped', svhn_extra=extra))
  assert whole.num_train_examples == 73_257 + extra * 531_131
  assert list(whole.eval_splits) == ['test']
  # The official holdout is 10%; another fraction is a clear error.
  config.validation_fraction = 0.2
  with pytest.raises(ValueError, match='fixed validation split'):
    create(config)


@pytest.mark.parametrize('process_count', [1, 2])
def test_eval_sees_every_example_exactly_once(mock_cifar, process_count):
  config = make_config()
  seen_images, seen_labels = [], []
  for index in range(process_count):
    datasets = create(config, index, process_count, devices=2)
    for batch in datasets.eval_batches('test'):
      assert batch['image'].shape[:2] == (2, 12 // process_count // 2)
      mask = batch['mask'].reshape(-1).astype(bool)
      seen_images.append(batch['image'].reshape(-1, 32, 32, 3)[mask])
      seen_labels.append(batch['label'].reshape(-1)[mask])
  images, labels = datasets.examples('test')
  # 50 examples in batches of 12: 5 batches, the last padded with 10.
  assert sum(len(x) for x in seen_labels) == NUM_EXAMPLES
  assert as_keys(denormalize(datasets, np.concatenate(seen_images))) == (
      as_keys(images)
  )
  assert sorted(np.concatenate(seen_labels)) == sorted(labels)


def test_digits_fixed_split():
  train_images, train_labels = sources.load_digits_split('train')
  test_images, test_labels = sources.load_digits_split('test')
  assert train_images.shape == (1500, 8, 8, 1)
  assert test_images.shape == (297, 8, 8, 1)
  assert train_images.dtype == np.uint8 and train_images.max() == 240
  assert set(train_labels) == set(range(10)) == set(test_labels)
  # The documented normalisation statistics are those of the train split.
  source = sources.create_source('digits')
  np.testing.assert_allclose(train_images.mean(), source.mean[0], atol=0.05)
  np.testing.assert_allclose(train_images.std(), source.std[0], atol=0.05)


def test_unknown_dataset_lists_the_valid_ones():
  with pytest.raises(ValueError, match="unknown dataset 'cifar11'.*cifar10"):
    sources.create_source('cifar11')


def test_catalog_names_every_in_memory_source():
  assert set(catalog.IN_MEMORY) == set(sources.SOURCES)
  for stats in catalog.IN_MEMORY.values():
    if stats is not None:
      assert len(stats.mean) == len(stats.std)


@pytest.mark.parametrize(
    'n,batch,hosts',
    [(50, 12, 1), (50, 12, 2), (7, 4, 2), (10, 3, 3), (1, 4, 2)],
)
def test_eval_shares_cover_every_example_once(n, batch, hosts):
  shares = [sharding.eval_share(n, batch, i, hosts) for i in range(hosts)]
  assert len({s.num_batches for s in shares}) == 1  # Same steps per host.
  seen = []
  for share in shares:
    rows, mask = share.positions()
    assert rows.shape == (share.num_batches, batch // hosts)
    seen += rows[mask.astype(bool)].tolist()
  assert sorted(seen) == list(range(n))


def test_cutout_zeroes_one_square_of_the_whole_normalised_batch(mock_cifar):
  # The same (seed, step) draws the same flips and crops with or without
  # cutout, so the two batches differ exactly on the patch.
  basic = next(create(make_config(augment='basic')).train_batches(2, 3))
  cut = next(create(make_config(augment='cutout')).train_batches(2, 3))
  basic, cut = (b['image'].reshape(8, 32, 32, 3) for b in (basic, cut))
  zero = np.all(cut == 0, axis=-1)
  patch = zero[0]
  # One mask for the whole batch (the official README's point).
  assert all(np.array_equal(z, patch) for z in zero)
  rows, cols = np.nonzero(patch)
  height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
  assert patch.sum() == height * width and 8 <= min(height, width)
  assert max(height, width) <= 16
  # Filled with 0 after normalisation (the mean), everything else untouched.
  np.testing.assert_array_equal(cut[:, ~patch], basic[:, ~patch])
  assert not np.any(basic[:, patch] == 0)


def test_image_size_augments_at_32_then_resizes_the_whole_image(mock_cifar):
  """Finetuning on CIFAR (C.2): the augmentation runs at 32 px and the
  normalised batch is resized bicubically; evaluation resizes too."""
  small = create(make_config(augment='basic'))
  large = create(make_config(augment='basic', image_size=64))
  assert large.image_shape == (64, 64, 3)
  for batches in (
      lambda d: d.train_batches(1, 2),
      lambda d: d.eval_batches('test'),
  ):
    at_32 = next(batches(small))['image']
    at_64 = next(batches(large))['image']
    expected = tf.compat.v1.image.resize_bicubic(
        at_32.reshape(-1, 32, 32, 3), [64, 64]
    )
    np.testing.assert_allclose(
        at_64.reshape(-1, 64, 64, 3), expected.numpy(), atol=1e-5
    )


def test_validation_holdout_is_a_fixed_random_ten_percent():
  # Not the official last 10% (train[45000:] on CIFAR): the first 10% of a
  # numpy seed-0 permutation, the same for every run seed, spread over the
  # whole split (a source whose order is not shuffled stays a uniform sample).
  train_rows, val_rows = in_memory.holdout_split(50_000, 0.1)
  expected = np.sort(np.random.default_rng(0).permutation(50_000)[:5_000])
  np.testing.assert_array_equal(val_rows, expected)
  np.testing.assert_array_equal(
      train_rows, np.setdiff1d(np.arange(50_000), expected)
  )
  # About 500 in each tenth of the split (binomial std about 21).
  per_tenth = np.bincount(val_rows // 5_000, minlength=10)
  assert per_tenth.min() > 400 and per_tenth.max() < 600
