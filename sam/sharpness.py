"""Sharpness probes: max_{||eps||_2 <= rho} L(w + eps) - L(w).

The inner maximisation of SAM's objective (equation 1), estimated by k steps
of projected, normalised gradient ascent (Appendix C.5: Table 12, Figure 7).
The first step from eps = 0 is SAM's own perturbation rho * g / ||g||, so
k = 1 measures the sharpness SAM sees. The probe keeps the best iterate, so
its value never decreases with k.

m-sharpness (Section 4.1) splits a set of examples into disjoint subsets of m
and averages the sharpness of each subset's loss, each with its own eps.

Run on a checkpoint:
  python -m sam.sharpness --workdir=RUN --split=train --rho=0.05
"""

import json
import os
from typing import Any, Callable, NamedTuple, Sequence

from absl import app
from absl import flags
import jax
from jax import flatten_util
import jax.numpy as jnp
import numpy as np
import optax

from sam import analysis_inputs

PyTree = Any


class Sharpness(NamedTuple):
  """The probe's result.

  Attributes:
    sharpness: max over the iterates of L(w + eps) - L(w).
    loss: L(w).
    eps: the best perturbation found.
  """
  sharpness: jax.Array
  loss: jax.Array
  eps: PyTree


def _scale(tree: PyTree, factor: jax.Array) -> PyTree:
  return jax.tree.map(lambda x: (x * factor).astype(x.dtype), tree)


def _safe_inverse(x: jax.Array) -> jax.Array:
  """1 / x, and 0 where x = 0 (a zero gradient gives no ascent step)."""
  return jnp.where(x > 0, 1.0 / jnp.where(x > 0, x, 1.0), 0.0)


def project_to_ball(eps: PyTree, rho: float) -> PyTree:
  """The closest point to eps in {||eps||_2 <= rho} (global norm)."""
  norm = optax.tree.norm(eps)
  return _scale(eps, jnp.minimum(1.0, rho * _safe_inverse(norm)))


def random_on_sphere(key: jax.Array, params: PyTree, rho: float) -> PyTree:
  """A uniformly random eps with ||eps||_2 = rho, shaped like params."""
  flat, unravel = flatten_util.ravel_pytree(params)
  # One draw for all leaves: a draw per leaf shape compiles slowly on CPU.
  noise = jax.random.normal(key, flat.shape, flat.dtype)
  return unravel(noise * rho * _safe_inverse(jnp.linalg.norm(noise)))


def sharpness(loss_fn: Callable[[PyTree], jax.Array], params: PyTree,
              rho: float, num_steps: int = 1, *,
              step_size: float | None = None,
              key: jax.Array | None = None) -> Sharpness:
  """Estimates max_{||eps|| <= rho} loss_fn(params + eps) - loss_fn(params).

  Each step moves eps by step_size along the normalised gradient at
  params + eps and projects back onto the ball.

  Args:
    loss_fn: params -> scalar loss (a closure over the batch).
    params: the weights w.
    rho: radius of the ball (>= 0).
    num_steps: ascent steps k (>= 0; 0 evaluates the start point only); may
      be traced, so one compilation serves every k.
    step_size: length of each step; defaults to rho.
    key: if given, start from a random point on the sphere of radius rho
      instead of eps = 0 (needed where the gradient vanishes, e.g. at a
      minimum).

  Returns:
    A `Sharpness`; a lower bound on the true maximum, exact for k = 1 on a
    loss that is linear in the ball.
  """
  if rho < 0:
    raise ValueError(f'rho must be >= 0, got {rho}')
  if isinstance(num_steps, int) and num_steps < 0:
    raise ValueError(f'num_steps must be >= 0, got {num_steps}')
  step_size = rho if step_size is None else step_size
  shifted_value_and_grad = jax.value_and_grad(
      lambda eps: loss_fn(jax.tree.map(jnp.add, params, eps)))
  eps = (jax.tree.map(jnp.zeros_like, params) if key is None else
         random_on_sphere(key, params, rho))
  loss = loss_fn(params)

  def ascent_step(_, carry):
    eps, best_value, best_eps = carry
    value, grads = shifted_value_and_grad(eps)
    better = value > best_value
    best_value = jnp.where(better, value, best_value)
    best_eps = jax.tree.map(lambda new, old: jnp.where(better, new, old), eps,
                            best_eps)
    direction = _scale(grads, step_size * _safe_inverse(
        optax.tree.norm(grads)))
    eps = project_to_ball(jax.tree.map(jnp.add, eps, direction), rho)
    return eps, best_value, best_eps

  # The start point counts as an iterate: eps = 0 scores 0, a random start
  # scores a valid lower bound.
  start = (eps, jnp.asarray(-jnp.inf, loss.dtype), eps)
  eps, best_value, best_eps = jax.lax.fori_loop(0, num_steps, ascent_step,
                                                start)
  value = loss_fn(jax.tree.map(jnp.add, params, eps))
  better = value > best_value
  best_value = jnp.where(better, value, best_value)
  best_eps = jax.tree.map(lambda new, old: jnp.where(better, new, old), eps,
                          best_eps)
  return Sharpness(best_value - loss, loss, best_eps)


