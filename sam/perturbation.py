"""SAM's ascent perturbation eps and the balls it lives in, as pure functions.

With `g = grad L(w)`, SAM's perturbation is eps = rho * g / ||g||_2 (the norm
taken over all parameter leaves together, equation 2 with p = 2). The ball
can change:

- `p`: the dual-norm solution of equation (2) for any p in [1, inf]
  (p = inf gives eps = rho * sign(g), Appendix C.5);
- `adaptive` (ASAM, Kwon et al. 2021): the ball is measured in the
  coordinates w / T_w with T_w = |w| + eta, so eps = T_w * eps_p(T_w * g);
- `random_perturbation`: eps = rho * z / ||z||, z ~ N(0, I) (Appendix C.5).

`project` maps a point back onto a ball, for k-step ascent (Appendix C.6).
The gradient functions that use these live in sam/methods.py.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from sam.interface import require

PyTree = Any

DEFAULT_ADAPTIVE_ETA = 0.01  # Kwon et al. (2021), all experiments.


def check(p: float, adaptive_eta: float) -> None:
  """Refuses a ball that does not exist, naming the config.sam field.

  Args:
    p: the norm, which must be in [1, inf].
    adaptive_eta: ASAM's eta, which must be >= 0.
  """
  require(1 <= p <= math.inf, 'p', p, 'must be in [1, inf]')
  require(adaptive_eta >= 0, 'adaptive_eta', adaptive_eta, 'must be >= 0')


def global_norm(tree: PyTree) -> jax.Array:
  """The L2 norm of all leaves of `tree` taken together."""
  return optax.global_norm(tree)


def _at_least_float32(tree: PyTree) -> list[jax.Array]:
  """The leaves in at least float32 (bfloat16 is widened; a float64 run's
  leaves stay float64)."""
  return [
      x.astype(jnp.promote_types(x.dtype, jnp.float32))
      for x in jax.tree.leaves(tree)
  ]


def _safe_inverse(x: jax.Array) -> jax.Array:
  """1 / x, and 0 where x = 0; the derivative stays finite at 0 too."""
  nonzero = x > 0
  return jnp.where(nonzero, 1.0 / jnp.where(nonzero, x, 1.0), 0.0)


def _scale(tree: PyTree, factor: jax.Array) -> PyTree:
  return jax.tree.map(lambda x: (x * factor).astype(x.dtype), tree)


def l2_perturbation(grads: PyTree, rho: float) -> PyTree:
  """eps = rho * g / ||g||_2, with eps = 0 when g = 0.

  Args:
    grads: the first gradient, g1.
    rho: radius of the neighbourhood.

  Returns:
    A pytree like `grads` with global L2 norm rho (or 0).
  """
  squared_norm = sum(jnp.sum(jnp.square(g)) for g in _at_least_float32(grads))
  # A zero gradient has no ascent direction: eps = 0, not 0/0 = NaN. The
  # square root sees a safe value so that its derivative is finite too.
  nonzero = squared_norm > 0
  scale = jnp.where(
      nonzero, rho * jax.lax.rsqrt(jnp.where(nonzero, squared_norm, 1.0)), 0.0
  )
  return _scale(grads, scale)


def lp_perturbation(grads: PyTree, rho: float, p: float = 2.0) -> PyTree:
  """argmax_{||eps||_p <= rho} eps . g, equation (2), over all leaves.

  eps = rho * sign(g) |g|^(q-1) / (||g||_q^q)^(1/p) with 1/p + 1/q = 1. It is
  computed from a = |g| / max|g|, which leaves it unchanged and keeps the
  powers in [0, 1] for any p. p = inf gives rho * sign(g); p = 1 puts rho on
  the largest |g| (shared between ties).

  Args:
    grads: the first gradient, g1.
    rho: radius of the neighbourhood.
    p: the norm, in [1, inf].

  Returns:
    A pytree like `grads` with global p-norm rho (or 0 when g = 0).
  """
  if not 1 <= p <= math.inf:
    raise ValueError(f'p must be in [1, inf], got {p}')
  if p == 2:
    return l2_perturbation(grads, rho)
  if p == math.inf:
    return jax.tree.map(lambda g: (rho * jnp.sign(g)).astype(g.dtype), grads)
  leaves, treedef = jax.tree.flatten(grads)
  magnitudes = [jnp.abs(g) for g in _at_least_float32(grads)]
  inverse_max = _safe_inverse(
      jnp.max(jnp.stack([jnp.max(a) for a in magnitudes]))
  )
  relative = [a * inverse_max for a in magnitudes]
  if p == 1:
    powered = [(a == 1.0).astype(jnp.float32) for a in relative]
    denominator = sum(jnp.sum(a) for a in powered)
  else:
    q = p / (p - 1.0)
    # a ** (q - 1) with a finite derivative at a = 0 (q - 1 < 1 for p > 2).
    powered = [
        jnp.where(a > 0, jnp.where(a > 0, a, 1.0) ** (q - 1), 0.0)
        for a in relative
    ]
    denominator = sum(jnp.sum(a * b) for a, b in zip(powered, relative))
    denominator = jnp.where(denominator > 0, denominator, 0.0) ** (1.0 / p)
  scale = rho * _safe_inverse(denominator)
  return jax.tree.unflatten(
      treedef,
      [
          (jnp.sign(g) * a * scale).astype(g.dtype)
          for g, a in zip(leaves, powered)
      ],
  )


def adaptive_scale(params: PyTree, eta: float = DEFAULT_ADAPTIVE_ETA) -> PyTree:
  """ASAM's T_w = |w| + eta, leaf by leaf (all leaves, as in the paper).

  Args:
    params: the weights w.
    eta: the offset that keeps T_w > 0 at w = 0.

  Returns:
    A pytree like params.
  """
  return jax.tree.map(lambda w: jnp.abs(w) + eta, params)


def perturbation(
    grads: PyTree,
    params: PyTree,
    rho: float,
    *,
    p: float = 2.0,
    adaptive: bool = False,
    adaptive_eta: float = DEFAULT_ADAPTIVE_ETA,
) -> PyTree:
  """The ascent perturbation eps(g, w) for a norm p, optionally adaptive.

  Args:
    grads: the ascent direction g (the first gradient).
    params: the weights w (used by the adaptive scaling only).
    rho: radius of the neighbourhood.
    p: the norm of the ball, in [1, inf].
    adaptive: ASAM, eps = T_w * eps_p(T_w * g): with p = 2 that is
      rho * T_w^2 g / ||T_w g||.
    adaptive_eta: eta of T_w = |w| + eta.

  Returns:
    eps, shaped like `grads`.
  """
  if not adaptive:
    return lp_perturbation(grads, rho, p)
  scale = adaptive_scale(params, adaptive_eta)
  scaled = jax.tree.map(jnp.multiply, grads, scale)
  return jax.tree.map(jnp.multiply, lp_perturbation(scaled, rho, p), scale)


def project(
    eps: PyTree,
    params: PyTree,
    rho: float,
    *,
    p: float = 2.0,
    adaptive: bool = False,
    adaptive_eta: float = DEFAULT_ADAPTIVE_ETA,
) -> PyTree:
  """The closest point to eps in the ball of `perturbation` (p = 2 or inf).

  With `adaptive` the ball is {||eps / T_w||_p <= rho} and the projection is
  taken in the scaled coordinates.

  Args:
    eps: a point, shaped like params.
    params: the weights w (for the adaptive scaling only).
    rho: radius of the ball.
    p: 2 or inf.
    adaptive: ASAM's scaled ball.
    adaptive_eta: eta of T_w = |w| + eta.

  Returns:
    The projected eps.
  """
  scale = adaptive_scale(params, adaptive_eta) if adaptive else None
  if scale is not None:
    eps = jax.tree.map(jnp.divide, eps, scale)
  if p == 2:
    norm = jnp.sqrt(sum(jnp.sum(jnp.square(e)) for e in _at_least_float32(eps)))
    eps = _scale(eps, jnp.minimum(1.0, rho * _safe_inverse(norm)))
  elif p == math.inf:
    eps = jax.tree.map(lambda e: jnp.clip(e, -rho, rho), eps)
  else:
    raise ValueError(f'projected ascent needs p = 2 or inf, got p = {p}')
  if scale is not None:
    eps = jax.tree.map(jnp.multiply, eps, scale)
  return eps


def random_perturbation(key: jax.Array, params: PyTree, rho: float) -> PyTree:
  """eps = rho * z / ||z||_2 with z ~ N(0, I), shaped like params.

  Args:
    key: the random key of z; the same key gives the same eps.
    params: the weights (for their shapes).
    rho: the radius of the sphere eps lies on.

  Returns:
    eps, shaped like params, float32.
  """
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  noise = [
      jax.random.normal(k, w.shape, jnp.float32) for k, w in zip(keys, leaves)
  ]
  return l2_perturbation(jax.tree.unflatten(treedef, noise), rho)


def perturb(params: PyTree, eps: PyTree) -> PyTree:
  """w + eps, leaf by leaf."""
  return jax.tree.map(jnp.add, params, eps)


def tree_vdot(a: PyTree, b: PyTree) -> jax.Array:
  """<a, b> over all leaves, in float32.

  Args:
    a: a pytree.
    b: a pytree of the same structure.

  Returns:
    A float32 scalar.
  """
  return sum(
      jnp.vdot(x, y) for x, y in zip(_at_least_float32(a), _at_least_float32(b))
  )


def cosine_similarity(a: PyTree, b: PyTree) -> jax.Array:
  """<a, b> / (||a|| ||b||) over all leaves (0 if either is 0).

  Args:
    a: a pytree.
    b: a pytree of the same structure.

  Returns:
    A float32 scalar.
  """
  return tree_vdot(a, b) * _safe_inverse(global_norm(a) * global_norm(b))
