"""Loss-landscape slices around a checkpoint (Figure 1; Li et al., 2017).

The loss is evaluated at w + a * d1 (1-D) or w + a * d1 + b * d2 (2-D) for
random directions d that are filter-normalised: every filter of d (one output
unit of a kernel: the slice along its last axis) is rescaled to the norm of
the same filter of w. This removes the scale invariance that BatchNorm gives
each filter, so slices of different networks are comparable. Vectors
(biases, BatchNorm scales) get a zero direction by default, as in Li et al.

  python -m results.landscape --workdir=RUN --dims=2 --bn_mode=eval
"""

import functools
import json
import os
from typing import Any, Callable, Sequence

from absl import app
from absl import flags
import jax
from jax import flatten_util
import jax.numpy as jnp
import matplotlib
import numpy as np

from sam import analysis_inputs

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

PyTree = Any


@functools.partial(jax.jit, static_argnames='include_vectors')
def filter_normalized_direction(key: jax.Array, params: PyTree,
                                include_vectors: bool = False) -> PyTree:
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


def loss_surface(loss_fn: Callable[[PyTree], jax.Array], params: PyTree,
                 directions: Sequence[PyTree],
                 coordinates: Sequence[np.ndarray]) -> np.ndarray:
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
    raise ValueError('directions and coordinates must both have length 1 or '
                     f'2, got {len(directions)} and {len(coordinates)}')
  mesh = np.meshgrid(*coordinates, indexing='ij')
  points = jnp.stack([jnp.asarray(m.ravel(), jnp.float32) for m in mesh], -1)

  @jax.jit
  def losses(points):
    def at(point):
      shifted = params
      for step, direction in zip(point, directions):
        shifted = jax.tree.map(lambda w, d, s=step: w + s * d, shifted,
                               direction)
      return loss_fn(shifted)
    return jax.lax.map(at, points)

  return np.asarray(losses(points)).reshape(mesh[0].shape)


def plot_surface(labelled_records: Sequence[tuple[str, dict]],
                 path: str) -> None:
  """Draws 1-D slices as curves on one axis, 2-D slices as contour panels.

  Args:
    labelled_records: (label, record) pairs; records from `analyse`, all
      1-D or all 2-D.
    path: the output PNG.
  """
  dims = {len(record['coordinates']) for _, record in labelled_records}
  if len(dims) != 1:
    raise ValueError('plot_surface: cannot mix 1-D and 2-D records')
  if dims == {1}:
    fig, ax = plt.subplots(figsize=(5, 4))
    for label, record in labelled_records:
      ax.plot(record['coordinates'][0], record['loss'], label=label)
    ax.set_xlabel('step along the filter-normalised direction')
    ax.set_ylabel(f"{labelled_records[0][1]['split']} loss")
    ax.legend()
  else:
    fig, axes = plt.subplots(1, len(labelled_records), squeeze=False,
                             figsize=(4.5 * len(labelled_records), 4))
    # Shared levels: the same loss is the same colour in every panel.
    all_losses = np.concatenate([np.ravel(r['loss'])
                                 for _, r in labelled_records])
    levels = np.linspace(all_losses.min(), np.percentile(all_losses, 95), 20)
    for i, (ax, (label, record)) in enumerate(zip(axes[0], labelled_records)):
      a, b = (np.asarray(c) for c in record['coordinates'])
      contours = ax.contourf(a, b, np.asarray(record['loss']).T, levels=levels,
                             extend='max', cmap='viridis')
      ax.contour(a, b, np.asarray(record['loss']).T, levels=levels,
                 colors='k', linewidths=0.3)
      ax.plot([0], [0], 'r+')
      ax.set_title(label)
      ax.set_xlabel('direction 1')
      if i == 0:
        ax.set_ylabel('direction 2')
    fig.colorbar(contours, ax=axes[0].tolist(),
                 label=f"{labelled_records[0][1]['split']} loss")
  fig.savefig(path, dpi=120, bbox_inches='tight')
  plt.close(fig)


