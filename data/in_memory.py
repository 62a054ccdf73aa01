"""Input pipeline: in-memory examples -> device-shaped, normalised batches.

Training batches are a pure function of (seed, step): the examples of step s
are a slice of a per-epoch permutation drawn from (seed, epoch), augmented
(data/augment.py) with draws made for the whole global batch from (seed,
step), and one cutout patch serves the whole global batch. Each host takes
its own slice of every global batch and the same rows of those draws, so the
batches do not depend on the number of hosts, and a run resumed at step s
sees exactly the batches an uninterrupted run sees, with nothing repeated or
skipped. Each local device gets an equal share of the host's slice.

Evaluation covers every example exactly once: each host's share of the split
is padded to whole batches and the padding is masked out (data/sharding.py).
"""

import dataclasses
from typing import Callable, Iterator

import ml_collections
import numpy as np
import tensorflow as tf

from data import augment
from data import catalog
from data import cutout
from data import label_noise
from data import policies
from data import sharding
from data import sources
from data import tfdata

Batch = sharding.Batch
# tf.data only: keep TensorFlow off the accelerators JAX uses.
tf.config.set_visible_devices([], 'GPU')


def holdout_split(num_examples: int, fraction: float):
  """Indices of (train, validation) for the paper's 10% holdout.

  The split uses a fixed permutation (numpy seed 0), independent of the run
  seed, so every run of a rho sweep is scored on the same validation set.
  Sources whose holdout the official code fixes (SVHN) take that instead
  (`sources.Source.holdout`).

  Args:
    num_examples: size of the original training split.
    fraction: fraction held out for validation.

  Returns:
    (train_indices, validation_indices), sorted.
  """
  order = np.random.default_rng(0).permutation(num_examples)
  num_val = int(round(num_examples * fraction))
  return np.sort(order[num_val:]), np.sort(order[:num_val])


def normalize(images: tf.Tensor, mean, std) -> tf.Tensor:
  """uint8 0..255 -> float32 with zero mean and unit std per channel."""
  return (tf.cast(images, tf.float32) - mean) / std


def resize_batch(images: tf.Tensor, size: int) -> tf.Tensor:
  """A normalised batch resized to size x size, bicubically, as the official
  code upsamples CIFAR for finetuning (tf.compat.v1 resize_bicubic); the
  identity at size 0 or at the images' own size."""
  if not size or images.shape[1:3] == (size, size):
    return images
  return tf.compat.v1.image.resize_bicubic(images, [size, size])


def to_model_inputs(images, mean, std, size: int) -> np.ndarray:
  """uint8 images as evaluation feeds them to the model: normalised, then
  resized to size x size when size > 0."""
  return resize_batch(normalize(images, mean, std), size).numpy()


