"""Shake-Shake regularised Wide-ResNet (Gastaldi, 2017), as in the SAM code.

The layout follows the widely used AutoAugment/SAM benchmark model "26 2x96d":
an initial 3x3 conv + BN, three groups of (depth - 2) / 6 two-branch blocks with
widths 16k, 32k, 64k (k = 6 gives 96, 192, 384), then ReLU, global average
pooling and the head. Each branch is ReLU-conv3x3-BN-ReLU-conv3x3-BN. A block
that changes width uses Gastaldi's shortcut: two 1x1 convs of half the width,
one on the strided input and one on the input shifted by one pixel, then BN.
Shake-Shake 26 2x96d with 100 classes has 26,227,572 parameters.

The two branches are mixed per example: `alpha * a + (1 - alpha) * b` with
alpha ~ U(0, 1) in training and alpha = 0.5 in evaluation. In a normal
(descent) pass the backward pass uses an independent coefficient beta ~ U(0, 1)
("Shake-Shake-Image" of Gastaldi); in the SAM ascent pass (`ascent=True`) the
gradient is the true gradient of the sampled network, i.e. through alpha.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import layers


def shake_shake(a, b, rng, true_gradient: bool):
  """Mixes two branches with per-example random coefficients.

  Args:
    a: first branch, [N, ...].
    b: second branch, same shape as `a`.
    rng: PRNG key (the `shake` collection); the forward and backward
      coefficients are split from it.
    true_gradient: if True, backpropagate through the forward coefficient;
      otherwise the backward pass sees an independent coefficient.

  Returns:
    `alpha * a + (1 - alpha) * b` in value, alpha ~ U(0, 1) per example.
  """
  forward_key, backward_key = jax.random.split(rng)
  shape = (a.shape[0],) + (1,) * (a.ndim - 1)
  alpha = jax.random.uniform(forward_key, shape, a.dtype)
  mixed = alpha * a + (1 - alpha) * b
  if true_gradient:
    return mixed
  beta = jax.random.uniform(backward_key, shape, a.dtype)
  mixed_backward = beta * a + (1 - beta) * b
  # Value of `mixed`, gradient of `mixed_backward`.
  return mixed_backward + jax.lax.stop_gradient(mixed - mixed_backward)


class GastaldiShortcut(nn.Module):
  """Identity, or for a width change two offset 1x1 convs of half width + BN."""

  channels: int
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train):
    if x.shape[-1] == self.channels:
      return x
    conv = layers.conv(
        self.dtype, features=self.channels // 2, kernel_size=(1, 1)
    )
    s = self.stride
    path1 = conv(name='conv_path1')(x[:, ::s, ::s, :])
    # The second path sees the image shifted by one pixel right and down, so
    # the strided sampling covers the pixels the first path skips.
    shifted = jnp.pad(x, [(0, 0), (0, 1), (0, 1), (0, 0)])[:, 1:, 1:, :]
    path2 = conv(name='conv_path2')(shifted[:, ::s, ::s, :])
    x = jnp.concatenate([path1, path2], axis=-1)
    return layers.batch_norm(train, self.dtype)(name='bn')(x)


class ShakeShakeBlock(nn.Module):
  """Two ReLU-conv-BN-ReLU-conv-BN branches mixed by shake-shake."""

  channels: int
  stride: int = 1
  dtype: Any = jnp.float32

  def _branch(self, x, train, name):
    conv = layers.conv(
        self.dtype, features=self.channels, kernel_size=(3, 3), padding='SAME'
    )
    bn = layers.batch_norm(train, self.dtype)
    y = nn.relu(x)
    y = conv(strides=(self.stride, self.stride), name=f'conv_{name}_1')(y)
    y = nn.relu(bn(name=f'bn_{name}_1')(y))
    y = conv(name=f'conv_{name}_2')(y)
    return bn(name=f'bn_{name}_2')(y)

  @nn.compact
  def __call__(self, x, train, ascent=False):
    a = self._branch(x, train, 'a')
    b = self._branch(x, train, 'b')
    if train and not self.is_initializing():
      mixed = shake_shake(a, b, self.make_rng('shake'), true_gradient=ascent)
    else:
      mixed = 0.5 * (a + b)
    shortcut = GastaldiShortcut(
        self.channels, self.stride, self.dtype, name='shortcut'
    )(x, train)
    return shortcut + mixed


class ShakeShake(nn.Module):
  """Wide-ResNet-depth 2x(16*width)d with Shake-Shake regularisation.

  Attributes:
    depth: total depth; (depth - 2) must be divisible by 6 (26 in the paper).
    width: channel multiplier k; the first group has 16k channels per branch
      (k = 6 is "2x96d").
    num_classes: size of the output layer.
    dtype: computation dtype (parameters stay float32).
  """

  depth: int = 26
  width: int = 6
  num_classes: int = 10
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True, ascent: bool = False):
    """Returns float32 logits; `ascent` selects the true gradient."""
    if (self.depth - 2) % 6:
      raise ValueError(f'Shake-Shake depth must be 6n+2, got {self.depth}')
    blocks_per_group = (self.depth - 2) // 6
    x = layers.conv(self.dtype)(16, (3, 3), padding='SAME', name='init_conv')(
        x.astype(self.dtype)
    )
    x = layers.batch_norm(train, self.dtype)(name='init_bn')(x)
    for group, (channels, stride) in enumerate([(16, 1), (32, 2), (64, 2)]):
      for block in range(blocks_per_group):
        x = ShakeShakeBlock(
            channels * self.width,
            stride=stride if block == 0 else 1,
            dtype=self.dtype,
            name=f'group{group}_block{block}',
        )(x, train, ascent)
    x = nn.relu(x)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(
        self.num_classes,
        kernel_init=layers.dense_init,
        dtype=self.dtype,
        name='head',
    )(x)
    return x.astype(jnp.promote_types(self.dtype, jnp.float32))
