"""Tests for data/streaming.py on a small tfds dataset prepared on disk.

tfds's mock_data has no split sizes and ignores slicing, so the tests build a
real one: JPEG pictures of varying size whose green channel is a uniform
code of the record's index (any crop or flip keeps it) and whose red
channel is a ramp (so crops and flips change the pixels).
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import base
from data import sources
from data import streaming
from data import tfdata
from sam.run import checks
from sam.run import experiment

NUM_TRAIN, NUM_TEST, NUM_CLASSES = 40, 13, 3
GREEN_STEP = 4  # Green = GREEN_STEP * index; indices 0..52 fit in 0..255.


class TinyPictures(tfds.core.GeneratorBasedBuilder):
  """Pictures of 20-40 pixels a side; test indices follow the train ones."""

  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(
            {
                'image': tfds.features.Image(
                    shape=(None, None, 3), encoding_format='jpeg'
                ),
                'label': tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            }
        )
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {
        'train': self._generate_examples(0, NUM_TRAIN),
        'test': self._generate_examples(NUM_TRAIN, NUM_TRAIN + NUM_TEST),
    }

  def _generate_examples(self, first, end):
    rng = np.random.default_rng(first)
    for index in range(first, end):
      height, width = rng.integers(20, 41, 2)
      image = np.zeros((height, width, 3), np.uint8)
      image[..., 0] = np.linspace(0, 255, width).astype(np.uint8)
      image[..., 1] = GREEN_STEP * index
      image[..., 2] = 100
      yield index, {'image': image, 'label': index % NUM_CLASSES}


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('tfds'))
  TinyPictures(data_dir=path).download_and_prepare()
  return path


def make_config(data_dir, **fields):
  """A run config on TinyPictures; `fields` are data fields or
  'section.field' paths."""
  c = base.base_config()
  c.data.dataset = 'tiny_pictures'
  c.data.data_dir = data_dir
  c.data.image_size = 12
  c.optim.batch_size = 8
  c.eval.batch_size = 8
  c.data.input_mean = (0.0, 0.0, 0.0)
  c.data.input_std = (1.0, 1.0, 1.0)
  for field, value in fields.items():
    section, _, leaf = field.rpartition('.')
    c[section or 'data'][leaf] = value
  return c


def open_streamed(config, process_index=0, process_count=1, devices=2):
  checks.validate(config, devices * process_count)
  return streaming.create_streamed_datasets(
      config.data,
      batch_size=config.optim.batch_size,
      eval_batch_size=config.eval.batch_size,
      seed=config.seed,
      process_index=process_index,
      process_count=process_count,
      local_device_count=devices,
  )


def indices(images):
  """The record index coded in each image's green channel."""
  green = images[..., 1].reshape(-1, np.prod(images.shape[-3:-1]))
  return np.rint(green.mean(-1) / GREEN_STEP).astype(int)


def flat(batch):
  return {k: v.reshape((-1,) + v.shape[2:]) for k, v in batch.items()}


def train_indices(datasets, start, end):
  return [indices(flat(b)['image']) for b in datasets.train_batches(start, end)]


def test_every_epoch_covers_the_training_records_once(data_dir):
  datasets = open_streamed(make_config(data_dir))
  assert datasets.steps_per_epoch == NUM_TRAIN // 8
  batches = list(datasets.train_batches(0, 2 * datasets.steps_per_epoch))
  for batch in batches:
    assert batch['image'].shape == (2, 4, 12, 12, 3)
    assert batch['image'].dtype == np.float32
    found = flat(batch)
    np.testing.assert_array_equal(
        found['label'], indices(found['image']) % NUM_CLASSES
    )
  epochs = np.concatenate([indices(flat(b)['image']) for b in batches])
  epochs = epochs.reshape(2, NUM_TRAIN)
  for epoch in epochs:
    assert sorted(epoch) == list(range(NUM_TRAIN))
  assert list(epochs[0]) != list(epochs[1])  # A new order every epoch.


