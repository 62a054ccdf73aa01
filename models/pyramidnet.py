"""PyramidNet (Han et al., 2017) with optional ShakeDrop (Yamada et al., 2018).

Bottleneck PyramidNet as in the SAM code: an initial 3x3 conv + BN, three
groups of (depth - 2) / 9 bottleneck blocks whose width grows linearly by
alpha / (total blocks) per block (rounded), BN-ReLU, global average pooling and
the head. A block is BN-conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1(4x)-BN, every
BN scale initialised to one as in the official code (no zero-init of the last
BN); its shortcut is a 2x2 average pool when the
block strides, then zero padding of the channels, so it carries no
parameters. PyramidNet-272 (alpha 200) with 100 classes has 26,288,692
parameters, with or without ShakeDrop (ShakeDrop has no parameters).

ShakeDrop scales the residual branch per example by `b + alpha - b * alpha`,
b ~ Bernoulli(p_l) and alpha ~ U(-1, 1), where the keep probability p_l
decays linearly from 1 to 0.5 at the last block; evaluation uses the
expectation `p_l + E[alpha] - p_l * E[alpha]`. In a descent pass the backward
pass uses `b + beta - b * beta` with an independent beta ~ U(0, 1); in the
SAM ascent pass (`ascent=True`) it backpropagates through the coefficient of
the forward pass.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import layers

ALPHA_RANGE = (-1.0, 1.0)
BETA_RANGE = (0.0, 1.0)
FINAL_KEEP_PROBABILITY = 0.5


def keep_probability(index: int, total_blocks: int) -> float:
  """ShakeDrop keep probability of block `index` (0-based): linear decay
  from 1 (before the first block) to FINAL_KEEP_PROBABILITY at the last."""
  return 1.0 - (1.0 - FINAL_KEEP_PROBABILITY) * (index + 1) / total_blocks


def shake_drop(
    x, gate_rng, shake_rng, keep_probability: float, true_gradient: bool
):
  """Scales `x` per example by a random ShakeDrop coefficient.

  Args:
    x: residual branch, [N, ...].
    gate_rng: PRNG key of the Bernoulli gate b (the `dropout` collection:
      redrawn in each SAM pass under the official recipe, models/__init__.py).
    shake_rng: PRNG key of the forward and backward coefficients (the
      `shake` collection: the same in both passes).
    keep_probability: probability that the branch is kept unchanged.
    true_gradient: if True, backpropagate through the forward coefficient;
      otherwise the backward pass sees an independent one.

  Returns:
    `x * (b + alpha - b * alpha)` in value.
  """
  alpha_key, beta_key = jax.random.split(shake_rng)
  shape = (x.shape[0],) + (1,) * (x.ndim - 1)
  gate = jax.random.bernoulli(gate_rng, keep_probability, shape).astype(x.dtype)
  alpha = jax.random.uniform(alpha_key, shape, x.dtype, *ALPHA_RANGE)
  forward = x * (gate + alpha - gate * alpha)
  if true_gradient:
    return forward
  beta = jax.random.uniform(beta_key, shape, x.dtype, *BETA_RANGE)
  backward = x * (gate + beta - gate * beta)
  # Value of `forward`, gradient of `backward`.
  return backward + jax.lax.stop_gradient(forward - backward)


def shake_drop_expectation(x, keep_probability: float):
  """The evaluation-time ShakeDrop: `x` times the expected coefficient."""
  mean_alpha = sum(ALPHA_RANGE) / 2
  return x * (keep_probability + mean_alpha - keep_probability * mean_alpha)


class BottleneckBlock(nn.Module):
  """PyramidNet bottleneck block with an optional ShakeDrop on its branch."""

  channels: int
  stride: int = 1
  keep_probability: float = 1.0
  shake_drop: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train, ascent=False):
    conv = layers.conv(self.dtype, padding='SAME')
    bn = layers.batch_norm(train, self.dtype)
    y = bn(name='bn_1')(x)
    y = conv(self.channels, (1, 1), name='conv_1')(y)
    y = nn.relu(bn(name='bn_2')(y))
    y = conv(
        self.channels, (3, 3), strides=(self.stride, self.stride), name='conv_2'
    )(y)
    y = nn.relu(bn(name='bn_3')(y))
    y = conv(self.channels * 4, (1, 1), name='conv_3')(y)
    y = bn(name='bn_4')(y)
    if self.shake_drop:
      if train and not self.is_initializing():
        y = shake_drop(
            y,
            self.make_rng('dropout'),
            self.make_rng('shake'),
            self.keep_probability,
            true_gradient=ascent,
        )
      else:
        y = shake_drop_expectation(y, self.keep_probability)
    if self.stride != 1:
      x = nn.avg_pool(x, (2, 2), (2, 2), padding='SAME')
    return y + jnp.pad(
        x, [(0, 0), (0, 0), (0, 0), (0, y.shape[-1] - x.shape[-1])]
    )


class PyramidNet(nn.Module):
  """Bottleneck PyramidNet-depth with widening factor alpha.

  Attributes:
    depth: total depth; (depth - 2) must be divisible by 9 (272 in the paper).
    alpha: total width increase over the network (200 in the paper).
    shake_drop: whether the residual branches use ShakeDrop.
    num_classes: size of the output layer.
    dtype: computation dtype (parameters stay float32).
  """

  depth: int = 272
  alpha: int = 200
  shake_drop: bool = True
  num_classes: int = 10
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True, ascent: bool = False):
    """Returns float32 logits; `ascent` selects the true ShakeDrop gradient."""
    if (self.depth - 2) % 9:
      raise ValueError(f'PyramidNet depth must be 9n+2, got {self.depth}')
    blocks_per_group = (self.depth - 2) // 9
    total_blocks = 3 * blocks_per_group
    x = layers.conv(self.dtype)(16, (3, 3), padding='SAME', name='init_conv')(
        x.astype(self.dtype)
    )
    x = layers.batch_norm(train, self.dtype)(name='init_bn')(x)
    width = 16.0
    for index in range(total_blocks):
      group, block = divmod(index, blocks_per_group)
      width += self.alpha / total_blocks
      x = BottleneckBlock(
          int(round(width)),
          stride=2 if group > 0 and block == 0 else 1,
          keep_probability=keep_probability(index, total_blocks),
          shake_drop=self.shake_drop,
          dtype=self.dtype,
          name=f'group{group}_block{block}',
      )(x, train, ascent)
    x = layers.batch_norm(train, self.dtype)(name='final_bn')(x)
    x = nn.relu(x)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(
        self.num_classes,
        kernel_init=layers.dense_init,
        dtype=self.dtype,
        name='head',
    )(x)
    return x.astype(jnp.promote_types(self.dtype, jnp.float32))
