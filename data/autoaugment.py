"""AutoAugment (Cubuk et al., 2018) and RandAugment (Cubuk et al., 2019),
as the official SAM code applies them.

The policies are data (data/policies.py). The operations follow the official
code's port (autoaugment/autoaugment.py of google-research/sam, from the
TPU ImageNet code), which produced the paper's numbers, including four of
its choices that differ from the AutoAugment paper's CIFAR code; they are
kept, and named here:

* translations move by m / 10 * 250 pixels (RandAugment: 100) and the
  Cutout operation blanks a square of half-side m / 10 * 100 pixels
  (RandAugment: 40), constants meant for ImageNet: on a 32-pixel image
  every translation of magnitude >= 2 and every Cutout of magnitude >= 2
  leaves a uniform grey image (about 12% of CIFAR AutoAugment images);
* Contrast blends with a grey of value H * W / 256 (the pixel count divided
  by 256: 4 on 32x32) where the mean pixel was meant;
* Solarize inverts the pixels at or above m / 10 * 256, so magnitude 0
  inverts the whole image;
* Posterize keeps m / 10 * 4 bits (the AutoAugment code keeps 4 - that).

SolarizeAdd (the official ImageNet policy's) adds m / 10 * 110 to the pixels
below 128.

Level m in [0, 10]; shear (0.3 m / 10), translate and rotate (30 m / 10
degrees) take a random sign; the enhance operations use the factor
0.1 + 1.8 m / 10; geometric operations use nearest neighbours and fill with
grey (128); results are cast to uint8 by truncation as there. SamplePairing,
which needs a second image and appears in no published policy, is not
implemented.

Every transform is `fn(image uint8 [H, W, C], seed int [2]) -> uint8 [H, W, C]`
from stateless random ops; C may be 1 (Color is then the identity).
"""

import functools
import math
from typing import Callable, NamedTuple

import tensorflow as tf

from data import cutout
from data import policies

MAX_LEVEL = 10.0
FILL = 128  # Grey for pixels that geometric operations move in.


class Hparams(NamedTuple):
  """The official code's magnitude constants, in pixels."""

  translate_const: float
  cutout_const: float


AUTOAUGMENT_HPARAMS = Hparams(translate_const=250.0, cutout_const=100.0)
RANDAUGMENT_HPARAMS = Hparams(translate_const=100.0, cutout_const=40.0)


def _random_sign(seed) -> tf.Tensor:
  return tf.where(tf.random.stateless_uniform([], seed) < 0.5, -1.0, 1.0)


def _blend(degenerate, image, factor) -> tf.Tensor:
  """degenerate + factor * (image - degenerate), clipped and truncated."""
  degenerate = tf.cast(degenerate, tf.float32)
  mixed = degenerate + factor * (tf.cast(image, tf.float32) - degenerate)
  return tf.cast(tf.clip_by_value(mixed, 0.0, 255.0), tf.uint8)


def _affine(image, row) -> tf.Tensor:
  """Output (x, y) reads input (a0 x + a1 y + a2, b0 x + b1 y + b2), with
  row = [a0, a1, a2, b0, b1, b2]; nearest neighbour, FILL outside."""
  transform = tf.concat([tf.cast(tf.stack(row), tf.float32), [0.0, 0.0]], 0)
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None],
      transforms=transform[None],
      output_shape=tf.shape(image)[:2],
      fill_value=float(FILL),
      interpolation='NEAREST',
      fill_mode='CONSTANT',
  )[0]


# Every operation is op(image, level, seed, hparams) -> image, with `level` a
# float32 scalar tensor in [0, 10], so that one graph serves every magnitude
# of a policy table.


def identity(image, level, seed, hparams):
  del level, seed, hparams
  return image


