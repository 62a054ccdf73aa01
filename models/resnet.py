"""ResNet v1 (He et al., 2016): bottleneck ImageNet nets and CIFAR ResNet-32.

ImageNet ResNets follow Keras applications' layout so that its weights convert
exactly (models/keras_convert.py): 7x7/2 conv-BN-ReLU stem, 3x3/2 max pool,
four stages of bottleneck blocks (1x1, 3x3, 1x1 x4) whose first block has a
1x1 conv + BN projection shortcut, global average pooling and the head. Convs
carry no biases (a converter folds Keras' conv biases into the BN), giving the
torchvision counts with 1000 classes: ResNet-50 25,557,032, ResNet-101
44,549,160, ResNet-152 60,192,808 parameters. The stride of a block sits on
its first 1x1 conv as in the original paper and Keras; `stride_in_1x1=False`
moves it to the 3x3 conv ("v1.5", same parameter count). BN uses Keras'
epsilon 1.001e-5.

The CIFAR ResNet (`CifarResNet`, depth 6n+2, e.g. ResNet-32 for the label
noise experiments) uses post-activation basic blocks with widths 16/32/64 and
the parameter-free shortcut of the paper's option A (strided subsampling and
zero channel padding).
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from models.wrn import conv_init
from models.wrn import dense_init

STAGE_SIZES = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
KERAS_BN_EPSILON = 1.001e-5


class BottleneckBlock(nn.Module):
  """ResNet v1 bottleneck block; output width 4 * `channels`."""

  channels: int
  stride: int = 1
  stride_in_1x1: bool = True
  zero_init_last_bn: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train):
    conv = functools.partial(
        nn.Conv, use_bias=False, kernel_init=conv_init, dtype=self.dtype
    )
    bn = functools.partial(
        nn.BatchNorm,
        use_running_average=not train,
        momentum=0.9,
        epsilon=KERAS_BN_EPSILON,
        dtype=self.dtype,
    )
    strides = (self.stride, self.stride)
    shortcut = x
    if self.stride != 1 or x.shape[-1] != 4 * self.channels:
      shortcut = conv(
          4 * self.channels,
          (1, 1),
          strides,
          padding='VALID',
          name='shortcut_conv',
      )(x)
      shortcut = bn(name='shortcut_bn')(shortcut)
    y = conv(
        self.channels,
        (1, 1),
        strides if self.stride_in_1x1 else (1, 1),
        padding='VALID',
        name='conv_1',
    )(x)
    y = nn.relu(bn(name='bn_1')(y))
    y = conv(
        self.channels,
        (3, 3),
        (1, 1) if self.stride_in_1x1 else strides,
        padding=[(1, 1), (1, 1)],
        name='conv_2',
    )(y)
    y = nn.relu(bn(name='bn_2')(y))
    y = conv(4 * self.channels, (1, 1), padding='VALID', name='conv_3')(y)
    last_scale_init = (
        nn.initializers.zeros
        if self.zero_init_last_bn
        else nn.initializers.ones
    )
    y = bn(scale_init=last_scale_init, name='bn_3')(y)
    return nn.relu(shortcut + y)


class ResNet(nn.Module):
  """ImageNet ResNet v1 with bottleneck blocks.

  Attributes:
    stage_sizes: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
    width: channels of the first stage's bottleneck (doubles per stage).
    stride_in_1x1: stride on the first 1x1 conv (True, Keras) or the 3x3.
    zero_init_last_bn: initialise each block's last BN scale to zero.
    num_classes: size of the output layer.
    dtype: computation dtype (parameters stay float32).
  """

  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  stride_in_1x1: bool = True
  zero_init_last_bn: bool = False
  num_classes: int = 1000
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True, ascent: bool = False):
    """Returns float32 logits; `ascent` is unused (no random regulariser)."""
    del ascent
    x = nn.Conv(
        self.width,
        (7, 7),
        (2, 2),
        padding=[(3, 3), (3, 3)],
        use_bias=False,
        kernel_init=conv_init,
        dtype=self.dtype,
        name='conv1',
    )(x.astype(self.dtype))
    x = nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=KERAS_BN_EPSILON,
        dtype=self.dtype,
        name='bn1',
    )(x)
    x = nn.relu(x)
    x = nn.max_pool(x, (3, 3), (2, 2), padding=[(1, 1), (1, 1)])
    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        x = BottleneckBlock(
            self.width * 2**stage,
            stride=2 if stage > 0 and block == 0 else 1,
            stride_in_1x1=self.stride_in_1x1,
            zero_init_last_bn=self.zero_init_last_bn,
            dtype=self.dtype,
            name=f'stage{stage}_block{block}',
        )(x, train)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(
        self.num_classes, kernel_init=dense_init, dtype=self.dtype, name='head'
    )(x)
    return x.astype(jnp.float32)


class BasicBlock(nn.Module):
  """Post-activation basic block with the parameter-free option-A shortcut."""

  channels: int
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train):
    conv = functools.partial(
        nn.Conv,
        self.channels,
        (3, 3),
        padding='SAME',
        use_bias=False,
        kernel_init=conv_init,
        dtype=self.dtype,
    )
    bn = functools.partial(
        nn.BatchNorm,
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        dtype=self.dtype,
    )
    y = conv(strides=(self.stride, self.stride), name='conv_1')(x)
    y = nn.relu(bn(name='bn_1')(y))
    y = conv(name='conv_2')(y)
    y = bn(name='bn_2')(y)
    shortcut = x[:, :: self.stride, :: self.stride, :]
    shortcut = jnp.pad(
        shortcut, [(0, 0), (0, 0), (0, 0), (0, self.channels - x.shape[-1])]
    )
    return nn.relu(shortcut + y)


class CifarResNet(nn.Module):
  """ResNet-depth for 32x32 images (He et al., 2016, Section 4.2).

  Attributes:
    depth: total depth; (depth - 2) must be divisible by 6 (32: 5 per stage).
    width: channels of the first stage (16 in the paper).
    num_classes: size of the output layer.
    dtype: computation dtype (parameters stay float32).
  """

  depth: int = 32
  width: int = 16
  num_classes: int = 10
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True, ascent: bool = False):
    """Returns float32 logits; `ascent` is unused (no random regulariser)."""
    del ascent
    if (self.depth - 2) % 6:
      raise ValueError(f'CIFAR ResNet depth must be 6n+2, got {self.depth}')
    blocks_per_stage = (self.depth - 2) // 6
    x = nn.Conv(
        self.width,
        (3, 3),
        padding='SAME',
        use_bias=False,
        kernel_init=conv_init,
        dtype=self.dtype,
        name='init_conv',
    )(x.astype(self.dtype))
    x = nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        dtype=self.dtype,
        name='init_bn',
    )(x)
    x = nn.relu(x)
    for stage in range(3):
      for block in range(blocks_per_stage):
        x = BasicBlock(
            self.width * 2**stage,
            stride=2 if stage > 0 and block == 0 else 1,
            dtype=self.dtype,
            name=f'stage{stage}_block{block}',
        )(x, train)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(
        self.num_classes, kernel_init=dense_init, dtype=self.dtype, name='head'
    )(x)
    return x.astype(jnp.float32)
