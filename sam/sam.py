"""Sharpness-Aware Minimization: the gradient of Algorithm 1, as pure functions.

With `g1 = grad L(w)`, SAM's perturbation is eps = rho * g1 / ||g1||_2 (the
norm taken over all parameter leaves together, equation 2 with p = 2) and the
SAM gradient is g2 = grad L(w + eps) (equation 3). Nothing here communicates
across devices: the step function decides which batch each gradient sees.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

PyTree = Any
# params -> ((loss, aux), grads), as `jax.value_and_grad(f, has_aux=True)`.
GradFn = Callable[[PyTree], tuple[tuple[jax.Array, Any], PyTree]]


def global_norm(tree: PyTree) -> jax.Array:
  """The L2 norm of all leaves of `tree` taken together."""
  return optax.global_norm(tree)


def l2_perturbation(grads: PyTree, rho: float) -> PyTree:
  """eps = rho * g / ||g||_2, with eps = 0 when g = 0.

  Args:
    grads: the first gradient, g1.
    rho: radius of the neighbourhood.

  Returns:
    A pytree like `grads` with global L2 norm rho (or 0).
  """
  squared_norm = sum(jnp.sum(jnp.square(g.astype(jnp.float32)))
                     for g in jax.tree.leaves(grads))
  # A zero gradient has no ascent direction: eps = 0, not 0/0 = NaN. The
  # square root sees a safe value so that its derivative is finite too.
  nonzero = squared_norm > 0
  scale = jnp.where(
      nonzero, rho * jax.lax.rsqrt(jnp.where(nonzero, squared_norm, 1.0)),
      0.0)
  return jax.tree.map(lambda g: (g * scale).astype(g.dtype), grads)


def perturb(params: PyTree, eps: PyTree) -> PyTree:
  """w + eps, leaf by leaf."""
  return jax.tree.map(jnp.add, params, eps)


def sam_gradient(grad_fn: GradFn, params: PyTree, rho: float, *,
                 ascent_grad_fn: GradFn | None = None,
                 first_grad_transform: Callable[[PyTree], PyTree] | None = None):
  """The SAM gradient of Algorithm 1 (equation 3).

  Args:
    grad_fn: params -> ((loss, aux), grads); must use the same batch and the
      same random key on every call, so both passes see the same network.
    params: the current weights w.
    rho: radius of the neighbourhood; rho = 0 gives the plain gradient.
    ascent_grad_fn: the gradient for the ascent direction, if it differs
      from `grad_fn` (models that backpropagate through sampled shake
      coefficients in the ascent pass). Defaults to `grad_fn`.
    first_grad_transform: applied to g1 before it is normalised, e.g. an
      average over devices for one global perturbation. Identity if None.

  Returns:
    ((loss, aux), g2, g1): the loss and aux of the unperturbed pass (its
    BatchNorm statistics are the ones to keep), the SAM gradient
    grad L(w + eps) and the unperturbed gradient.
  """
  (loss, aux), g1 = (ascent_grad_fn or grad_fn)(params)
  ascent_direction = g1 if first_grad_transform is None else (
      first_grad_transform(g1))
  eps = l2_perturbation(ascent_direction, rho)
  _, g2 = grad_fn(perturb(params, eps))
  return (loss, aux), g2, g1
