"""AutoAugment (Cubuk et al., 2018) and RandAugment (Cubuk et al., 2019).

The published policies are data: 25 sub-policies of two (operation,
probability, magnitude) triples each, for CIFAR-10, SVHN and ImageNet, as
printed in the AutoAugment paper's appendix. Magnitudes of AutoContrast,
Equalize and Invert are kept as printed and ignored, as in the original code.

Magnitudes follow the semantics the policies were searched under (the
authors' released CIFAR code): level m in [0, 10] maps to m / 10 of the
paper's range; shear, translate and rotate take a random sign; the four
enhance operations use the unsigned factor 0.1 + 1.8 m / 10 (so m = 5 is the
identity). Two deliberate departures: posterize keeps 8 - 4 m / 10 bits (the
paper's [4, 8] range; the released code kept 4 - 4 m / 10 bits, a known bug),
and geometric magnitudes scale with the image: translations move by
m / 10 * translate_fraction * side (10/32 by default, the released code's 10
pixels on 32; ImageNet's 150/331 for RandAugment), so a 32-pixel image moves
by at most 10 pixels and never goes blank. SamplePairing, which needs a second
image and appears in no published policy, is not implemented.

Every transform is `fn(image uint8 [H, W, C], seed int [2]) -> uint8 [H, W, C]`
from stateless random ops; C may be 1 (Color is then the identity).
"""

import functools
import math
from typing import Callable

import tensorflow as tf

from data import cutout
from data import policies

MAX_LEVEL = 10.0
FILL = 128  # Grey for pixels that geometric operations move in.
CIFAR_TRANSLATE_FRACTION = 10 / 32
IMAGENET_TRANSLATE_FRACTION = 150 / 331
CUTOUT_FRACTION = 20 / 32  # The released code's 20-pixel cutout on 32.


def _random_sign(seed) -> tf.Tensor:
  return tf.where(tf.random.stateless_uniform([], seed) < 0.5, -1.0, 1.0)


def _blend(degenerate, image, factor: float) -> tf.Tensor:
  """degenerate + factor * (image - degenerate), clipped; PIL's enhance."""
  degenerate = tf.cast(degenerate, tf.float32)
  mixed = degenerate + factor * (tf.cast(image, tf.float32) - degenerate)
  return tf.cast(tf.clip_by_value(tf.round(mixed), 0.0, 255.0), tf.uint8)


def _grayscale(image) -> tf.Tensor:
  """Float32 luma (ITU-R 601, PIL's 'L') repeated in every channel; one
  matmul, since broadcasting ops are slow on small images."""
  channels = image.shape[-1]
  x = tf.cast(image, tf.float32)
  if channels == 1:
    return x
  weights = tf.tile(tf.constant([[0.299], [0.587], [0.114]]), [1, channels])
  return tf.reshape(
      tf.matmul(tf.reshape(x, [-1, channels]), weights), tf.shape(x)
  )


def _affine(image, row) -> tf.Tensor:
  """Output (x, y) reads input (a0 x + a1 y + a2, b0 x + b1 y + b2), with
  row = [a0, a1, a2, b0, b1, b2] (PIL's convention); nearest neighbour as in
  the released code, FILL outside the image."""
  transform = tf.concat([tf.cast(tf.stack(row), tf.float32), [0.0, 0.0]], 0)
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None],
      transforms=transform[None],
      output_shape=tf.shape(image)[:2],
      fill_value=float(FILL),
      interpolation='NEAREST',
      fill_mode='CONSTANT',
  )[0]


# Every operation is op(image, level, seed, translate_fraction) -> image, with
# `level` a float32 scalar tensor in [0, 10], so that one graph serves every
# magnitude of a policy table.


def identity(image, level, seed, translate_fraction):
  del level, seed, translate_fraction
  return image


def auto_contrast(image, level, seed, translate_fraction):
  """Stretches each channel to span [0, 255]; flat channels stay as is."""
  del level, seed, translate_fraction
  x = tf.cast(image, tf.float32)
  low = tf.reduce_min(x, axis=[0, 1])
  high = tf.reduce_max(x, axis=[0, 1])
  scale = tf.where(high > low, 255.0 / tf.maximum(high - low, 1.0), 1.0)
  offset = tf.where(high > low, low, 0.0)
  return tf.cast(
      tf.clip_by_value(tf.round((x - offset) * scale), 0, 255), tf.uint8
  )


