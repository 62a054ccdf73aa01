"""Keras applications -> Flax equivalence (models/keras_convert.py).

Randomly initialised Keras models (no download) with random BatchNorm
statistics, conv biases and head biases (models/conftest.py); 72x72 inputs so
that stride-2 layers also meet odd sizes (the conversion does not depend on the
resolution).
"""

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

import models
from models import keras_convert
from models import pretrained

KERAS_RESOLUTION = 72  # As models/conftest.py.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


def relative_error(keras_model, keras_input, pixels):
  """max |Flax - Keras| / max |Keras| of the logits; the Flax model gets the
  RGB pixels normalised as keras_convert.input_normalisation says."""
  expected = np.asarray(keras_model(keras_input, training=False))
  mean, std = keras_convert.input_normalisation(keras_model)
  flax_model = models.create_model(
      keras_convert.model_name(keras_model), expected.shape[-1]
  )
  logits = jax.jit(lambda v, x: flax_model.apply(v, x, train=False))(
      keras_convert.convert(keras_model),
      jnp.asarray((pixels / 255 - mean) / std, jnp.float32),
  )
  return np.max(np.abs(logits - expected)) / np.max(np.abs(expected))


def test_resnet50_logits_match_keras(randomise_keras):
  rng = np.random.default_rng(0)
  keras_model = keras_convert.build_keras(
      'resnet50_keras', input_shape=(KERAS_RESOLUTION, KERAS_RESOLUTION, 3)
  )
  randomise_keras(keras_model, rng)
  pixels = rng.uniform(0, 255, (2, KERAS_RESOLUTION, KERAS_RESOLUTION, 3))
  # Keras ResNets take caffe input: BGR minus the mean pixel.
  caffe = (pixels - keras_convert.CAFFE_MEAN_RGB)[..., ::-1]
  assert relative_error(keras_model, caffe.astype(np.float32), pixels) < 1e-4


def test_keras_efficientnet_b0_logits_match_keras(keras_efficientnet_b0):
  keras_model = keras_efficientnet_b0
  pixels = np.random.default_rng(1).uniform(
      0, 255, (2, KERAS_RESOLUTION, KERAS_RESOLUTION, 3)
  )
  np.testing.assert_allclose(
      keras_convert.input_normalisation(keras_model),
      [IMAGENET_MEAN, IMAGENET_STD],
      rtol=1e-6,
  )
  assert relative_error(keras_model, pixels.astype(np.float32), pixels) < 1e-4


@pytest.mark.parametrize('name', ['resnet101_keras', 'efficientnet_b1'])
def test_second_sizes_convert_onto_the_flax_structure(name):
  """Shapes only, to keep the suite fast: every Flax variable gets a Keras
  weight of its shape and none is left over (pretrained.merge raises
  otherwise)."""
  keras_model = keras_convert.build_keras(name, input_shape=(64, 64, 3))
  flax_model = models.create_model(name, 1000)
  shapes = jax.eval_shape(
      lambda: flax_model.init(
          jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False
      )
  )
  converted = pretrained.merge(
      shapes, keras_convert.convert(keras_model), reinit_head=False
  )
  assert jax.tree_util.tree_structure(converted) == (
      jax.tree_util.tree_structure(shapes)
  )


def test_convert_and_save_writes_a_loadable_checkpoint(
    keras_efficientnet_b0, tmp_path
):
  path = keras_convert.convert_and_save(keras_efficientnet_b0, tmp_path / 'b0')
  converted = keras_convert.convert(keras_efficientnet_b0)
  jax.tree_util.tree_map(
      np.testing.assert_array_equal, pretrained.restore(path), converted
  )


def test_imagenet_input_normalisation_of_keras_efficientnets():
  # weights='imagenet' stores the std as the Normalization variance and
  # divides by sqrt(std) once more: the input is (x / 255 - mean) / std.
  model = keras.Sequential(
      [
          keras.Input((8, 8, 3)),
          keras.layers.Rescaling(1 / 255),
          keras.layers.Normalization(mean=IMAGENET_MEAN, variance=IMAGENET_STD),
          keras.layers.Rescaling(1 / np.sqrt(IMAGENET_STD)),
      ],
      name='efficientnetb0',
  )
  mean, std = keras_convert.input_normalisation(model)
  np.testing.assert_allclose(mean, IMAGENET_MEAN, rtol=1e-6)
  np.testing.assert_allclose(std, IMAGENET_STD, rtol=1e-6)


def test_other_keras_models_are_a_clear_error():
  with pytest.raises(ValueError, match="keras model 'vgg16': valid"):
    keras_convert.model_name(keras.Sequential(name='vgg16'))
