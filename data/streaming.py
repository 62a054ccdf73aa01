"""Streamed tfds datasets: ImageNet and the finetuning sets at model size.

ImageNet (1.28M JPEGs) and the Table 3 finetuning sets at a model's
resolution (600x600 for EfficientNet-B7) do not fit in host memory decoded,
so they are read from the prepared tfds files (config.data_dir, a local
folder or a gs:// bucket) every epoch: the image bytes are kept encoded
through the shuffle buffer (tfds `SkipDecoding`), and only the crop window of
each JPEG is decoded, in a parallel map, then batched, normalised and
prefetched. Any tfds image classification dataset can be streamed by name
(features 'image' and 'label'); `catalog.STREAMED` names the paper's, with
their splits.

Determinism and resume, as in the in-memory pipeline: epoch e reads this
host's share of the records in a file order and shuffle-buffer order drawn
from (seed, e); an example's augmentation seed is (seed, its position in the
run's sequence of global batches). A run resumed at step s rebuilds epoch
s // steps_per_epoch and skips the records of its steps already taken
(before decoding them), so it continues the exact sequence.

The 10% validation holdout is the last 10% of the training split's records
(tfds shuffles records once when it prepares a dataset, so they are a random
subset, fixed for every run of a rho sweep). Evaluation pads each host's
share to whole batches and masks the padding.
"""

import dataclasses
from typing import Callable, Iterator

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from data import autoaugment
from data import catalog
from data import imagenet_transforms
from data import in_memory
from data import sharding
from data import sources
from data import tfdata

DEFAULT_SHUFFLE_BUFFER = 20_000


def split_slice(parts: list[tuple[str, int]], begin: int, end: int) -> str:
  """The tfds split string for records [begin, end) of parts joined in order.

  Args:
    parts: (tfds split name, number of records) of each joined split.
    begin: first record.
    end: one past the last record.

  Returns:
    e.g. 'train[1000:1020]+validation[0:10]'.
  """
  pieces, offset = [], 0
  for name, count in parts:
    low, high = max(begin - offset, 0), min(end - offset, count)
    if low < high:
      pieces.append(f'{name}[{low}:{high}]')
    offset += count
  if not pieces:
    raise ValueError(f'no records in [{begin}, {end}) of {parts}')
  return '+'.join(pieces)


def _epoch_seed(seed: int, epoch: int) -> int:
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _features(example):
  return {
      'image': example['image'],
      'label': tf.cast(example['label'], tf.int32),
  }


def make_train_decoder(
    augment: str,
    size: int,
    policy: str,
    randaugment_layers: int,
    randaugment_magnitude: float,
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
  """fn(encoded image, seed int[2]) -> uint8 [size, size, 3] for training.

  Args:
    augment: a name of catalog.AUGMENTATIONS that applies to streamed data.
    size: output side.
    policy: the AutoAugment policy for 'autoaugment'.
    randaugment_layers: N for 'randaugment'.
    randaugment_magnitude: M for 'randaugment'.
  """
  if augment == 'none':
    return lambda encoded, seed: imagenet_transforms.decode_and_eval_transform(
        encoded, size
    )
  extra = None
  if augment == 'autoaugment':
    extra = autoaugment.make_autoaugment(policy)
  elif augment == 'randaugment':
    extra = autoaugment.make_randaugment(
        randaugment_layers, randaugment_magnitude
    )

  def decode(encoded, seed):
    crop_seed, extra_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 2)
    )
    image = imagenet_transforms.decode_and_train_transform(
        encoded, crop_seed, size
    )
    return extra(image, extra_seed) if extra else image

  return decode