def auto_contrast(image, level, seed, hparams):
  """Stretches each channel to span [0, 255]; flat channels stay as is."""
  del level, seed, hparams
  x = tf.cast(image, tf.float32)
  low = tf.reduce_min(x, axis=[0, 1])
  high = tf.reduce_max(x, axis=[0, 1])
  scale = tf.where(high > low, 255.0 / tf.maximum(high - low, 1.0), 1.0)
  offset = tf.where(high > low, -low * scale, 0.0)
  return tf.cast(tf.clip_by_value(x * scale + offset, 0, 255), tf.uint8)


def equalize(image, level, seed, hparams):
  """Per-channel histogram equalisation with PIL's lookup table."""
  del level, seed, hparams
  channels = image.shape[-1]
  values = tf.reshape(tf.cast(image, tf.int32), [-1, channels])
  # One bincount for all channels: channel c counts into bins [256c, 256c+256).
  index = values + tf.range(channels) * 256
  hist = tf.reshape(
      tf.math.bincount(
          index, minlength=256 * channels, maxlength=256 * channels
      ),
      [channels, 256],
  )
  last_nonzero = 255 - tf.argmax(
      tf.reverse(hist, [1]) > 0, axis=1, output_type=tf.int32
  )
  last_count = tf.gather(hist, last_nonzero, batch_dims=1)
  step = (tf.reduce_sum(hist, axis=1) - last_count) // 255
  safe_step = tf.maximum(step, 1)[:, None]
  lut = (tf.cumsum(hist, axis=1, exclusive=True) + safe_step // 2) // safe_step
  lut = tf.where(step[:, None] > 0, tf.minimum(lut, 255), tf.range(256)[None])
  out = tf.gather(tf.reshape(lut, [-1]), index)
  return tf.cast(tf.reshape(out, tf.shape(image)), tf.uint8)


def invert(image, level, seed, hparams):
  del level, seed, hparams
  return 255 - image


def rotate(image, level, seed, hparams):
  """Rotates about the centre by up to 30 degrees, random direction."""
  del hparams
  angle = _random_sign(seed) * level / MAX_LEVEL * (30.0 * math.pi / 180.0)
  height = tf.cast(tf.shape(image)[0], tf.float32)
  width = tf.cast(tf.shape(image)[1], tf.float32)
  cy, cx = (height - 1.0) / 2.0, (width - 1.0) / 2.0
  cos, sin = tf.cos(angle), tf.sin(angle)
  return _affine(
      image,
      [cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy],
  )


def solarize(image, level, seed, hparams):
  """Inverts the pixels at or above m / 10 * 256 (the official threshold)."""
  del seed, hparams
  threshold = tf.cast(level / MAX_LEVEL * 256.0, tf.int32)
  # x ^ 255 == 255 - x on uint8; XOR with a 0/255 mask avoids tf.where,
  # which is several times slower on small images.
  flip = tf.cast(tf.cast(image, tf.int32) >= threshold, tf.uint8) * 255
  return tf.bitwise.bitwise_xor(image, flip)


def solarize_add(image, level, seed, hparams):
  """Adds m / 10 * 110 to the pixels below 128, saturating at 255 (the
  official `solarize_add`, in the ImageNet policy)."""
  del seed, hparams
  addition = tf.cast(level / MAX_LEVEL * 110.0, tf.int32)
  x = tf.cast(image, tf.int32)
  return tf.cast(tf.where(x < 128, tf.minimum(x + addition, 255), x), tf.uint8)


def posterize(image, level, seed, hparams):
  """Keeps the top m / 10 * 4 bits of every pixel (the official count)."""
  del seed, hparams
  bits = tf.cast(level / MAX_LEVEL * 4.0, tf.uint8)
  shift = tf.cast(8, tf.uint8) - bits
  return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def _enhance_factor(level):
  return 0.1 + 1.8 * level / MAX_LEVEL


def color(image, level, seed, hparams):
  """Saturation: blends with the greyscale image."""
  del seed, hparams
  if image.shape[-1] == 1:
    return image
  grey = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
  return _blend(grey, image, _enhance_factor(level))


def contrast(image, level, seed, hparams):
  """Blends with a flat grey of value H * W / 256: the official code's mean
  is the sum of its 256-bin histogram divided by 256, the pixel count."""
  del seed, hparams
  shape = tf.shape(image)
  grey = tf.minimum(tf.cast(shape[0] * shape[1], tf.float32) / 256.0, 255.0)
  grey = tf.cast(tf.cast(grey, tf.uint8), tf.float32)
  return _blend(tf.fill(shape, grey), image, _enhance_factor(level))


def brightness(image, level, seed, hparams):
  del seed, hparams
  return _blend(tf.zeros_like(image), image, _enhance_factor(level))


def sharpness(image, level, seed, hparams):
  """Blends with the 3x3-smoothed image (border pixels left unsmoothed)."""
  del seed, hparams
  # The kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 as nine shifted
  # slices: three times faster than a depthwise convolution at 32x32.
  x = tf.cast(image, tf.float32)
  ends = (-2, -1, None)
  neighbours = [
      x[dy : ends[dy], dx : ends[dx]] for dy in range(3) for dx in range(3)
  ]
  smooth = (tf.add_n(neighbours) + 4.0 * x[1:-1, 1:-1]) / 13.0
  smooth = tf.floor(tf.clip_by_value(smooth, 0.0, 255.0))  # uint8 cast.
  # Replace the interior by the smoothed values; the border keeps x.
  degenerate = x + tf.pad(smooth - x[1:-1, 1:-1], [[1, 1], [1, 1], [0, 0]])
  return _blend(degenerate, image, _enhance_factor(level))


def _shear(horizontal: bool):
  def shear(image, level, seed, hparams):
    del hparams
    amount = _random_sign(seed) * level / MAX_LEVEL * 0.3
    return _affine(
        image,
        [1.0, amount, 0.0, 0.0, 1.0, 0.0]
        if horizontal
        else [1.0, 0.0, 0.0, amount, 1.0, 0.0],
    )

  return shear


def _translate(horizontal: bool):
  """Moves the image by m / 10 * translate_const pixels, random direction
  (pad and slice: the same as an affine transform for whole pixels)."""
  axis = 1 if horizontal else 0

  def translate(image, level, seed, hparams):
    shape = tf.shape(image)
    pixels = _random_sign(seed) * level / MAX_LEVEL * hparams.translate_const
    shift = tf.clip_by_value(
        tf.cast(pixels, tf.int32), -shape[axis], shape[axis]
    )
    paddings = [[0, 0], [0, 0], [0, 0]]
    paddings[axis] = [shape[axis], shape[axis]]
    padded = tf.pad(image, paddings, constant_values=FILL)
    begin = tf.one_hot(axis, 3, dtype=tf.int32) * (shape[axis] + shift)
    return tf.slice(padded, begin, shape)

  return translate


def cutout_op(image, level, seed, hparams):
  """A grey square of half-side m / 10 * cutout_const pixels, clipped."""
  half = tf.cast(level / MAX_LEVEL * hparams.cutout_const, tf.int32)
  center = (
      tf.random.stateless_uniform([2], seed, 0, tf.int32.max, tf.int32)
      % tf.shape(image)[:2]
  )
  return cutout.cutout_at(image, center[0], center[1], 2 * half, FILL)


OPS: dict[str, Callable[..., tf.Tensor]] = {
    'Identity': identity,
    'AutoContrast': auto_contrast,
    'Equalize': equalize,
    'Invert': invert,
    'Rotate': rotate,
    'Solarize': solarize,
    'SolarizeAdd': solarize_add,
    'Posterize': posterize,
    'Color': color,
    'Contrast': contrast,
    'Brightness': brightness,
    'Sharpness': sharpness,
    'ShearX': _shear(True),
    'ShearY': _shear(False),
    'TranslateX': _translate(True),
    'TranslateY': _translate(False),
    'Cutout': cutout_op,
}


def apply_op(
    name: str, image, level: float, seed, hparams: Hparams = AUTOAUGMENT_HPARAMS
):
  """Applies operation `name` at magnitude `level` (for tests and figures)."""
  if name not in OPS:
    raise ValueError(
        f'autoaugment op must be one of {sorted(OPS)}, got ' f'{name!r}'
    )
  return OPS[name](image, tf.constant(level, tf.float32), seed, hparams)


def _switch_op(names, index, image, level, seed, hparams):
  """Runs OPS[names[index]]. One branch per distinct operation (not per
  sub-policy) keeps tracing and tf.data iterator start-up cheap."""
  branches = [
      functools.partial(OPS[name], image, level, seed, hparams)
      for name in names
  ]
  return tf.switch_case(index, branches)


def make_autoaugment(
    policy: str = 'cifar10', hparams: Hparams = AUTOAUGMENT_HPARAMS
):
  """Returns fn(image, seed) applying one random sub-policy of `policy`.

  Each call picks one of the policy's sub-policies uniformly, then applies
  its two operations in order, each with its own probability.

  Args:
    policy: a key of policies.POLICIES ('cifar10', 'svhn', 'imagenet').
    hparams: the magnitude constants.

  Returns:
    fn(image uint8 [H, W, C], seed int [2]) -> uint8 [H, W, C].
  """
  if policy not in policies.POLICIES:
    raise ValueError(
        f'autoaugment policy must be one of '
        f'{sorted(policies.POLICIES)}, got {policy!r}'
    )
  sub_policies = policies.POLICIES[policy]
  names = ['Identity'] + sorted(
      {op for sub in sub_policies for op, _, _ in sub} - {'Identity'}
  )
  op_table = tf.constant(
      [[names.index(op) for op, _, _ in sub] for sub in sub_policies], tf.int32
  )
  prob_table = tf.constant(
      [[p for _, p, _ in sub] for sub in sub_policies], tf.float32
  )
  level_table = tf.constant(
      [[m for _, _, m in sub] for sub in sub_policies], tf.float32
  )
  slots = len(sub_policies[0])

  @tf.autograph.experimental.do_not_convert
  def autoaugment(image, seed):
    draws = tf.random.stateless_uniform([1 + slots], seed)
    index = tf.minimum(
        tf.cast(draws[0] * len(sub_policies), tf.int32), len(sub_policies) - 1
    )
    for slot in range(slots):
      # A skipped operation becomes branch 0, the identity.
      op = tf.where(
          draws[1 + slot] < prob_table[index, slot], op_table[index, slot], 0
      )
      image = _switch_op(
          names,
          op,
          image,
          level_table[index, slot],
          tf.random.experimental.stateless_fold_in(seed, slot + 1),
          hparams,
      )
    return image

  return autoaugment


def make_randaugment(
    num_layers: int = 2,
    magnitude: float = 9.0,
    hparams: Hparams = RANDAUGMENT_HPARAMS,
):
  """Returns fn(image, seed) applying `num_layers` random ops at `magnitude`.

  Args:
    num_layers: N, the number of operations applied in sequence.
    magnitude: M in [0, 10], shared by every operation.
    hparams: the magnitude constants.

  Returns:
    fn(image uint8 [H, W, C], seed int [2]) -> uint8 [H, W, C].
  """
  if num_layers < 0:
    raise ValueError(f'randaugment num_layers must be >= 0, got {num_layers}')
  if not 0.0 <= magnitude <= MAX_LEVEL:
    raise ValueError(
        f'randaugment magnitude must be in [0, {MAX_LEVEL:g}], '
        f'got {magnitude}'
    )

  @tf.autograph.experimental.do_not_convert
  def randaugment(image, seed):
    level = tf.constant(magnitude, tf.float32)
    choices = tf.random.stateless_uniform(
        [num_layers], seed, 0, len(policies.RANDAUGMENT_OPS), tf.int32
    )
    for layer in range(num_layers):
      image = _switch_op(
          policies.RANDAUGMENT_OPS,
          choices[layer],
          image,
          level,
          tf.random.experimental.stateless_fold_in(seed, layer + 1),
          hparams,
      )
    return image

  return randaugment
