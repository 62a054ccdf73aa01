"""ResNet (He et al., 2016): bottleneck ImageNet nets and CIFAR ResNet-32.

ImageNet ResNets: a 7x7/2 conv-BN stem, 3x3/2 max pool, four stages of
bottleneck blocks (1x1, 3x3, 1x1 x4) whose first block has a 1x1 conv + BN
projection shortcut, global average pooling and the head. Convs carry no
biases, giving the torchvision counts with 1000 classes: ResNet-50
25,557,032, ResNet-101 44,549,160, ResNet-152 60,192,808 parameters. Two
layouts (`LAYOUTS`):

* 'sam', the official SAM code's (sam_jax/imagenet_models/resnet.py, a fork
  of the 2020 Flax ImageNet example), which produced Table 2: the stride of
  a block on its 3x3 conv ("v1.5"), padded SAME (on even inputs (0, 1),
  TensorFlow's way), each block's last BN scale initialised to zero, BN
  epsilon 1e-5, Flax's default (LeCun normal) kernels, a SAME max pool, and
  no ReLU after the stem's BN. The missing ReLU is a bug of
  that example; it is kept because it produced the paper's numbers.
* 'keras', Keras applications' (models/keras_convert.py converts its
  weights exactly): the stride on the first 1x1 conv, a ReLU after the stem,
  BN epsilon 1.001e-5, the max pool padded by 1.

The CIFAR ResNet (`CifarResNet`, depth 6n+2, e.g. ResNet-32 for the label
noise experiments) uses post-activation basic blocks with widths 16/32/64 and
the parameter-free shortcut of the paper's option A (strided subsampling and
zero channel padding); it has no counterpart in the official code and takes
the CIFAR models' initialisers (models/layers.py).
"""

from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax.numpy as jnp

from models import layers

STAGE_SIZES = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}


class Layout(NamedTuple):
  """The details in which ImageNet ResNet implementations differ."""

  stride_in_1x1: bool
  zero_init_last_bn: bool
  bn_epsilon: float
  stem_relu: bool
  pool_padding: Any
  kernel_init: Callable[..., Any]
  head_init: Callable[..., Any]


LAYOUTS = {
    'sam': Layout(
        stride_in_1x1=False,
        zero_init_last_bn=True,
        bn_epsilon=1e-5,
        stem_relu=False,
        pool_padding='SAME',
        kernel_init=nn.initializers.lecun_normal(),
        head_init=nn.initializers.lecun_normal(),
    ),
    'keras': Layout(
        stride_in_1x1=True,
        zero_init_last_bn=False,
        bn_epsilon=1.001e-5,
        stem_relu=True,
        pool_padding=((1, 1), (1, 1)),
        kernel_init=layers.conv_init,
        head_init=layers.dense_init,
    ),
}


class BottleneckBlock(nn.Module):
  """ResNet bottleneck block; output width 4 * `channels`."""

  channels: int
  stride: int = 1
  layout: str = 'sam'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train):
    layout = LAYOUTS[self.layout]
    conv = layers.conv(self.dtype, kernel_init=layout.kernel_init)
    bn = layers.batch_norm(train, self.dtype, epsilon=layout.bn_epsilon)
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
    first, middle = (
        (strides, (1, 1)) if layout.stride_in_1x1 else ((1, 1), strides)
    )
    y = conv(self.channels, (1, 1), first, padding='VALID', name='conv_1')(x)
    y = nn.relu(bn(name='bn_1')(y))
    # SAME, as the official code (flax's default) and Keras (whose 3x3 has
    # stride 1, where SAME is (1, 1)). With stride 2 on an even input SAME
    # pads (0, 1), so the taps sit one pixel further on than with (1, 1).
    y = conv(self.channels, (3, 3), middle, padding='SAME', name='conv_2')(y)
    y = nn.relu(bn(name='bn_2')(y))
    y = conv(4 * self.channels, (1, 1), padding='VALID', name='conv_3')(y)
    last_scale_init = (
        nn.initializers.zeros
        if layout.zero_init_last_bn
        else nn.initializers.ones
    )
    y = bn(scale_init=last_scale_init, name='bn_3')(y)
    return nn.relu(shortcut + y)


class ResNet(nn.Module):
  """ImageNet ResNet with bottleneck blocks.

  Attributes:
    stage_sizes: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
    width: channels of the first stage's bottleneck (doubles per stage).
    layout: a key of LAYOUTS: 'sam' (the official SAM code's) or 'keras'.
    num_classes: size of the output layer.
    dtype: computation dtype (parameters stay float32).
  """

  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  layout: str = 'sam'
  num_classes: int = 1000
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True, ascent: bool = False):
    """Returns float32 logits; `ascent` is unused (no random regulariser)."""
    del ascent
    layout = LAYOUTS[self.layout]
    x = layers.conv(self.dtype, kernel_init=layout.kernel_init)(
        self.width, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name='conv1'
    )(x.astype(self.dtype))
    x = layers.batch_norm(train, self.dtype, epsilon=layout.bn_epsilon)(
        name='bn1'
    )(x)
    if layout.stem_relu:
      x = nn.relu(x)
    x = nn.max_pool(x, (3, 3), (2, 2), padding=layout.pool_padding)
    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        x = BottleneckBlock(
            self.width * 2**stage,
            stride=2 if stage > 0 and block == 0 else 1,
            layout=self.layout,
            dtype=self.dtype,
            name=f'stage{stage}_block{block}',
        )(x, train)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(
        self.num_classes,
        kernel_init=layout.head_init,
        dtype=self.dtype,
        name='head',
    )(x)
    return x.astype(jnp.promote_types(self.dtype, jnp.float32))


class BasicBlock(nn.Module):
  """Post-activation basic block with the parameter-free option-A shortcut."""

  channels: int
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train):
    conv = layers.conv(
        self.dtype, features=self.channels, kernel_size=(3, 3), padding='SAME'
    )
    bn = layers.batch_norm(train, self.dtype)
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
    x = layers.conv(self.dtype)(
        self.width, (3, 3), padding='SAME', name='init_conv'
    )(x.astype(self.dtype))
    x = layers.batch_norm(train, self.dtype)(name='init_bn')(x)
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
        self.num_classes,
        kernel_init=layers.dense_init,
        dtype=self.dtype,
        name='head',
    )(x)
    return x.astype(jnp.promote_types(self.dtype, jnp.float32))
