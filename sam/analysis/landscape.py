"""Loss-landscape slices around a checkpoint (Figure 1; Li et al., 2017).

The loss is evaluated at w + a * d1 (1-D) or w + a * d1 + b * d2 (2-D) for
random directions d that are filter-normalised: every filter of d (one output
unit of a kernel: the slice along its last axis) is rescaled to the norm of
the same filter of w. This removes the scale invariance that BatchNorm gives
each filter, so slices of different networks are comparable. Vectors
(biases, BatchNorm scales) get a zero direction by default, as in Li et al.

  python -m sam.analysis landscape --workdir=RUN --dims=2 --bn_mode=eval

writes JSON; `python -m results.landscape` draws one or several side by side.
"""

import functools
from typing import Any, Callable, Sequence

import jax
from jax import flatten_util
import jax.numpy as jnp
import numpy as np

from sam.analysis import inputs
from sam.run import experiment

PyTree = Any


@functools.partial(jax.jit, static_argnames='include_vectors')
def filter_normalized_direction(
    key: jax.Array, params: PyTree, include_vectors: bool = False
) -> PyTree:
  """A Gaussian direction with each filter scaled to the weight's filter norm.

  Args:
    key: PRNG key.
    params: the weights w.
    include_vectors: give 1-D and scalar leaves a direction too (scaled to
      the leaf's norm as one filter) instead of zero.

  Returns:
    A pytree like params.
  """
  flat, unravel = flatten_util.ravel_pytree(params)
  # One draw for all leaves: a draw per leaf shape compiles slowly on CPU.
  noise = unravel(jax.random.normal(key, flat.shape, flat.dtype))

  def normalise(w, d):
    if w.ndim <= 1 and not include_vectors:
      return jnp.zeros_like(w)
    # Filters are slices along the output (last) axis of Flax kernels.
    axes = tuple(range(w.ndim - 1)) if w.ndim > 1 else None
    w_norm = jnp.sqrt(jnp.sum(jnp.square(w), axis=axes, keepdims=True))
    d_norm = jnp.sqrt(jnp.sum(jnp.square(d), axis=axes, keepdims=True))
    return d * w_norm / jnp.maximum(d_norm, 1e-12)

  return jax.tree.map(normalise, params, noise)


def loss_surface(
    loss_fn: Callable[[PyTree], jax.Array],
    params: PyTree,
    directions: Sequence[PyTree],
    coordinates: Sequence[np.ndarray],
) -> np.ndarray:
  """The loss on the grid spanned by 1 or 2 directions around params.

  Args:
    loss_fn: params -> scalar loss.
    params: the centre w.
    directions: one or two pytrees like params.
    coordinates: one 1-D array of step sizes per direction.

  Returns:
    loss[i] = L(w + a_i d1), or loss[i, j] = L(w + a_i d1 + b_j d2).
  """
  if len(directions) not in (1, 2) or len(directions) != len(coordinates):
    raise ValueError(
        'directions and coordinates must both have length 1 or '
        f'2, got {len(directions)} and {len(coordinates)}'
    )
  mesh = np.meshgrid(*coordinates, indexing='ij')
  points = jnp.stack([jnp.asarray(m.ravel(), jnp.float32) for m in mesh], -1)

  @jax.jit
  def losses(points):
    def at(point):
      shifted = params
      for step, direction in zip(point, directions):
        shifted = jax.tree.map(
            lambda w, d, s=step: w + s * d, shifted, direction
        )
      return loss_fn(shifted)

    return jax.lax.map(at, points)

  return np.asarray(losses(points)).reshape(mesh[0].shape)


def analyse(
    run: experiment.LoadedRun,
    output_dir: str,
    *,
    dims: int = 1,
    extent: float = 1.0,
    num_points: int = 21,
    split: str = 'train',
    num_examples: int = 512,
    batch_size: int = 128,
    bn_mode: str = 'eval',
    seed: int = 0,
) -> dict:
  """Loss slice around a trained model; writes JSON.

  Args:
    run: the run, from `sam.run.experiment.load_run`.
    output_dir: where `landscape_<dims>d_<split>.json` goes.
    dims: 1 or 2 random directions.
    extent: the grid covers [-extent, extent] along each direction.
    num_points: grid points per direction.
    split, num_examples, batch_size, bn_mode: the loss (see
      sam/analysis/inputs.py).
    seed: seed of the directions and the example subset; the same seed gives
      the same directions for runs of the same model.

  Returns:
    The JSON record.
  """
  if dims not in (1, 2):
    raise ValueError(f'dims must be 1 or 2, got {dims}')
  loss = inputs.run_loss(
      run,
      split=split,
      num_examples=num_examples,
      batch_size=batch_size,
      bn_mode=bn_mode,
      seed=seed,
  )
  directions = [
      filter_normalized_direction(k, loss.params)
      for k in jax.random.split(jax.random.key(seed), dims)
  ]
  coordinates = [np.linspace(-extent, extent, num_points)] * dims
  surface = loss_surface(
      inputs.mean_loss(loss.batch_loss, loss.stacked),
      loss.params,
      directions,
      coordinates,
  )
  centre = surface[(num_points // 2,) * dims] if num_points % 2 else None
  record = {
      'method': loss.method,
      'split': split,
      'bn_mode': bn_mode,
      'num_examples': loss.num_examples,
      'seed': seed,
      'coordinates': [c.tolist() for c in coordinates],
      'loss': surface.tolist(),
      'center_loss': None if centre is None else float(centre),
  }
  inputs.write_record(output_dir, f'landscape_{dims}d_{split}.json', record)
  return record
