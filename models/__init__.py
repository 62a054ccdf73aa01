"""Model zoo: a plain name -> constructor table.

Every model is a Flax linen module called as `model.apply(variables, images,
train=..., ascent=...)` and returning float32 logits (float64 for a float64
model). `train` switches
BatchNorm to batch statistics and turns on random regularisers, which draw
from two rng collections: `dropout` for the Bernoulli gates (dropout,
EfficientNet's drop-connect, ShakeDrop's gate) and `shake` for the uniform
coefficients (ShakeDrop's alpha and beta, Shake-Shake's). They are apart
because the official SAM code redraws the gates in each of SAM's two passes
but shares the coefficients (`config.model.fresh_gates_each_pass`,
sam/run/step.py). `ascent=True` marks the SAM ascent pass (models with
stochastic shake coefficients backpropagate through the sampled coefficients
there; the rest ignore it). `_mini` entries are tiny variants for tests.
"""

import functools
from typing import Any, Callable

import jax.numpy as jnp

from models import efficientnet
from models import pyramidnet
from models import resnet
from models import shake_shake
from models import wrn

MODELS: dict[str, Callable[..., Any]] = {
    'wrn28_10': functools.partial(wrn.WideResNet, depth=28, width=10),
    'wrn28_2': functools.partial(wrn.WideResNet, depth=28, width=2),
    'wrn16_8': functools.partial(wrn.WideResNet, depth=16, width=8),
    'wrn16_4': functools.partial(wrn.WideResNet, depth=16, width=4),
    'wrn40_2': functools.partial(wrn.WideResNet, depth=40, width=2),
    'wrn10_1': functools.partial(wrn.WideResNet, depth=10, width=1),
    'wrn10_2': functools.partial(wrn.WideResNet, depth=10, width=2),
    'wrn_mini': functools.partial(wrn.WideResNet, depth=10, width=1),
    'shake_shake_26_2x32d': functools.partial(
        shake_shake.ShakeShake, depth=26, width=2
    ),
    'shake_shake_26_2x64d': functools.partial(
        shake_shake.ShakeShake, depth=26, width=4
    ),
    'shake_shake_26_2x96d': functools.partial(
        shake_shake.ShakeShake, depth=26, width=6
    ),
    'shake_shake_26_2x112d': functools.partial(
        shake_shake.ShakeShake, depth=26, width=7
    ),
    'shake_shake_mini': functools.partial(
        shake_shake.ShakeShake, depth=8, width=1
    ),
    'pyramidnet_272_200': functools.partial(
        pyramidnet.PyramidNet, depth=272, alpha=200, shake_drop=False
    ),
    'pyramidnet_272_200_shakedrop': functools.partial(
        pyramidnet.PyramidNet, depth=272, alpha=200, shake_drop=True
    ),
    'pyramidnet_mini': functools.partial(
        pyramidnet.PyramidNet, depth=11, alpha=12, shake_drop=True
    ),
    **{
        f'resnet{depth}': functools.partial(
            resnet.ResNet, stage_sizes=resnet.STAGE_SIZES[depth]
        )
        for depth in resnet.STAGE_SIZES
    },
    # Keras applications' layout, for weights from models/keras_convert.py.
    **{
        f'resnet{depth}_keras': functools.partial(
            resnet.ResNet, stage_sizes=resnet.STAGE_SIZES[depth], layout='keras'
        )
        for depth in resnet.STAGE_SIZES
    },
    'resnet_mini': functools.partial(
        resnet.ResNet, stage_sizes=(1, 1, 1, 1), width=8
    ),
    'resnet32': functools.partial(resnet.CifarResNet, depth=32),
    'resnet32_mini': functools.partial(resnet.CifarResNet, depth=8, width=8),
    **{
        f'efficientnet_{variant}': functools.partial(
            efficientnet.EfficientNet, variant=variant
        )
        for variant in efficientnet.VARIANTS
    },
    'efficientnet_mini': functools.partial(
        efficientnet.EfficientNet, variant='b0', width=0.25, depth=0.1
    ),
}

# float64 needs jax's 64-bit mode (train.py turns it on for it): it checks that
# a config trains the same on any number of devices, where float32 rounding
# can flip a ReLU (README, "Replicas").
DTYPES = {
    'float32': jnp.float32,
    'bfloat16': jnp.bfloat16,
    'float64': jnp.float64,
}


def create_model(name: str, num_classes: int, dtype: str = 'float32'):
  """Builds a model by name.

  Args:
    name: a key of `MODELS`.
    num_classes: size of the output layer.
    dtype: computation dtype name, a key of DTYPES.

  Returns:
    An unbound linen module.
  """
  if name not in MODELS:
    raise ValueError(f'unknown model {name!r}; valid: {sorted(MODELS)}')
  return MODELS[name](num_classes=num_classes, dtype=DTYPES[dtype])