def test_no_iterator_has_tf_data_autotuning(data_dir, iterated_dataset_options):
  # Each epoch is an iterator, destroyed at the epoch's end.
  iterated = iterated_dataset_options
  datasets = open_streamed(make_config(data_dir))
  steps = datasets.steps_per_epoch
  assert len(list(datasets.train_batches(steps - 1, 2 * steps + 1))) == 7
  assert len(list(datasets.eval_batches('test'))) == 2
  assert len(iterated) == 4  # Epochs 0, 1 and 2, then the test split.
  assert all(options.autotune.enabled is False for options in iterated)


def test_a_host_with_many_cores_streams_the_same_batches(data_dir, monkeypatch):
  # The parallelism follows the cores; tfds's file interleave refuses more
  # parallel calls than its cycle length, so a count of ours must not reach
  # it.
  config = make_config(data_dir)
  two_cores = list(open_streamed(config).train_batches(3, 7))
  monkeypatch.setattr(tfdata, 'cores', lambda: 64)
  assert tfdata.batch_parallel_calls() == tfdata.MAX_PARALLEL_BATCHES
  datasets = open_streamed(config)
  for a, b in zip(two_cores, datasets.train_batches(3, 7), strict=True):
    np.testing.assert_array_equal(a['image'], b['image'])
  assert len(list(datasets.eval_batches('test'))) == 2


def test_same_seed_same_batches_and_resume_continues_exactly(data_dir):
  config = make_config(data_dir)
  whole = list(open_streamed(config).train_batches(0, 12))
  again = list(open_streamed(config).train_batches(0, 12))
  resumed = list(open_streamed(config).train_batches(7, 12))
  for a, b in zip(whole, again):
    np.testing.assert_array_equal(a['image'], b['image'])
  for a, b in zip(whole[7:], resumed, strict=True):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  config.seed = 1
  other = train_indices(open_streamed(config), 0, 5)
  assert [list(i) for i in other] != [
      indices(flat(b)['image']).tolist() for b in whole[:5]
  ]


def test_augmentation_crops_and_flips_but_none_is_the_eval_crop(data_dir):
  basic = flat(next(open_streamed(make_config(data_dir)).train_batches(0, 1)))
  # The red ramp differs between random crops of pictures of similar size.
  ramps = {
      tuple(np.rint(image[0, :, 0]).astype(int)) for image in basic['image']
  }
  assert len(ramps) > 4
  datasets = open_streamed(make_config(data_dir, augment='none'))
  plain = flat(next(datasets.train_batches(0, 1)))
  for image in plain['image']:
    # A left-to-right ramp: never flipped.
    assert image[0, 0, 0] < image[0, -1, 0]
  # Training without augmentation sees what evaluation sees.
  datasets.eval_splits['train'] = datasets.train_split
  datasets.eval_sizes['train'] = NUM_TRAIN
  evaluated = {
      int(i): image
      for batch in datasets.eval_batches('train')
      for i, image in zip(indices(flat(batch)['image']), flat(batch)['image'])
  }
  for i, image in zip(indices(plain['image']), plain['image']):
    np.testing.assert_array_equal(image, evaluated[i])


def test_hosts_take_disjoint_shares_of_every_step(data_dir):
  config = make_config(data_dir)
  hosts = [open_streamed(config, p, 2, devices=1) for p in range(2)]
  assert hosts[0].steps_per_epoch == hosts[1].steps_per_epoch == 5
  shares = [np.concatenate(train_indices(h, 0, 5)) for h in hosts]
  assert len(shares[0]) == len(shares[1]) == 20
  assert sorted(np.concatenate(shares)) == list(range(NUM_TRAIN))


