"""The wrappers around any method: accumulation and m-sharpness groups,
against independent computations on least squares."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sam import groups
from sam import interface
from sam import methods

RHO = 0.3


def batch(seed=0, n=8):
  rng = np.random.default_rng(seed)
  return {
      'x': jnp.asarray(rng.normal(size=(n, 3)), jnp.float32),
      'y': jnp.asarray(rng.normal(size=n), jnp.float32),
  }


def loss(w, data, index=0):
  """Mean squared error; outputs: the mean of x as a 'statistic', and each
  example's loss, error (|residual| > 1) and residual."""
  del index
  residual = data['x'] @ w - data['y']
  per_example = {
      'loss': 0.5 * residual**2,
      'error': (jnp.abs(residual) > 1).astype(jnp.float32),
      'residual': residual,
  }
  outputs = interface.Outputs(jnp.mean(data['x'], 0), per_example)
  return 0.5 * jnp.mean(residual**2), outputs


def sam_direction(w, data):
  g1 = jax.grad(lambda v: loss(v, data)[0])(w)
  eps = RHO * g1 / jnp.linalg.norm(g1)
  return jax.grad(lambda v: loss(v, data)[0])(w + eps)


@pytest.mark.parametrize('num_parts', [1, 2, 4])
def test_accumulated_gradient_is_the_batch_gradient(num_parts):
  data, w = batch(), jnp.array([0.5, -1.0, 2.0])
  (value, outputs), grads = groups.accumulated_value_and_grad(
      loss, data, num_parts
  )(w)
  (expected_value, expected_outputs), expected = jax.value_and_grad(
      loss, has_aux=True
  )(w, data)
  np.testing.assert_allclose(grads, expected, rtol=1e-5)
  np.testing.assert_allclose(value, expected_value, rtol=1e-5)
  np.testing.assert_allclose(
      outputs.batch_stats, expected_outputs.batch_stats, rtol=1e-5, atol=1e-7
  )
  np.testing.assert_allclose(
      outputs.per_example['residual'],
      expected_outputs.per_example['residual'],
      rtol=1e-5,
  )


@pytest.mark.parametrize(
    'mode,num_micro', [('unroll', 1), ('vmap', 1), ('unroll', 2)]
)
def test_groups_each_run_the_method_on_their_own_examples(mode, num_micro):
  data, w = batch(1), jnp.array([0.2, 0.1, -0.4])
  method = methods.build('sam', rho=RHO)

  def group_fn(group: groups.Group):
    grad = groups.accumulated_value_and_grad(
        loss, group.examples, group.micro_batches
    )
    objective = interface.Objective(
        lambda p, ascent=False: grad(p), lambda g: g
    )
    return method.gradient(objective, w, ())

  result = groups.grouped_gradient(group_fn, data, 2, num_micro, mode)
  expected = np.mean(
      [
          sam_direction(
              w, jax.tree.map(lambda x, i=i: x[2 * i : 2 * i + 2], data)
          )
          for i in range(4)
      ],
      axis=0,
  )
  np.testing.assert_allclose(result.grads, expected, rtol=1e-5)
  # Per-example outputs come back in order; averaged ones are averaged.
  residual = data['x'] @ w - data['y']
  np.testing.assert_allclose(
      result.outputs.per_example['residual'], residual, rtol=1e-5
  )
  np.testing.assert_allclose(
      result.outputs.batch_stats,
      jnp.mean(data['x'], 0),
      rtol=1e-5,
      atol=1e-7,
  )
  # One perturbation for the whole batch differs: the groups have teeth.
  assert np.max(np.abs(result.grads - sam_direction(w, data))) > 1e-3


def test_split_refuses_unequal_parts():
  with pytest.raises(ValueError, match='cannot split 8 examples into 3'):
    groups.split(batch(), 3)
