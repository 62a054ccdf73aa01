"""EfficientNet B0-B7 and L2 (Tan & Le, 2019; Xie et al., 2020).

MBConv blocks (1x1 expansion, depthwise conv, squeeze-excitation with ratio
0.25 of the block's input width, 1x1 projection, identity shortcut with
drop-connect when shapes allow), swish activations, BN momentum 0.99 and eps
1e-3. Widths and repeats follow the compound scaling rules; layer names mirror
Keras applications (`block2a`, `expand_conv`, `se_reduce`, ...) so that
models/keras_convert.py maps Keras weights one to one. With 1000 classes B0
has 5,288,548 and B7 66,347,960 parameters.

Input: float32 NHWC images normalised per channel with the ImageNet mean
(0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225) on the [0, 1] scale, which
is what Keras' EfficientNet computes internally from raw pixels with
`weights='imagenet'` (its Rescaling and Normalization layers are not part of
this model; see keras_convert.efficientnet_input_normalisation).

Variants, as (width coefficient, depth coefficient, resolution, dropout):

| name | width | depth | resolution | dropout |
|------|-------|-------|------------|---------|
| b0   | 1.0   | 1.0   | 224        | 0.2     |
| b1   | 1.0   | 1.1   | 240        | 0.2     |
| b2   | 1.1   | 1.2   | 260        | 0.3     |
| b3   | 1.2   | 1.4   | 300        | 0.3     |
| b4   | 1.4   | 1.8   | 380        | 0.4     |
| b5   | 1.6   | 2.2   | 456        | 0.4     |
| b6   | 1.8   | 2.6   | 528        | 0.5     |
| b7   | 2.0   | 3.1   | 600        | 0.5     |
| l2   | 4.3   | 5.3   | 800        | 0.5     |

The SAM paper finetunes B7 at 600 and L2 at 475 (`FINETUNE_RESOLUTION`).
Drop-connect rate 0.2, scaled linearly by block index, for every variant.
"""

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from models import layers

# name -> (width coefficient, depth coefficient, resolution, dropout rate).
VARIANTS = {
    'b0': (1.0, 1.0, 224, 0.2),
    'b1': (1.0, 1.1, 240, 0.2),
    'b2': (1.1, 1.2, 260, 0.3),
    'b3': (1.2, 1.4, 300, 0.3),
    'b4': (1.4, 1.8, 380, 0.4),
    'b5': (1.6, 2.2, 456, 0.4),
    'b6': (1.8, 2.6, 528, 0.5),
    'b7': (2.0, 3.1, 600, 0.5),
    'l2': (4.3, 5.3, 800, 0.5),
}
FINETUNE_RESOLUTION = {name: v[2] for name, v in VARIANTS.items()}
FINETUNE_RESOLUTION['l2'] = 475

# B0 stages: (kernel, repeats, input width, output width, expansion, stride).
BASE_STAGES = (
    (3, 1, 32, 16, 1, 1),
    (3, 2, 16, 24, 6, 2),
    (5, 2, 24, 40, 6, 2),
    (3, 3, 40, 80, 6, 2),
    (5, 3, 80, 112, 6, 1),
    (5, 4, 112, 192, 6, 2),
    (3, 1, 192, 320, 6, 1),
)
SE_RATIO = 0.25
DROP_CONNECT_RATE = 0.2

conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'truncated_normal')


def _batch_norm(train: bool, dtype: Any):
  """The reference's BatchNorm: momentum 0.99, epsilon 1e-3."""
  return layers.batch_norm(train, dtype, momentum=0.99, epsilon=1e-3)


