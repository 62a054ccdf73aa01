"""Input-pipeline throughput: images/s per CPU core for each train transform.

CIFAR-shaped uint8 data (in memory, as the pipeline holds small datasets)
goes through the per-example transform in a parallel tf.data `map`, then is
batched and normalised, as in training. ImageNet is measured on synthetic
JPEGs (decode of the crop window, random-resized crop to 224, flip).

The tf.data private thread pool is capped at --cores threads. Two per-core
figures are reported: wall-clock images/s divided by the cores used, and
images per second of CPU time the process consumed (user + system, all
threads). On a shared machine the first understates what a free core does
(the load average printed beside it says how contended the cores were); the
second is the robust one.

  python benchmarks/input_pipeline.py [--cores=2] [--images=20000]
"""

import argparse
import io
import json
import os
import time
from typing import NamedTuple

import numpy as np
from PIL import Image
import tensorflow as tf

from data import augment
from data import autoaugment
from data import cutout
from data import imagenet_transforms

CIFAR_MEAN = np.array([125.3, 123.0, 113.9], np.float32)
CIFAR_STD = np.array([63.0, 62.1, 66.7], np.float32)


def cifar_transforms():
  """name -> fn(image, seed) for the CIFAR-shaped measurements."""
  aa = autoaugment.make_autoaugment('cifar10')

  def split(seed, n):
    return tf.unstack(tf.random.experimental.stateless_split(seed, n))

  def basic_cutout(image, seed):
    s1, s2 = split(seed, 2)
    return cutout.random_cutout(augment.basic(image, s1), s2)

  def basic_autoaugment(image, seed):
    s1, s2 = split(seed, 2)
    return aa(augment.basic(image, s1), s2)

  def basic_autoaugment_cutout(image, seed):
    s1, s2, s3 = split(seed, 3)
    return cutout.random_cutout(aa(augment.basic(image, s1), s2), s3)

  return {
      'basic': augment.basic,
      'cutout': basic_cutout,
      'autoaugment': basic_autoaugment,
      'autoaugment_cutout': basic_autoaugment_cutout,
  }


class Rate(NamedTuple):
  wall: float  # Images per second of wall-clock time.
  cpu: float  # Images per second of CPU time spent by this process.


def _options(cores):
  options = tf.data.Options()
  options.threading.private_threadpool_size = cores
  options.deterministic = True
  return options


def _time(dataset, num_batches, batch_size, warmup_batches=5):
  iterator = iter(dataset)
  for _ in range(warmup_batches):
    next(iterator)
  start, cpu_start = time.perf_counter(), time.process_time()
  for _ in range(num_batches):
    next(iterator)
  images = num_batches * batch_size
  return Rate(images / (time.perf_counter() - start),
              images / (time.process_time() - cpu_start))


def measure_cifar(transform, cores, num_images, batch_size=256):
  """Images/s of transform + batch + normalise on 32x32x3 uint8 data."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (10_000, 32, 32, 3), dtype=np.uint8)
  seed = tf.constant(0, tf.int64)

  def augment_one(index, image):
    return transform(image, tf.stack([seed, index]))

  def normalise(batch):
    return (tf.cast(batch, tf.float32) - CIFAR_MEAN) / CIFAR_STD

  dataset = (tf.data.Dataset.from_tensor_slices(images).enumerate().repeat()
             .map(augment_one, num_parallel_calls=cores)
             .batch(batch_size, drop_remainder=True)
             .map(normalise).prefetch(2).with_options(_options(cores)))
  return _time(dataset, num_images // batch_size, batch_size)


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


def measure_imagenet(cores, num_images, batch_size=64):
  """Images/s of decode + random-resized crop to 224 + flip + normalise."""
  jpegs = _synthetic_jpegs(64, np.random.default_rng(0))
  seed = tf.constant(0, tf.int64)

  def augment_one(index, jpeg):
    return imagenet_transforms.decode_and_train_transform(
        jpeg, tf.stack([seed, index]))

  def normalise(batch):
    return tf.cast(batch, tf.float32) / 127.5 - 1.0

  dataset = (tf.data.Dataset.from_tensor_slices(jpegs).enumerate().repeat()
             .map(augment_one, num_parallel_calls=cores)
             .batch(batch_size, drop_remainder=True)
             .map(normalise).prefetch(2).with_options(_options(cores)))
  return _time(dataset, max(num_images // batch_size, 1), batch_size,
               warmup_batches=2)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--cores', type=int, default=os.cpu_count())
  parser.add_argument('--images', type=int, default=20_000,
                      help='images timed per CIFAR transform')
  parser.add_argument('--imagenet_images', type=int, default=1_000)
  args = parser.parse_args()

  load_before = os.getloadavg()
  rows = {}
  for name, transform in cifar_transforms().items():
    rows[f'cifar/{name}'] = measure_cifar(transform, args.cores, args.images)
  rows['imagenet/train_224'] = measure_imagenet(args.cores,
                                                args.imagenet_images)
  load_after = os.getloadavg()

  print(f'cores used: {args.cores} of {os.cpu_count()}; load average '
        f'(1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}')
  print(f'{"transform":<24}{"images/s":>10}{"/ cores used":>14}'
        f'{"per CPU-second":>16}')
  for name, rate in rows.items():
    print(f'{name:<24}{rate.wall:>10,.0f}{rate.wall / args.cores:>14,.0f}'
          f'{rate.cpu:>16,.0f}')
  print(json.dumps({'cores': args.cores, 'load_before': load_before,
                    'load_after': load_after,
                    'rates': {k: v._asdict() for k, v in rows.items()}}))


if __name__ == '__main__':
  main()
