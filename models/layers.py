"""The layers the CIFAR and ImageNet models share, with the official code's
settings: He fan-out initialisation, convolutions without biases (a
BatchNorm follows each), BatchNorm with momentum 0.9 and epsilon 1e-5 unless
a model's own paper says otherwise, and the CIFAR models' head initialiser.

`conv` and `batch_norm` return the module class with those settings bound;
each call site adds what differs (features, kernel, strides, name), so the
parameter names are flax's own (Conv_0, BatchNorm_0, or the given name).
"""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

# He initialisation over the fan-out, as the official implementation.
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def dense_init(key, shape, dtype=jnp.float32):
  """U(-1/sqrt(num_classes), 1/sqrt(num_classes)): the head initialiser of
  the official SAM code's CIFAR models (sam_jax/models/utils.py,
  `dense_layer_init_fn`), which scales by the output width, "as per the
  autoaugment implementation"; its docstring reports that the default
  initialiser gives about 0.5% more error on CIFAR-100.

  Args:
    key: PRNG key.
    shape: the kernel's shape, [inputs, num_classes].
    dtype: the kernel's dtype.

  Returns:
    The kernel.
  """
  bound = 1.0 / jnp.sqrt(shape[1])
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def conv(
    dtype: Any, *, kernel_init: Callable = conv_init, **shared: Any
) -> Callable[..., nn.Conv]:
  """nn.Conv without a bias, computing in `dtype`.

  Args:
    dtype: the computation dtype (parameters stay float32).
    kernel_init: the kernel initialiser (He fan-out by default).
    **shared: further nn.Conv arguments every call shares.

  Returns:
    The nn.Conv constructor with these bound.
  """
  return functools.partial(
      nn.Conv, use_bias=False, kernel_init=kernel_init, dtype=dtype, **shared
  )


def batch_norm(
    train: bool, dtype: Any, *, momentum: float = 0.9, epsilon: float = 1e-5
) -> Callable[..., nn.BatchNorm]:
  """nn.BatchNorm on batch statistics in training, running ones otherwise.

  Args:
    train: normalise with the batch's statistics (and update the running
      ones).
    dtype: the computation dtype.
    momentum: of the running averages (0.9 as the official code).
    epsilon: added to the variance.

  Returns:
    The nn.BatchNorm constructor with these bound.
  """
  return functools.partial(
      nn.BatchNorm,
      use_running_average=not train,
      momentum=momentum,
      epsilon=epsilon,
      dtype=dtype,
  )