@pytest.mark.parametrize('process_count', [1, 2])
def test_eval_covers_the_test_split_once_padded_and_masked(
    data_dir, process_count
):
  config = make_config(data_dir)
  found, num_batches = [], set()
  for p in range(process_count):
    datasets = open_streamed(
        config, p, process_count, devices=2 // process_count
    )
    batches = [flat(b) for b in datasets.eval_batches('test')]
    num_batches.add(len(batches))
    for batch in batches:
      assert batch['image'].shape == (8 // process_count, 12, 12, 3)
      real = batch['mask'] == 1.0
      assert np.all(batch['image'][~real] == 0)
      found.extend(indices(batch['image'][real]))
      np.testing.assert_array_equal(
          batch['label'][real], indices(batch['image'][real]) % NUM_CLASSES
      )
  assert num_batches == {2}  # ceil(13 / 8) on every host.
  assert sorted(found) == list(range(NUM_TRAIN, NUM_TRAIN + NUM_TEST))


def test_validation_holdout_is_apart_from_training(data_dir):
  config = make_config(data_dir, validation_split=True, validation_fraction=0.2)
  datasets = open_streamed(config)
  assert datasets.num_train_examples == 32 and datasets.steps_per_epoch == 4
  train = set(np.concatenate(train_indices(datasets, 0, 4)).tolist())
  validation = {
      int(i)
      for b in datasets.eval_batches('validation')
      for i, m in zip(indices(flat(b)['image']), flat(b)['mask'])
      if m
  }
  assert len(train) == 32 and len(validation) == 8
  assert train | validation == set(range(NUM_TRAIN))


def test_split_slice_spans_joined_splits():
  parts = [('train', 10), ('validation', 5)]
  assert streaming.split_slice(parts, 0, 10) == 'train[0:10]'
  assert streaming.split_slice(parts, 8, 12) == ('train[8:10]+validation[0:2]')
  assert streaming.split_slice(parts, 11, 15) == 'validation[1:5]'


def test_unprepared_dataset_fails_at_once_with_the_build_command(tmp_path):
  config = make_config(str(tmp_path), dataset='imagenet2012', image_size=224)
  with pytest.raises(
      sources.DatasetNotPreparedError,
      match='tfds build imagenet2012 --data_dir=DIR',
  ):
    open_streamed(config)


@pytest.mark.parametrize(
    'fields, message',
    [
        (
            {'image_size': 0},
            'config.data.image_size = 0: must be > 0 for the streamed',
        ),
        (
            {'augment': 'cutout'},
            "config.data.augment = 'cutout': valid: "
            "['autoaugment', 'basic', 'none', 'randaugment']",
        ),
        (
            {'label_noise': 0.2},
            'config.data.label_noise = 0.2: needs a dataset held',
        ),
        (
            {'dataset': 'digits', 'streaming': True},
            "config.data.streaming = True: dataset 'digits' is held in memory only",
        ),
        (
            {'dataset': 'no_such_set'},
            "config.data.dataset = 'no_such_set': valid: in memory [",
        ),
    ],
)
def test_bad_streamed_configs_fail_with_one_line(
    data_dir, tmp_path, fields, message
):
  with pytest.raises(checks.ConfigError) as error:
    experiment.train_and_evaluate(
        make_config(data_dir, **fields), str(tmp_path / 'run')
    )
  assert message in str(error.value) and '\n' not in str(error.value)
  assert not (tmp_path / 'run').exists()


def test_training_runs_end_to_end_on_a_streamed_dataset(data_dir, tmp_path):
  config = make_config(
      data_dir,
      **{
          'model.name': 'wrn_mini',
          'optim.num_epochs': 1,
          'eval.batch_size': 16,
          'run.log_every_steps': 5,
      },
  )
  summary = experiment.train_and_evaluate(config, str(tmp_path))
  assert summary['finished'] and summary['num_steps'] == 5
  # Every one of the 13 test records is scored: errors are multiples of 1/13.
  wrong = summary['final']['test_error'] * NUM_TEST
  assert abs(wrong - round(wrong)) < 1e-4


def test_a_dataset_prepared_elsewhere_streams_without_its_builder(data_dir):
  # How fgvc_aircraft and birdsnap, not in the tfds catalogue, are read: in
  # a fresh process the TinyPictures builder class is unknown.
  code = (
      'from configs import base; from data import streaming; '
      'c = base.base_config().data; c.dataset = "tiny_pictures"; '
      f'c.data_dir = {data_dir!r}; c.image_size = 8; '
      'd = streaming.create_streamed_datasets(c, batch_size=8, '
      'eval_batch_size=8, seed=0); '
      'print(d.num_classes, d.num_train_examples, d.eval_sizes)'
  )
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run(
      [sys.executable, '-c', code],
      capture_output=True,
      text=True,
      check=True,
      cwd=root,
      env={**os.environ, 'PYTHONPATH': root},
  ).stdout
  assert out.split('\n')[-2] == f"3 {NUM_TRAIN} {{'test': {NUM_TEST}}}"
