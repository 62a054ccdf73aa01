"""Sharpness probes: max_{||eps||_2 <= rho} L(w + eps) - L(w).

The inner maximisation of SAM's objective (equation 1), estimated by k steps
of projected, normalised gradient ascent (Appendix C.5: Table 12, Figure 7).
The first step from eps = 0 is SAM's own perturbation rho * g / ||g||, so
k = 1 measures the sharpness SAM sees. The probe keeps the best iterate, so
its value never decreases with k.

m-sharpness (Section 4.1) splits a set of examples into disjoint subsets of m
and averages the sharpness of each subset's loss, each with its own eps.

The pure estimators live here, beside the method whose objective they
measure; `python -m sam.analysis sharpness` runs them on a checkpoint
(sam/analysis/sharpness.py).
"""

from typing import Any, Callable, NamedTuple

import jax
from jax import flatten_util
import jax.numpy as jnp

from sam import groups
from sam import perturbation as ball

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


def random_on_sphere(key: jax.Array, params: PyTree, rho: float) -> PyTree:
  """A uniformly random eps with ||eps||_2 = rho, shaped like params."""
  flat, unravel = flatten_util.ravel_pytree(params)
  # One draw for all leaves: a draw per leaf shape compiles slowly on CPU.
  noise = jax.random.normal(key, flat.shape, flat.dtype)
  return unravel(ball.l2_perturbation(noise, rho))


def sharpness(
    loss_fn: Callable[[PyTree], jax.Array],
    params: PyTree,
    rho: float,
    num_steps: int = 1,
    *,
    step_size: float | None = None,
    key: jax.Array | None = None,
) -> Sharpness:
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
      lambda eps: loss_fn(jax.tree.map(jnp.add, params, eps))
  )
  eps = (
      jax.tree.map(jnp.zeros_like, params)
      if key is None
      else random_on_sphere(key, params, rho)
  )
  loss = loss_fn(params)

  def ascent_step(_, carry):
    eps, best_value, best_eps = carry
    value, grads = shifted_value_and_grad(eps)
    better = value > best_value
    best_value = jnp.where(better, value, best_value)
    best_eps = jax.tree.map(
        lambda new, old: jnp.where(better, new, old), eps, best_eps
    )
    # A zero gradient gives no ascent step.
    direction = ball.l2_perturbation(grads, step_size)
    eps = ball.project(jax.tree.map(jnp.add, eps, direction), params, rho)
    return eps, best_value, best_eps

  # The start point counts as an iterate: eps = 0 scores 0, a random start
  # scores a valid lower bound.
  start = (eps, jnp.asarray(-jnp.inf, loss.dtype), eps)
  eps, best_value, best_eps = jax.lax.fori_loop(
      0, num_steps, ascent_step, start
  )
  value = loss_fn(jax.tree.map(jnp.add, params, eps))
  better = value > best_value
  best_value = jnp.where(better, value, best_value)
  best_eps = jax.tree.map(
      lambda new, old: jnp.where(better, new, old), eps, best_eps
  )
  return Sharpness(best_value - loss, loss, best_eps)


def split_into_subsets(batch: PyTree, m: int) -> PyTree:
  """Reshapes every leaf [N, ...] to [N // m, m, ...] (disjoint subsets)."""
  size = jax.tree_util.tree_leaves(batch)[0].shape[0]
  if m < 1 or size % m:
    raise ValueError(f'm must be >= 1 and divide the {size} examples, got {m}')
  return groups.split(batch, size // m)


def m_sharpness(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    params: PyTree,
    batch: PyTree,
    m: int,
    rho: float,
    num_steps: int = 1,
    *,
    step_size: float | None = None,
    key: jax.Array | None = None,
    subsets_per_call: int | None = None,
) -> jax.Array:
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
  keys = None if key is None else jax.random.split(key, num_subsets)

  def one_subset(inputs):
    subset, subset_key = inputs
    return sharpness(
        lambda p: loss_fn(p, subset),
        params,
        rho,
        num_steps,
        step_size=step_size,
        key=subset_key,
    ).sharpness

  values = jax.lax.map(one_subset, (subsets, keys), batch_size=subsets_per_call)
  return jnp.mean(values)
