"""Tests for models/efficientnet.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from models import efficientnet


@pytest.mark.parametrize(
    'name,expected',
    [
        ('efficientnet_b0', 5_288_548),  # Reference counts.
        ('efficientnet_b7', 66_347_960),
        # Keras applications' trainable count (measured with keras 3.15; B2-B6
        # match Keras too, left out to keep the suite fast).
        ('efficientnet_b1', 7_794_184),
        # Noisy Student's L2: 480M (timm's tf_efficientnet_l2_ns: 480.31M).
        ('efficientnet_l2', 480_309_308),
    ],
)
def test_parameter_counts(name, expected, param_count):
  # The count does not depend on the resolution.
  assert param_count(name, 1000, image_size=32) == expected


def test_resolution_table():
  assert {k: v[2] for k, v in efficientnet.VARIANTS.items()} == {
      'b0': 224,
      'b1': 240,
      'b2': 260,
      'b3': 300,
      'b4': 380,
      'b5': 456,
      'b6': 528,
      'b7': 600,
      'l2': 800,
  }
  assert efficientnet.FINETUNE_RESOLUTION['l2'] == 475
  assert efficientnet.FINETUNE_RESOLUTION['b7'] == 600


def test_compound_scaling_rounding():
  # B7's stem and head widths (Tan & Le): 64 and 2560; L2's: 136 and 5504.
  assert efficientnet.round_filters(32, 2.0) == 64
  assert efficientnet.round_filters(1280, 2.0) == 2560
  assert efficientnet.round_filters(32, 4.3) == 136
  assert efficientnet.round_repeats(4, 3.1) == 13


def test_unknown_variant_is_a_clear_error():
  model = efficientnet.EfficientNet(variant='b9')
  with pytest.raises(ValueError, match="variant must be one of.*'b9'"):
    jax.eval_shape(
        lambda: model.init(
            jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False
        )
    )


def test_mini_dropout_in_train_and_deterministic_eval(fill_variables):
  model = models.create_model('efficientnet_mini', 4)
  images = jnp.asarray(
      np.random.default_rng(0).normal(size=(3, 16, 16, 3)), jnp.float32
  )

  variables = fill_variables(model, images)

  @jax.jit
  def logits(key, shake_key):
    train, _ = model.apply(
        variables,
        images,
        train=True,
        rngs={'dropout': key, 'shake': shake_key},
        mutable=['batch_stats'],
    )
    return train, model.apply(variables, images, train=False)

  key1, key2 = jax.random.key(1, impl='rbg'), jax.random.key(2, impl='rbg')
  train1, eval1 = logits(key1, key1)
  train2, eval2 = logits(key2, key1)
  # Dropout and drop-connect are gates: they follow the `dropout` key, which
  # each SAM pass redraws, and not the shared `shake` key.
  np.testing.assert_array_equal(logits(key1, key2)[0], train1)
  assert train1.shape == eval1.shape == (3, 4)
  assert eval1.dtype == jnp.float32
  # Dropout and drop-connect follow the key in training only.
  assert not np.allclose(train1, train2)
  np.testing.assert_array_equal(eval1, eval2)