def split_into_subsets(batch: PyTree, m: int) -> PyTree:
  """Reshapes every leaf [N, ...] to [N // m, m, ...] (disjoint subsets)."""
  size = jax.tree_util.tree_leaves(batch)[0].shape[0]
  if m < 1 or size % m:
    raise ValueError(f'm must be >= 1 and divide the {size} examples, got {m}')
  return jax.tree.map(lambda x: x.reshape((size // m, m) + x.shape[1:]), batch)


def m_sharpness(loss_fn: Callable[[PyTree, PyTree], jax.Array], params: PyTree,
                batch: PyTree, m: int, rho: float, num_steps: int = 1, *,
                step_size: float | None = None,
                key: jax.Array | None = None,
                subsets_per_call: int | None = None) -> jax.Array:
  """m-sharpness: the mean sharpness of disjoint m-example subsets.

  Args:
    loss_fn: (params, batch) -> mean loss over the batch.
    params: the weights w.
    batch: a pytree of arrays with N examples on the leading axis; N must be
      a multiple of m.
    m: subset size.
    rho: radius of each subset's ball.
    num_steps: ascent steps per subset.
    step_size: as in `sharpness`.
    key: if given, each subset starts from its own random point on the sphere.
    subsets_per_call: how many subsets to vectorise at once (memory bound);
      None: all.

  Returns:
    Scalar: mean over subsets of max_{||eps|| <= rho} L_S(w + eps) - L_S(w).
  """
  subsets = split_into_subsets(batch, m)
  num_subsets = jax.tree_util.tree_leaves(subsets)[0].shape[0]
  keys = (None if key is None else jax.random.split(key, num_subsets))

  def one_subset(inputs):
    subset, subset_key = inputs
    return sharpness(lambda p: loss_fn(p, subset), params, rho, num_steps,
                     step_size=step_size, key=subset_key).sharpness

  values = jax.lax.map(one_subset, (subsets, keys),
                       batch_size=subsets_per_call)
  return jnp.mean(values)


def analyse(run: tuple[Any, Any, Any, Any], output_dir: str, *,
            rho: float = 0.05, num_steps: Sequence[int] = (1, 2, 5),
            m_values: Sequence[int] = (), split: str = 'train',
            num_examples: int = 1024, batch_size: int = 128,
            bn_mode: str = 'train', seed: int = 0) -> dict:
  """Sharpness and m-sharpness of a trained model; writes JSON.

  Args:
    run: (config, model, variables, datasets), as `sam.training.load_run`.
    output_dir: where `sharpness_<split>_rho<rho>.json` goes.
    rho: radius of the ball.
    num_steps: ascent step counts k to report.
    m_values: subset sizes of the m-sharpness to report (each must divide
      batch_size); m-sharpness uses the largest k of num_steps.
    split, num_examples, batch_size, bn_mode: the batches (see
      sam/analysis_inputs.py); the probe runs per batch and is averaged.
    seed: seed of the example subset.

  Returns:
    The JSON record.
  """
  config, model, variables, datasets = run
  batch_loss = analysis_inputs.make_batch_loss(
      model, variables['batch_stats'], bn_mode,
      label_smoothing=config.label_smoothing)
  batches = analysis_inputs.unstack_batches(analysis_inputs.stack_batches(
      *analysis_inputs.split_examples(datasets, split, num_examples, seed),
      batch_size))
  params = variables['params']

  def batch_mean(fn, *args):
    values = [fn(params, batch, *args) for batch in batches]
    return jax.tree.map(lambda *v: float(np.mean(v)), *values)

  # k is traced, so every k shares one compilation.
  probe = jax.jit(lambda p, b, k: sharpness(lambda q: batch_loss(q, b), p,
                                            rho, k)[:2])
  results = {k: batch_mean(probe, k) for k in num_steps}
  record = {
      'optimizer': config.optimizer, 'split': split, 'bn_mode': bn_mode,
      'rho': rho, 'batch_size': batch_size,
      'num_examples': len(batches) * batch_size,
      'loss': results[num_steps[0]][1],
      'sharpness': {str(k): value for k, (value, _) in results.items()},
      'm_sharpness': {},
  }
  for m in m_values:
    record['m_sharpness'][str(m)] = batch_mean(jax.jit(
        lambda p, b, m=m: m_sharpness(batch_loss, p, b, m, rho,
                                      max(num_steps))))
  os.makedirs(output_dir, exist_ok=True)
  with open(os.path.join(output_dir, f'sharpness_{split}_rho{rho:g}.json'),
            'w') as f:
    json.dump(record, f, indent=1)
  return record


def _define_flags():
  flags.DEFINE_string('workdir', None, 'Training workdir to analyse.',
                      required=True)
  flags.DEFINE_float('rho', 0.05, 'Radius of the ball.')
  flags.DEFINE_list('num_steps', ['1', '2', '5'], 'Ascent steps k.')
  flags.DEFINE_list('m', [], 'm-sharpness subset sizes (divide batch_size).')
  analysis_inputs.define_example_flags(num_examples=1024, bn_mode='train')


def main(argv):
  del argv
  f = flags.FLAGS
  # Imported here: loading a run needs the training stack, and sam.training
  # may itself import this module to log sharpness during training.
  from sam import training  # pylint: disable=g-import-not-at-top
  record = analyse(
      training.load_run(f.workdir),
      f.output_dir or os.path.join(f.workdir, 'analysis'), rho=f.rho,
      num_steps=[int(k) for k in f.num_steps],
      m_values=[int(m) for m in f.m], split=f.split,
      num_examples=f.num_examples, batch_size=f.batch_size,
      bn_mode=f.bn_mode, seed=f.seed)
  print(json.dumps({k: record[k] for k in ('loss', 'sharpness',
                                           'm_sharpness')}, indent=1))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