@dataclasses.dataclass
class StreamedDatasets:
  """The splits of one run, read from tfds files as the run goes.

  A `data.datasets.Datasets`; `eval_splits` maps split names to tfds split
  strings, and there are no in-memory training arrays (analyses and label
  noise need a dataset held in memory).
  """

  builder: tfds.core.DatasetBuilder
  num_classes: int
  image_shape: tuple[int, int, int]
  num_train_examples: int
  train_split: str  # This host's records.
  eval_splits: dict[str, str]  # Name -> this host's records.
  eval_sizes: dict[str, int]  # Name -> records over all hosts.
  mean: tuple[float, ...]
  std: tuple[float, ...]
  global_batch_size: int
  eval_batch_size: int
  decode_train: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
  seed: int
  shuffle_buffer: int
  process_index: int = 0
  process_count: int = 1
  local_device_count: int = 1
  clean_train_labels: None = None

  @property
  def steps_per_epoch(self) -> int:
    # Every host takes the same number of steps; the hosts' shares differ
    # by at most one record, so the smallest share sets it.
    host_batch = self.global_batch_size // self.process_count
    return self.num_train_examples // self.process_count // host_batch

  @property
  def eval_split_names(self) -> tuple[str, ...]:
    return tuple(self.eval_splits)

  def examples(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    raise self._not_in_memory(f'split {split!r}')

  def model_inputs(self, images: np.ndarray) -> np.ndarray:
    raise self._not_in_memory('model inputs')

  def _not_in_memory(self, what: str) -> ValueError:
    return ValueError(
        f'the analyses take a dataset held in memory, not the '
        f'streamed {self.builder.name!r} ({what}); set '
        'config.data.streaming = False for a dataset of '
        'data.catalog.IN_MEMORY'
    )

  def label_noise_record(self) -> None:
    return None

  def _read(self, split: str, shuffle_seed: int | None) -> tf.data.Dataset:
    # tfds's reader keeps its AUTOTUNE parallelism, which with autotuning off
    # (tfdata.options() holds for the whole pipeline) is tf.data's fixed
    # starting value; a count of our own could exceed the file interleave's
    # cycle length, which tf.data refuses.
    read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed)
    return self.builder.as_dataset(
        split=split,
        shuffle_files=shuffle_seed is not None,
        read_config=read_config,
        decoders={'image': tfds.decode.SkipDecoding()},
    ).map(_features)

  def _epoch(self, epoch: int, first_step: int, end_step: int):
    """Batches of steps first_step .. end_step - 1, all in `epoch`."""
    steps_per_epoch = self.steps_per_epoch
    global_batch = self.global_batch_size
    columns = sharding.host_slice(
        global_batch, self.process_index, self.process_count
    )
    host_batch = columns.stop - columns.start
    seed = _epoch_seed(self.seed, epoch)
    ds = self._read(self.train_split, seed).shuffle(self.shuffle_buffer, seed)
    ds = ds.take(steps_per_epoch * host_batch).enumerate()
    skipped = (first_step - epoch * steps_per_epoch) * host_batch
    ds = ds.skip(skipped).take((end_step - first_step) * host_batch)
    base_seed = tf.constant(2 * self.seed + 1, tf.int64)

    def decode(index, example):
      # The position in the run's sequence of global batches, as the
      # in-memory pipeline numbers its examples.
      step = epoch * steps_per_epoch + index // host_batch
      position = step * global_batch + columns.start + index % host_batch
      return {
          'image': self.decode_train(
              example['image'], tf.stack([base_seed, position])
          ),
          'label': example['label'],
      }

    ds = ds.map(
        decode,
        num_parallel_calls=tfdata.example_parallel_calls(),
        deterministic=True,
    )
    return self._batches(ds.batch(host_batch, drop_remainder=True))

  def _batches(self, ds: tf.data.Dataset) -> Iterator[sharding.Batch]:
    def normalise(batch):
      return {
          **batch,
          'image': in_memory.normalize(batch['image'], self.mean, self.std),
      }

    # Fixed parallelism, no autotuning: each epoch's iterator, destroyed at
    # the epoch's end, then has no autotuning thread to join (data/tfdata.py).
    ds = ds.map(
        normalise,
        num_parallel_calls=tfdata.batch_parallel_calls(),
        deterministic=True,
    ).prefetch(2)
    for batch in ds.with_options(tfdata.options()).as_numpy_iterator():
      yield sharding.to_device_shape(batch, self.local_device_count)

  def train_batches(
      self, start_step: int, num_steps: int
  ) -> Iterator[sharding.Batch]:
    """Yields the batches of steps start_step .. num_steps - 1.

    Yields:
      {'image': float32 [devices, b, H, W, C], 'label': int32 [devices, b]}.
    """
    steps_per_epoch = self.steps_per_epoch
    step = start_step
    while step < num_steps:
      epoch = step // steps_per_epoch
      end = min(num_steps, (epoch + 1) * steps_per_epoch)
      yield from self._epoch(epoch, step, end)
      step = end

  def eval_batches(self, split: str) -> Iterator[sharding.Batch]:
    """Yields padded, masked batches covering `split` exactly once.

    Yields:
      {'image', 'label', 'mask'} with leading axes [devices, b]; mask is 1.0
      for real examples and 0.0 for padding.
    """
    size = self.image_shape[0]
    share = sharding.eval_share(
        self.eval_sizes[split],
        self.eval_batch_size,
        self.process_index,
        self.process_count,
    )
    ds = self._read(self.eval_splits[split], None).map(
        lambda example: {
            'image': imagenet_transforms.decode_and_eval_transform(
                example['image'], size
            ),
            'label': example['label'],
            'mask': tf.constant(1.0),
        },
        num_parallel_calls=tfdata.example_parallel_calls(),
        deterministic=True,
    )
    padding = {
        'image': tf.zeros(self.image_shape, tf.uint8),
        'label': tf.constant(0, tf.int32),
        'mask': tf.constant(0.0),
    }
    ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat())
    yield from self._batches(
        ds.take(share.num_batches * share.host_batch).batch(share.host_batch)
    )