# The reference initialiser uses fan-out = k * k * (kernel's last dim) on a
# TF depthwise kernel [k, k, C, 1]; on Flax's [k, k, 1, C] layout that is
# the fan-in.
depthwise_init = nn.initializers.variance_scaling(
    2.0, 'fan_in', 'truncated_normal'
)
dense_init = nn.initializers.variance_scaling(1 / 3, 'fan_out', 'uniform')


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
  """Scales a width by `width` and rounds it to a multiple of `divisor`."""
  filters *= width
  rounded = max(divisor, int(filters + divisor / 2) // divisor * divisor)
  if rounded < 0.9 * filters:  # Never round down by more than 10%.
    rounded += divisor
  return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
  """Scales a stage's number of blocks by `depth`, rounding up."""
  return int(math.ceil(depth * repeats))


class MBConv(nn.Module):
  """Inverted residual block with squeeze-excitation."""

  in_channels: int
  out_channels: int
  kernel: int
  stride: int
  expansion: int
  drop_connect_rate: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train):
    bn = _batch_norm(train, self.dtype)
    conv = layers.conv(self.dtype, kernel_init=conv_init)
    channels = self.in_channels * self.expansion
    y = x
    if self.expansion != 1:
      y = conv(channels, (1, 1), name='expand_conv')(y)
      y = nn.swish(bn(name='expand_bn')(y))
    y = layers.conv(self.dtype, kernel_init=depthwise_init)(
        channels,
        (self.kernel, self.kernel),
        (self.stride, self.stride),
        padding='SAME',
        feature_group_count=channels,
        name='dwconv',
    )(y)
    y = nn.swish(bn(name='bn')(y))
    squeezed = jnp.mean(y, axis=(1, 2))
    squeezed = nn.Dense(
        max(1, int(self.in_channels * SE_RATIO)),
        kernel_init=conv_init,
        dtype=self.dtype,
        name='se_reduce',
    )(squeezed)
    squeezed = nn.Dense(
        channels, kernel_init=conv_init, dtype=self.dtype, name='se_expand'
    )(nn.swish(squeezed))
    y = y * nn.sigmoid(squeezed)[:, None, None, :]
    y = conv(self.out_channels, (1, 1), name='project_conv')(y)
    y = bn(name='project_bn')(y)
    if self.stride == 1 and self.in_channels == self.out_channels:
      # Drop-connect: drop the whole branch of an example.
      y = nn.Dropout(
          self.drop_connect_rate,
          broadcast_dims=(1, 2, 3),
          deterministic=not train,
          name='drop',
      )(y)
      y = y + x
    return y


class EfficientNet(nn.Module):
  """EfficientNet of a named variant (see `VARIANTS`).

  Attributes:
    variant: 'b0'...'b7' or 'l2'.
    num_classes: size of the output layer.
    dtype: computation dtype (parameters stay float32).
    width: overrides the variant's width coefficient when > 0 (tests).
    depth: overrides the variant's depth coefficient when > 0 (tests).
  """

  variant: str = 'b0'
  num_classes: int = 1000
  dtype: Any = jnp.float32
  width: float = 0.0
  depth: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = True, ascent: bool = False):
    """Returns float32 logits; `ascent` is unused (dropout is not shaken)."""
    del ascent
    if self.variant not in VARIANTS:
      raise ValueError(
          f'EfficientNet variant must be one of {list(VARIANTS)},'
          f' got {self.variant!r}'
      )
    width, depth, _, dropout_rate = VARIANTS[self.variant]
    width = self.width or width
    depth = self.depth or depth
    bn = _batch_norm(train, self.dtype)
    conv = layers.conv(self.dtype, kernel_init=conv_init)
    x = conv(
        round_filters(32, width),
        (3, 3),
        (2, 2),
        padding='SAME',
        name='stem_conv',
    )(x.astype(self.dtype))
    x = nn.swish(bn(name='stem_bn')(x))
    total_blocks = sum(round_repeats(s[1], depth) for s in BASE_STAGES)
    index = 0
    for stage, (
        kernel,
        repeats,
        in_channels,
        out_channels,
        expansion,
        stride,
    ) in enumerate(BASE_STAGES):
      in_channels = round_filters(in_channels, width)
      out_channels = round_filters(out_channels, width)
      for block in range(round_repeats(repeats, depth)):
        x = MBConv(
            in_channels if block == 0 else out_channels,
            out_channels,
            kernel,
            stride if block == 0 else 1,
            expansion,
            drop_connect_rate=DROP_CONNECT_RATE * index / total_blocks,
            dtype=self.dtype,
            name=f'block{stage + 1}{chr(ord("a") + block)}',
        )(x, train)
        index += 1
    x = conv(round_filters(1280, width), (1, 1), name='top_conv')(x)
    x = nn.swish(bn(name='top_bn')(x))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(dropout_rate, deterministic=not train, name='top_dropout')(x)
    x = nn.Dense(
        self.num_classes, kernel_init=dense_init, dtype=self.dtype, name='head'
    )(x)
    return x.astype(jnp.promote_types(self.dtype, jnp.float32))
