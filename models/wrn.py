"""Wide-ResNet (Zagoruyko & Komodakis, 2016) as in the official SAM code.

Pre-activation blocks; the shortcut of a block that changes width is an average
pool (with the block's stride) followed by zero padding of the channels, so the
shortcut carries no parameters. WRN-28-10 with 100 classes has 36,278,324
parameters.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from models import layers


class BatchNormReLU(nn.Module):
  """BatchNorm (momentum 0.9, eps 1e-5) followed by ReLU."""

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train):
    return nn.relu(layers.batch_norm(train, self.dtype)()(x))


def _shortcut(x, out_channels, stride):
  """Parameter-free shortcut: average pool, then zero-pad the channels."""
  if x.shape[-1] == out_channels:
    return x
  x = nn.avg_pool(x, (stride, stride), (stride, stride))
  return jnp.pad(x, [(0, 0), (0, 0), (0, 0), (0, out_channels - x.shape[-1])])


class WideResNetBlock(nn.Module):
  """Pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-conv3x3."""

  channels: int
  stride: int = 1
  activate_before_residual: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train):
    conv = layers.conv(self.dtype, kernel_size=(3, 3), padding='SAME')
    if self.activate_before_residual:
      # The first block of the network shares its pre-activation with the
      # shortcut, as in the official code.
      x = BatchNormReLU(self.dtype, name='init_bn')(x, train)
      residual = x
    else:
      residual = BatchNormReLU(self.dtype, name='init_bn')(x, train)
    residual = conv(
        self.channels, strides=(self.stride, self.stride), name='conv1'
    )(residual)
    residual = BatchNormReLU(self.dtype, name='bn_2')(residual, train)
    residual = conv(self.channels, name='conv2')(residual)
    return residual + _shortcut(x, self.channels, self.stride)


class WideResNet(nn.Module):
  """WRN-depth-width for 32x32 (or smaller) images.

  Attributes:
    depth: total depth; (depth - 4) must be divisible by 6.
    width: channel multiplier k (widths 16k, 32k, 64k).
    num_classes: size of the output layer.
    dtype: computation dtype (parameters stay float32).
  """

  depth: int = 28
  width: int = 10
  num_classes: int = 10
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True, ascent: bool = False):
    """Returns logits; `ascent` is accepted for the model interface and unused
    here, since a WRN has no random regulariser."""
    del ascent
    if (self.depth - 4) % 6:
      raise ValueError(f'WRN depth must be 6n+4, got {self.depth}')
    blocks_per_group = (self.depth - 4) // 6
    x = layers.conv(self.dtype)(16, (3, 3), padding='SAME', name='init_conv')(
        x.astype(self.dtype)
    )
    for group, (channels, stride) in enumerate([(16, 1), (32, 2), (64, 2)]):
      for block in range(blocks_per_group):
        x = WideResNetBlock(
            channels * self.width,
            stride=stride if block == 0 else 1,
            activate_before_residual=(group == 0 and block == 0),
            dtype=self.dtype,
            name=f'group{group}_block{block}',
        )(x, train)
    x = BatchNormReLU(self.dtype, name='final_bn')(x, train)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(
        self.num_classes,
        kernel_init=layers.dense_init,
        dtype=self.dtype,
        name='head',
    )(x)
    return x.astype(jnp.promote_types(self.dtype, jnp.float32))