def _split_parts(builder, split: str) -> list[tuple[str, int]]:
  return [
      (name, builder.info.splits[name].num_examples)
      for name in split.split('+')
  ]


def find_builder(name: str, data_dir: str | None):
  """The tfds builder of `name`, or one line saying what is valid."""
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise ValueError(
        f'config.data.dataset = {name!r}: valid: in memory '
        f'{sorted(catalog.IN_MEMORY)}, streamed {sorted(catalog.STREAMED)} '
        'or another tfds dataset (tfds.list_builders()) prepared in '
        'config.data.data_dir'
    ) from None


def _record_ranges(
    builder, spec: catalog.StreamedSpec, config: ml_collections.ConfigDict
):
  """(train parts, training records, eval split -> (parts, begin, end)):
  the validation holdout is the last records of the training split."""
  train_parts = _split_parts(builder, spec.train)
  num_train = sum(count for _, count in train_parts)
  test_size = builder.info.splits[spec.test].num_examples
  eval_ranges = {'test': ([(spec.test, test_size)], 0, test_size)}
  if config.validation_split:
    num_val = int(round(num_train * config.validation_fraction))
    eval_ranges['validation'] = (train_parts, num_train - num_val, num_train)
    num_train -= num_val
  return train_parts, num_train, eval_ranges


def _train_decoder(config: ml_collections.ConfigDict):
  policy = config.autoaugment_policy or (
      'cifar10' if config.dataset.startswith('cifar') else 'imagenet'
  )
  return make_train_decoder(
      config.augment,
      config.image_size,
      policy,
      config.randaugment_layers,
      config.randaugment_magnitude,
  )


def create_streamed_datasets(
    config: ml_collections.ConfigDict,
    *,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    local_device_count: int = 1,
) -> StreamedDatasets:
  """Opens the config's tfds dataset for streaming.

  Args:
    config: the data section (dataset, data_dir, image_size, augment,
      validation_split, validation_fraction, shuffle_buffer_examples,
      input_mean/std).
    batch_size: the global training batch.
    eval_batch_size: the global evaluation batch.
    seed: the run seed.
    process_index: this host's index.
    process_count: number of hosts.
    local_device_count: devices on this host.

  Returns:
    A `StreamedDatasets`.

  Raises:
    sources.DatasetNotPreparedError: the dataset is not in data_dir.
    ValueError: no tfds dataset has that name.
  """
  builder = find_builder(config.dataset, config.data_dir)
  if not builder.is_prepared():
    raise sources.not_prepared_error(builder)
  spec = catalog.STREAMED.get(config.dataset, catalog.StreamedSpec())
  if spec.test not in builder.info.splits:
    spec = dataclasses.replace(spec, test='validation')
  train_parts, num_train, eval_ranges = _record_ranges(builder, spec, config)

  def host_split(parts, begin, end):
    share = sharding.host_range(begin, end, process_index, process_count)
    return split_slice(parts, *share)

  size = config.image_size
  return StreamedDatasets(
      builder=builder,
      num_classes=builder.info.features['label'].num_classes,
      image_shape=(size, size, 3),
      num_train_examples=num_train,
      train_split=host_split(train_parts, 0, num_train),
      eval_splits={name: host_split(*r) for name, r in eval_ranges.items()},
      eval_sizes={name: r[2] - r[1] for name, r in eval_ranges.items()},
      mean=tuple(config.input_mean) or spec.mean,
      std=tuple(config.input_std) or spec.std,
      global_batch_size=batch_size,
      eval_batch_size=eval_batch_size,
      decode_train=_train_decoder(config),
      seed=seed,
      shuffle_buffer=config.shuffle_buffer_examples
      or min(num_train, DEFAULT_SHUFFLE_BUFFER),
      process_index=process_index,
      process_count=process_count,
      local_device_count=local_device_count,
  )
