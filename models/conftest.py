"""Fixtures of the model tests: randomly initialised Keras models (no
download) to check the weight converters against."""

import numpy as np
import pytest

from models import keras_convert

# Odd sizes after the stride-2 layers; the conversion does not depend on it.
KERAS_RESOLUTION = 72
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


def _randomise(keras_model, rng):
  """Random BN statistics and affine terms, conv and dense biases; ImageNet
  statistics in an EfficientNet's input Normalization layer."""
  for layer in keras_model.layers:
    kind = type(layer).__name__
    if kind == 'BatchNormalization':
      n = layer.weights[0].shape[0]
      layer.set_weights(
          [
              rng.uniform(0.5, 1.5, n),
              rng.normal(0, 0.2, n),
              rng.normal(0, 0.2, n),
              rng.uniform(0.5, 1.5, n),
          ]
      )
    elif kind in ('Conv2D', 'Dense') and len(layer.weights) == 2:
      kernel, bias = layer.get_weights()
      layer.set_weights([kernel, rng.normal(0, 0.2, bias.shape)])
    elif kind == 'Normalization':
      layer.set_weights([IMAGENET_MEAN, IMAGENET_STD**2, np.array(0)])
      layer.finalize_state()


@pytest.fixture
def randomise_keras():
  """The function randomising a Keras model's statistics and biases."""
  return _randomise


@pytest.fixture(scope='session')
def keras_efficientnet_b0():
  """Keras EfficientNetB0 at KERAS_RESOLUTION with random weights, BN
  statistics and biases, ImageNet input normalisation."""
  keras_model = keras_convert.build_keras(
      'efficientnet_b0', input_shape=(KERAS_RESOLUTION, KERAS_RESOLUTION, 3)
  )
  _randomise(keras_model, np.random.default_rng(0))
  return keras_model