def analyse(run: tuple[Any, Any, Any, Any], output_dir: str, *,
            dims: int = 1, extent: float = 1.0, num_points: int = 21,
            split: str = 'train', num_examples: int = 512,
            batch_size: int = 128, bn_mode: str = 'eval',
            seed: int = 0) -> dict:
  """Loss slice around a trained model; writes JSON and a plot.

  Args:
    run: (config, model, variables, datasets), as `sam.training.load_run`.
    output_dir: where `landscape_<dims>d_<split>.{json,png}` go.
    dims: 1 or 2 random directions.
    extent: the grid covers [-extent, extent] along each direction.
    num_points: grid points per direction.
    split, num_examples, batch_size, bn_mode: the loss (see
      sam/analysis_inputs.py).
    seed: seed of the directions and the example subset; the same seed gives
      the same directions for runs of the same model.

  Returns:
    The JSON record.
  """
  if dims not in (1, 2):
    raise ValueError(f'dims must be 1 or 2, got {dims}')
  config, model, variables, datasets = run
  batch_loss = analysis_inputs.make_batch_loss(
      model, variables['batch_stats'], bn_mode,
      label_smoothing=config.label_smoothing)
  stacked = analysis_inputs.stack_batches(
      *analysis_inputs.split_examples(datasets, split, num_examples, seed),
      batch_size)
  params = variables['params']
  directions = [filter_normalized_direction(k, params)
                for k in jax.random.split(jax.random.key(seed), dims)]
  coordinates = [np.linspace(-extent, extent, num_points)] * dims
  surface = loss_surface(analysis_inputs.mean_loss(batch_loss, stacked),
                         params, directions, coordinates)
  record = {
      'optimizer': config.optimizer, 'split': split, 'bn_mode': bn_mode,
      'num_examples': int(stacked['label'].size), 'seed': seed,
      'coordinates': [c.tolist() for c in coordinates],
      'loss': surface.tolist(),
      'center_loss': (float(surface[(num_points // 2,) * dims])
                      if num_points % 2 else None),
  }
  os.makedirs(output_dir, exist_ok=True)
  stem = os.path.join(output_dir, f'landscape_{dims}d_{split}')
  with open(stem + '.json', 'w') as f:
    json.dump(record, f)
  plot_surface([(config.optimizer, record)], stem + '.png')
  return record


def _define_flags():
  flags.DEFINE_string('workdir', None, 'Training workdir to analyse.')
  flags.DEFINE_list('compare', None, 'Instead of --workdir: landscape JSON '
                    'files to draw side by side into --output.')
  flags.DEFINE_list('labels', None, 'Labels of --compare; default: the '
                    'optimizers.')
  flags.DEFINE_string('output', None, 'Output PNG of --compare.')
  flags.DEFINE_integer('dims', 1, '1 or 2 random directions.')
  flags.DEFINE_float('extent', 1.0, 'Grid half-width along each direction.')
  flags.DEFINE_integer('num_points', 21, 'Grid points per direction.')
  analysis_inputs.define_example_flags(num_examples=512, bn_mode='eval')


def main(argv):
  del argv
  f = flags.FLAGS
  if f.compare:
    records = []
    for path in f.compare:
      with open(path) as fp:
        records.append(json.load(fp))
    labels = f.labels or [r['optimizer'] for r in records]
    plot_surface(list(zip(labels, records)), f.output)
    return
  if not f.workdir:
    raise app.UsageError('give --workdir, or --compare with --output')
  # Imported here: only loading a run needs the training stack.
  from sam import training  # pylint: disable=g-import-not-at-top
  record = analyse(
      training.load_run(f.workdir),
      f.output_dir or os.path.join(f.workdir, 'analysis'), dims=f.dims,
      extent=f.extent, num_points=f.num_points, split=f.split,
      num_examples=f.num_examples, batch_size=f.batch_size,
      bn_mode=f.bn_mode, seed=f.seed)
  print(json.dumps({'center_loss': record['center_loss'],
                    'max_loss': float(np.max(record['loss']))}))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
