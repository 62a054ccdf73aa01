"""Input-pipeline throughput: images/s per CPU core for each train transform.

CIFAR-shaped data goes through the training pipeline itself
(`data.in_memory.Datasets.train_batches`: 50,000 random uint8 images held in
memory, the step's permutation, gather, batch transform, normalisation,
prefetch; batch 256). ImageNet is measured on synthetic JPEGs through the
streamed pipeline's per-image decode (crop window decode, random-resized
crop to 224, flip) in a parallel tf.data map, batched and normalised.

Two per-core figures are reported: wall-clock images/s divided by the
machine's cores, and images per second of CPU time the process consumed
(user + system, all threads). On a shared machine the first understates what
a free core does (the load average printed beside it says how contended the
cores were); the second is the robust one.

  python -m benchmarks.input_pipeline [--images=20000] \
      [--demand_from=results/benchmarks/gpu.json]

Then the demand: host cores = the images/s a training step consumes / the
images per CPU-second of its transform, for a ladder of step rates and for
every step of the `benchmarks.accelerator` records named by --demand_from
(CIFAR-sized steps against the CIFAR transforms, 224 px against ImageNet's).
"""

import io
import json
import math
import os
import time
from typing import NamedTuple

from absl import app
from absl import flags
from etils import epath
import numpy as np
from PIL import Image
import tensorflow as tf

from data import augment
from data import catalog
from data import imagenet_transforms
from data import in_memory

CIFAR_AUGMENTS = ('basic', 'cutout', 'autoaugment', 'autoaugment_cutout')


class Rate(NamedTuple):
  wall: float  # Images per second of wall-clock time.
  cpu: float  # Images per second of CPU time spent by this process.


def _time(dataset, num_batches, batch_size, warmup_batches=5):
  iterator = iter(dataset)
  for _ in range(warmup_batches):
    next(iterator)
  start, cpu_start = time.perf_counter(), time.process_time()
  for _ in range(num_batches):
    next(iterator)
  images = num_batches * batch_size
  return Rate(
      images / (time.perf_counter() - start),
      images / (time.process_time() - cpu_start),
  )