def equalize(image, level, seed, translate_fraction):
  """Per-channel histogram equalisation with PIL's lookup table."""
  del level, seed, translate_fraction
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


def invert(image, level, seed, translate_fraction):
  del level, seed, translate_fraction
  return 255 - image


def rotate(image, level, seed, translate_fraction):
  """Rotates about the centre by up to 30 degrees, random direction."""
  del translate_fraction
  angle = _random_sign(seed) * level / MAX_LEVEL * (30.0 * math.pi / 180.0)
  height = tf.cast(tf.shape(image)[0], tf.float32)
  width = tf.cast(tf.shape(image)[1], tf.float32)
  cy, cx = (height - 1.0) / 2.0, (width - 1.0) / 2.0
  cos, sin = tf.cos(angle), tf.sin(angle)
  return _affine(
      image,
      [cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy],
  )


def solarize(image, level, seed, translate_fraction):
  """Inverts pixels at or above 256 - 256 m / 10."""
  del seed, translate_fraction
  threshold = 256 - tf.cast(tf.floor(level * 256.0 / MAX_LEVEL), tf.int32)
  # x ^ 255 == 255 - x on uint8; XOR with a 0/255 mask avoids tf.where,
  # which is several times slower on small images.
  flip = tf.cast(tf.cast(image, tf.int32) >= threshold, tf.uint8) * 255
  return tf.bitwise.bitwise_xor(image, flip)


def posterize(image, level, seed, translate_fraction):
  """Keeps the top 8 - 4 m / 10 bits of every pixel."""
  del seed, translate_fraction
  shift = tf.cast(tf.floor(level * 4.0 / MAX_LEVEL), tf.uint8)
  return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def _enhance_factor(level):
  return 0.1 + 1.8 * level / MAX_LEVEL


def color(image, level, seed, translate_fraction):
  """Saturation: blends with the greyscale image."""
  del seed, translate_fraction
  return _blend(tf.round(_grayscale(image)), image, _enhance_factor(level))


def contrast(image, level, seed, translate_fraction):
  """Blends with a flat image at the mean grey level."""
  del seed, translate_fraction
  mean = tf.round(tf.reduce_mean(_grayscale(image)))
  return _blend(tf.fill(tf.shape(image), mean), image, _enhance_factor(level))


def brightness(image, level, seed, translate_fraction):
  del seed, translate_fraction
  return _blend(tf.zeros_like(image), image, _enhance_factor(level))


def sharpness(image, level, seed, translate_fraction):
  """Blends with PIL's 3x3 smoothed image (border pixels left unsmoothed)."""
  del seed, translate_fraction
  # The kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 as nine shifted
  # slices: three times faster than a depthwise convolution at 32x32.
  x = tf.cast(image, tf.float32)
  ends = (-2, -1, None)
  neighbours = [
      x[dy : ends[dy], dx : ends[dx]] for dy in range(3) for dx in range(3)
  ]
  smooth = (tf.add_n(neighbours) + 4.0 * x[1:-1, 1:-1]) / 13.0
  # Replace the interior by the smoothed values; the border keeps x.
  degenerate = x + tf.pad(
      tf.round(smooth) - x[1:-1, 1:-1], [[1, 1], [1, 1], [0, 0]]
  )
  return _blend(degenerate, image, _enhance_factor(level))


def _shear(horizontal: bool):
  def shear(image, level, seed, translate_fraction):
    del translate_fraction
    amount = _random_sign(seed) * level / MAX_LEVEL * 0.3
    return _affine(
        image,
        [1.0, amount, 0.0, 0.0, 1.0, 0.0]
        if horizontal
        else [1.0, 0.0, 0.0, amount, 1.0, 0.0],
    )

  return shear


def _translate_pixels(level, side, translate_fraction, seed):
  """Whole pixels, m / 10 of the largest shift, with a random sign."""
  largest = tf.cast(side, tf.float32) * translate_fraction
  return _random_sign(seed) * tf.floor(level / MAX_LEVEL * largest)


