"""Picture check: a PNG grid of every train augmentation on CIFAR-shaped images.

The images are scikit-learn's 8x8 digits, upscaled to 32x32 and coloured: an
orange digit on a blue-to-green gradient with a red mark in the top-left
corner, so flips, translations, rotations, colour and histogram operations are
all visible. One row per augmentation (eight seeds each), then one row per
AutoAugment operation at magnitude 9, then mixup pairs.

  python -m benchmarks.augment_grid [--output_dir=/tmp]   # augment_grid.png
"""

from absl import app
from absl import flags
from etils import epath
import jax
import numpy as np
from PIL import Image
import tensorflow as tf

from data import augment
from data import autoaugment
from data import cutout
from data import imagenet_transforms
from data import mixup
from results import plotting

plt = plotting.plt

COLUMNS = 8


def coloured_digits(count: int = COLUMNS) -> np.ndarray:
  """uint8 [count, 32, 32, 3] structured test images."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  digits = datasets.load_digits()
  y, x = np.mgrid[:32, :32] / 31.0
  background = np.stack([40 + 40 * x, 60 + 120 * y, 200 - 80 * x], -1)
  images = []
  for i in range(count):
    strokes = (
        np.asarray(
            Image.fromarray((digits.images[i] * 15).astype(np.uint8)).resize(
                (24, 24), Image.BILINEAR
            )
        )
        / 255.0
    )
    ink = np.zeros((32, 32, 1))
    ink[4:28, 4:28, 0] = strokes
    image = background * (1 - ink) + np.array([250, 150, 30]) * ink
    image[1:6, 1:6] = (220, 20, 20)  # Orientation mark.
    images.append(image)
  return np.asarray(images).round().astype(np.uint8)


def augmentation_rows():
  """(label, fn(images [B, H, W, C], seed)) for the train transforms."""

  def transform(name, **options):
    """The uint8 stage, then (for the cutout names) the batch patch, shown
    in mid-grey where the pipeline writes the normalised mean."""
    augmentation = augment.make_train_augmentation(name, **options)

    def apply(images, seed):
      images = augmentation.images(images, seed)
      if not augmentation.cutout_size:
        return images
      shifted = tf.cast(images, tf.float32) - 128.0
      patched = cutout.batch_cutout(shifted, seed, augmentation.cutout_size)
      return tf.cast(patched + 128.0, tf.uint8)

    return apply

  def policy(name):
    return augment.per_image(autoaugment.make_autoaugment(name))

  return [
      ('original', augment.identity),
      ('basic', transform('basic')),
      ('cutout (basic+16px, one patch a batch)', transform('cutout')),
      ('AA cifar10 (95 sub-policies)', transform('autoaugment')),
      (
          'AA svhn only + cutout',
          transform('aa_only_cutout', autoaugment_policy='svhn'),
      ),
      ('AA imagenet', policy('imagenet')),
      (
          'RandAugment 2,9',
          augment.per_image(autoaugment.make_randaugment(2, 9)),
      ),
      (
          'Inception crop',
          augment.per_image(imagenet_transforms.make_train_transform(32)),
      ),
  ]


def op_rows(level: float = 9.0):
  return [
      (
          f'{name} m={level:g}',
          augment.per_image(
              lambda image, seed, name=name: autoaugment.apply_op(
                  name, image, level, seed
              )
          ),
      )
      for name in autoaugment.OPS
  ]


def render(out_path: str):
  """Writes the grid to `out_path`."""
  images = coloured_digits()
  rows = augmentation_rows() + op_rows()
  grid = []
  for row, (_, fn) in enumerate(rows):
    grid.append(
        list(fn(tf.constant(images), tf.constant([row, 17], tf.int64)).numpy())
    )
  # Key 4 draws lam = 0.63 with alpha = 1, so both partners stay visible.
  key = jax.random.PRNGKey(4)
  mixed, _ = mixup.mixup(key, images / 255.0, np.eye(COLUMNS), alpha=1.0)
  lam = float(mixup.mixup_params(key, COLUMNS, 1.0)[0])
  grid.append(list((np.asarray(mixed) * 255).round().astype(np.uint8)))
  labels = [label for label, _ in rows] + [f'mixup lam={lam:.2f}']

  fig, axes = plt.subplots(
      len(grid), COLUMNS, figsize=(COLUMNS * 0.9 + 1.6, len(grid) * 0.9)
  )
  for r, row in enumerate(grid):
    for c, image in enumerate(row):
      axis = axes[r, c]
      axis.imshow(image, interpolation='nearest')
      axis.set_xticks([])
      axis.set_yticks([])
    axes[r, 0].set_ylabel(
        labels[r], rotation=0, ha='right', va='center', fontsize=7
    )
  fig.tight_layout(pad=0.2)
  plotting.save_figure(fig, out_path, dpi=80)
  print(f'wrote {out_path}: {len(grid)} rows x {COLUMNS} images')


def main(argv):
  del argv
  output_dir = epath.Path(flags.FLAGS.output_dir)
  output_dir.mkdir(parents=True, exist_ok=True)
  render(output_dir / 'augment_grid.png')


if __name__ == '__main__':
  flags.DEFINE_string('output_dir', '/tmp', 'Where augment_grid.png goes.')
  app.run(main)