def measure_cifar(name, num_images, batch_size=256):
  """Images/s of the in-memory pipeline with augment `name` on CIFAR shapes."""
  rng = np.random.default_rng(0)
  cifar10 = catalog.IN_MEMORY['cifar10']
  datasets = in_memory.Datasets(
      num_classes=10,
      image_shape=(32, 32, 3),
      train_images=rng.integers(0, 256, (50_000, 32, 32, 3), np.uint8),
      train_labels=rng.integers(0, 10, 50_000).astype(np.int32),
      eval_splits={},
      mean=cifar10.mean,
      std=cifar10.std,
      global_batch_size=batch_size,
      eval_batch_size=batch_size,
      augmentation=augment.make_train_augmentation(name),
      seed=0,
  )
  num_batches = max(num_images // batch_size, 1)
  return _time(
      datasets.train_batches(0, num_batches + 5), num_batches, batch_size
  )


def _synthetic_jpegs(count, rng):
  """Smooth random pictures at typical ImageNet sizes, JPEG-encoded."""
  jpegs = []
  for i in range(count):
    height, width = (375, 500) if i % 2 else (500, 400)
    small = rng.integers(0, 256, (height // 25, width // 25, 3), np.uint8)
    picture = Image.fromarray(small).resize((width, height), Image.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format='JPEG', quality=90)
    jpegs.append(buffer.getvalue())
  return jpegs


def measure_imagenet(num_images, batch_size=64):
  """Images/s of decode + random-resized crop to 224 + flip + normalise."""
  jpegs = _synthetic_jpegs(64, np.random.default_rng(0))
  seed = tf.constant(0, tf.int64)

  def augment_one(index, jpeg):
    return imagenet_transforms.decode_and_train_transform(
        jpeg, tf.stack([seed, index])
    )

  def normalise(batch):
    return tf.cast(batch, tf.float32) / 127.5 - 1.0

  dataset = (
      tf.data.Dataset.from_tensor_slices(jpegs)
      .enumerate()
      .repeat()
      .map(augment_one, num_parallel_calls=tf.data.AUTOTUNE)
      .batch(batch_size, drop_remainder=True)
      .map(normalise)
      .prefetch(2)
  )
  return _time(
      dataset, max(num_images // batch_size, 1), batch_size, warmup_batches=2
  )


# Accelerator step rates (images/s) to size the host for when no measured
# record is given: from a slow GPU to a pod slice's host.
DEMAND_LADDER = (1_000, 5_000, 10_000, 20_000, 50_000)


def cores_needed(images_per_s: float, images_per_cpu_second: float) -> float:
  """Host cores one transform needs to feed `images_per_s`.

  Args:
    images_per_s: what the training step consumes.
    images_per_cpu_second: the transform's rate per core (Rate.cpu).

  Returns:
    The cores, fractional.
  """
  return images_per_s / images_per_cpu_second


def _demand_rows(rows, records):
  """(label, images/s, {transform: cores}) for the ladder and each record."""
  demands = [(f'{rate:,} images/s', rate, None) for rate in DEMAND_LADDER]
  for record in records:
    for step in record['steps']:
      label = (
          f'{record["device_kind"]} {step["name"]} ({step["image_size"]} px)'
      )
      demands.append((label, step['images_per_s'], step['image_size']))
  table = []
  for label, rate, size in demands:
    wanted = {
        name: cores_needed(rate, r.cpu)
        for name, r in rows.items()
        if size is None or name.startswith('imagenet') == (size >= 128)
    }
    table.append((label, rate, wanted))
  return table


def _print_demand(rows, records):
  print('\nhost cores needed to feed a step rate (images/s / per CPU-second):')
  print(f'{"step":<52}{"images/s":>10}  ' + ''.join(f'{n:>22}' for n in rows))
  for label, rate, wanted in _demand_rows(rows, records):
    cells = ''.join(
        f'{math.ceil(wanted[n]) if n in wanted else "-":>22}' for n in rows
    )
    print(f'{label:<52}{rate:>10,.0f}  {cells}')


def main(argv):
  del argv
  load_before = os.getloadavg()
  rows = {}
  for name in CIFAR_AUGMENTS:
    rows[f'cifar/{name}'] = measure_cifar(name, flags.FLAGS.images)
  rows['imagenet/train_224'] = measure_imagenet(flags.FLAGS.imagenet_images)
  load_after = os.getloadavg()
  cores = os.cpu_count()

  print(
      f'{cores} cores; load average (1 min) before {load_before[0]:.2f}, '
      f'after {load_after[0]:.2f}'
  )
  print(
      f'{"transform":<24}{"images/s":>10}{"/ cores":>10}'
      f'{"per CPU-second":>16}'
  )
  for name, rate in rows.items():
    print(
        f'{name:<24}{rate.wall:>10,.0f}{rate.wall / cores:>10,.0f}'
        f'{rate.cpu:>16,.0f}'
    )
  records = [
      json.loads(epath.Path(path).read_text())
      for path in flags.FLAGS.demand_from
  ]
  _print_demand(rows, records)
  print(
      json.dumps(
          {
              'cores': cores,
              'load_before': load_before,
              'load_after': load_after,
              'rates': {k: v._asdict() for k, v in rows.items()},
          }
      )
  )


if __name__ == '__main__':
  flags.DEFINE_integer('images', 20_000, 'Images timed per CIFAR transform.')
  flags.DEFINE_integer('imagenet_images', 1_000, 'Images timed for ImageNet.')
  flags.DEFINE_list(
      'demand_from', [], 'benchmarks.accelerator JSON records to size for.'
  )
  app.run(main)