def _translate(horizontal: bool):
  """Output pixel i reads input i + shift (pad and slice: cheaper than an
  affine transform, and the same for whole-pixel shifts)."""
  axis = 1 if horizontal else 0

  def translate(image, level, seed, translate_fraction):
    shape = tf.shape(image)
    shift = tf.cast(
        _translate_pixels(level, shape[axis], translate_fraction, seed),
        tf.int32,
    )
    shift = tf.clip_by_value(shift, -shape[axis], shape[axis])
    paddings = [[0, 0], [0, 0], [0, 0]]
    paddings[axis] = [shape[axis], shape[axis]]
    padded = tf.pad(image, paddings, constant_values=FILL)
    begin = tf.one_hot(axis, 3, dtype=tf.int32) * (shape[axis] + shift)
    return tf.slice(padded, begin, shape)

  return translate


def cutout_op(image, level, seed, translate_fraction):
  """A grey square of side m / 10 * 20/32 of the shorter side."""
  del translate_fraction
  side = tf.cast(tf.reduce_min(tf.shape(image)[:2]), tf.float32)
  size = tf.cast(level / MAX_LEVEL * CUTOUT_FRACTION * side, tf.int32)
  center = (
      tf.random.stateless_uniform([2], seed, 0, tf.int32.max, tf.int32)
      % tf.shape(image)[:2]
  )
  return cutout.cutout_at(image, center[0], center[1], size, FILL)


OPS: dict[str, Callable[..., tf.Tensor]] = {
    'Identity': identity,
    'AutoContrast': auto_contrast,
    'Equalize': equalize,
    'Invert': invert,
    'Rotate': rotate,
    'Solarize': solarize,
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
    name: str,
    image,
    level: float,
    seed,
    translate_fraction: float = CIFAR_TRANSLATE_FRACTION,
):
  """Applies operation `name` at magnitude `level` (for tests and figures)."""
  if name not in OPS:
    raise ValueError(
        f'autoaugment op must be one of {sorted(OPS)}, got ' f'{name!r}'
    )
  return OPS[name](
      image, tf.constant(level, tf.float32), seed, translate_fraction
  )


def _switch_op(names, index, image, level, seed, translate_fraction):
  """Runs OPS[names[index]]. One branch per distinct operation (not per
  sub-policy) keeps tracing and tf.data iterator start-up cheap."""
  branches = [
      functools.partial(OPS[name], image, level, seed, translate_fraction)
      for name in names
  ]
  return tf.switch_case(index, branches)


def make_autoaugment(
    policy: str = 'cifar10', translate_fraction: float | None = None
):
  """Returns fn(image, seed) applying one random sub-policy of `policy`.

  Each call picks one of the 25 sub-policies uniformly, then applies its two
  operations in order, each with its own probability.

  Args:
    policy: 'cifar10', 'svhn' or 'imagenet'.
    translate_fraction: largest translation as a fraction of the side; None
      takes the policy's own (150/331 for ImageNet, else 10/32).

  Returns:
    fn(image uint8 [H, W, C], seed int [2]) -> uint8 [H, W, C].
  """
  if policy not in policies.POLICIES:
    raise ValueError(
        f'autoaugment policy must be one of {sorted(policies.POLICIES)}, '
        f'got {policy!r}'
    )
  if translate_fraction is None:
    translate_fraction = (
        IMAGENET_TRANSLATE_FRACTION
        if policy == 'imagenet'
        else CIFAR_TRANSLATE_FRACTION
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
          translate_fraction,
      )
    return image

  return autoaugment


def make_randaugment(
    num_layers: int = 2,
    magnitude: float = 9.0,
    translate_fraction: float = IMAGENET_TRANSLATE_FRACTION,
):
  """Returns fn(image, seed) applying `num_layers` random ops at `magnitude`.

  Args:
    num_layers: N, the number of operations applied in sequence.
    magnitude: M in [0, 10], shared by every operation.
    translate_fraction: largest translation as a fraction of the side.

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
          translate_fraction,
      )
    return image

  return randaugment