@dataclasses.dataclass
class Datasets:
  """The splits of one run, held in host memory.

  Attributes:
    num_classes: number of classes.
    image_shape: (H, W, C) of one example as the model sees it.
    train_images / train_labels: the training examples (after any holdout),
      at the dataset's own resolution.
    eval_splits: split name -> (images, labels); 'test', plus 'validation'
      when the config holds out part of train.
    mean / std: per-channel normalisation on the 0-255 scale.
    clean_train_labels: the labels before label noise, when there is some.
    global_batch_size: training batch over all hosts and devices.
    steps_per_epoch: whole global batches in one epoch (the remainder of
      each epoch's permutation is dropped).
    augmentation: the training augmentation (data/augment.py).
    image_size: > 0: batches are resized to it after augmentation and
      normalisation (finetuning at a model's resolution).
  """

  num_classes: int
  image_shape: tuple[int, ...]
  train_images: np.ndarray
  train_labels: np.ndarray
  eval_splits: dict[str, tuple[np.ndarray, np.ndarray]]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  global_batch_size: int
  eval_batch_size: int
  augmentation: augment.Augmentation
  seed: int
  image_size: int = 0
  clean_train_labels: np.ndarray | None = None
  process_index: int = 0
  process_count: int = 1
  local_device_count: int = 1

  @property
  def num_train_examples(self) -> int:
    return len(self.train_labels)

  @property
  def steps_per_epoch(self) -> int:
    return len(self.train_labels) // self.global_batch_size

  @property
  def eval_split_names(self) -> tuple[str, ...]:
    return tuple(self.eval_splits)

  def examples(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images, int32 labels) of 'train' or an eval split."""
    if split == 'train':
      return self.train_images, self.train_labels
    if split not in self.eval_splits:
      raise ValueError(
          f'split must be one of '
          f'{["train", *self.eval_splits]}, got {split!r}'
      )
    return self.eval_splits[split]

  def label_noise_record(self) -> dict | None:
    """The corrupted training examples (indices into the training split
    after any validation holdout), or None without label noise."""
    if self.clean_train_labels is None:
      return None
    changed = np.flatnonzero(self.clean_train_labels != self.train_labels)
    return {
        'num_train': len(self.train_labels),
        'num_changed': len(changed),
        'changed_indices': changed.tolist(),
    }

  def train_batches(self, start_step: int, num_steps: int) -> Iterator[Batch]:
    """Yields the batches of steps start_step .. num_steps - 1.

    Args:
      start_step: the first step to produce (the step a resumed run is at).
      num_steps: one past the last step.

    Yields:
      {'image': float32 [devices, b, H, W, C], 'label': int32 [devices, b]}.
    """
    n = len(self.train_labels)
    global_batch = self.global_batch_size
    columns = sharding.host_slice(
        global_batch, self.process_index, self.process_count
    )
    steps_per_epoch = self.steps_per_epoch
    images = tf.constant(self.train_images)
    labels = tf.constant(self.train_labels)
    seed = self.seed

    def rows_of_epoch(epoch):
      # Seeds (2 * seed, epoch) for the order and (2 * seed + 1, step, host)
      # for augmentation keep the two random streams apart.
      order = tf.random.experimental.stateless_shuffle(
          tf.range(n), seed=tf.stack([tf.constant(2 * seed, tf.int64), epoch])
      )
      rows = tf.reshape(
          order[: steps_per_epoch * global_batch],
          [steps_per_epoch, global_batch],
      )
      steps = epoch * steps_per_epoch + tf.range(
          steps_per_epoch, dtype=tf.int64
      )
      return tf.data.Dataset.from_tensor_slices(
          (steps, rows[:, columns.start : columns.stop])
      )

    def batch_of_step(step, rows):
      # One seed per global batch; every host draws for the whole batch and
      # takes its rows, so the augmentation is the same on any host count.
      augment_seed = tf.stack([tf.constant(2 * seed + 1, tf.int64), step])
      image_seed, cutout_seed = tf.unstack(
          tf.random.experimental.stateless_split(augment_seed, 2)
      )
      batch = self.augmentation.images(
          tf.gather(images, rows),
          augment.SliceSeed(image_seed, columns.start, global_batch),
      )
      batch = normalize(batch, self.mean, self.std)
      if self.augmentation.cutout_size:
        batch = cutout.batch_cutout(
            batch, cutout_seed, self.augmentation.cutout_size
        )
      return {
          'image': resize_batch(batch, self.image_size),
          'label': tf.gather(labels, rows),
      }

    first_epoch = start_step // steps_per_epoch
    ds = tf.data.Dataset.range(first_epoch, -(-num_steps // steps_per_epoch))
    ds = (
        ds.flat_map(rows_of_epoch)
        .skip(start_step - first_epoch * steps_per_epoch)
        .take(num_steps - start_step)
    )
    # Fixed parallelism, no autotuning: the iterator, destroyed when the
    # data ends, then has no autotuning thread to join (data/tfdata.py).
    ds = ds.map(
        batch_of_step,
        num_parallel_calls=tfdata.batch_parallel_calls(),
        deterministic=True,
    )
    ds = ds.prefetch(2).with_options(tfdata.options())
    for batch in ds.as_numpy_iterator():
      yield sharding.to_device_shape(batch, self.local_device_count)

  def model_inputs(self, images: np.ndarray) -> np.ndarray:
    """uint8 images [n, h, w, c] as the model sees them in evaluation.

    Args:
      images: examples at the dataset's resolution.

    Returns:
      float32 [n, *image_shape]: normalised and resized to image_size.
    """
    return to_model_inputs(images, self.mean, self.std, self.image_size)

  def eval_batches(self, split: str) -> Iterator[Batch]:
    """Yields padded, masked batches covering `split` exactly once.

    Args:
      split: a key of `eval_splits`.

    Yields:
      {'image', 'label', 'mask'} with leading axes [devices, b]; mask is 1.0
      for real examples and 0.0 for padding.
    """
    images, labels = self.eval_splits[split]
    index, mask = sharding.eval_share(
        len(labels),
        self.eval_batch_size,
        self.process_index,
        self.process_count,
    ).positions()
    for rows, row_mask in zip(index, mask):
      batch = {
          'image': self.model_inputs(images[rows]),
          'label': labels[rows],
          'mask': row_mask,
      }
      yield sharding.to_device_shape(batch, self.local_device_count)


def _relabelled(
    images: np.ndarray,
    mean,
    std,
    size: int,
    relabel: Callable[[np.ndarray], np.ndarray],
    batch_size: int = 256,
) -> np.ndarray:
  """relabel() of the normalised (and resized) images, in batches."""
  return np.concatenate(
      [
          np.asarray(
              relabel(
                  to_model_inputs(images[i : i + batch_size], mean, std, size)
              )
          )
          for i in range(0, len(images), batch_size)
      ]
  ).astype(np.int32)


def _splits(config: ml_collections.ConfigDict, source: sources.Source):
  """(train images, train labels, eval splits) at config.image_size, with
  the validation holdout taken out of train if the config asks for it."""
  eval_splits = {'test': source.load('test')}
  if not config.validation_split:
    return *source.load('train'), eval_splits
  if source.holdout:
    # The official code fixes this holdout (SVHN: the last 7,328 of train,
    # 10%), so rho is chosen on the official validation examples.
    if config.validation_fraction != catalog.HOLDOUT_FRACTION:
      raise ValueError(
          f'config.data.validation_fraction = {config.validation_fraction}: '
          f"{config.dataset} holds out the official code's fixed validation "
          f'split ({source.holdout[1]}); leave it at {catalog.HOLDOUT_FRACTION}'
      )
    train_split, validation_split = source.holdout
    eval_splits['validation'] = source.load(validation_split)
    return *source.load(train_split), eval_splits
  train_images, train_labels = source.load('train')
  train_rows, val_rows = holdout_split(
      len(train_labels), config.validation_fraction
  )
  eval_splits['validation'] = (train_images[val_rows], train_labels[val_rows])
  return train_images[train_rows], train_labels[train_rows], eval_splits


def _model_shape(shape, size: int) -> tuple[int, ...]:
  return tuple(shape) if not size else (size, size, shape[-1])


def _train_augmentation(
    config: ml_collections.ConfigDict, image_side: int
) -> augment.Transform:
  policy = config.autoaugment_policy or policies.policy_for_dataset(
      config.dataset, image_side
  )
  return augment.make_train_augmentation(
      config.augment,
      config.crop_padding,
      autoaugment_policy=policy,
      randaugment_layers=config.randaugment_layers,
      randaugment_magnitude=config.randaugment_magnitude,
  )


def create_datasets(
    config: ml_collections.ConfigDict,
    *,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    local_device_count: int = 1,
    relabel: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Datasets:
  """Loads the config's dataset and builds its splits.

  Args:
    config: the data section (dataset, data_dir, augment, crop_padding,
      validation_split, validation_fraction, label_noise, ...).
    batch_size: the global training batch.
    eval_batch_size: the global evaluation batch.
    seed: the run seed (order, augmentation, label noise).
    process_index: this host's index.
    process_count: number of hosts.
    local_device_count: devices on this host.
    relabel: if given, (normalised images) -> labels replaces the training
      labels after any label noise (bootstrap, Table 4).

  Returns:
    A `Datasets`.
  """
  source = sources.create_source(
      config.dataset, config.data_dir, config.svhn_extra, config.image_size
  )
  train_images, train_labels, eval_splits = _splits(config, source)
  clean_train_labels = None
  if config.label_noise:
    # Only the training part is corrupted: the validation split used for the
    # rho search stays clean, as in the paper.
    clean_train_labels = train_labels
    train_labels, _ = label_noise.corrupt_labels(
        train_labels,
        source.num_classes,
        config.label_noise,
        seed,
        config.label_noise_mode,
    )
  mean = tuple(config.input_mean) or source.mean
  std = tuple(config.input_std) or source.std
  if relabel is not None:
    train_labels = _relabelled(
        train_images, mean, std, config.image_size, relabel
    )
  return Datasets(
      num_classes=source.num_classes,
      image_shape=_model_shape(train_images.shape[1:], config.image_size),
      train_images=train_images,
      train_labels=train_labels,
      eval_splits=eval_splits,
      mean=mean,
      std=std,
      global_batch_size=batch_size,
      eval_batch_size=eval_batch_size,
      augmentation=_train_augmentation(config, train_images.shape[1]),
      image_size=config.image_size,
      seed=seed,
      clean_train_labels=clean_train_labels,
      process_index=process_index,
      process_count=process_count,
      local_device_count=local_device_count,
  )
