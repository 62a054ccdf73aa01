"""Sharpness-Aware Minimization: the gradient of Algorithm 1 and the paper's
variants, as pure functions.

With `g1 = grad L(w)`, SAM's perturbation is eps = rho * g1 / ||g1||_2 (the
norm taken over all parameter leaves together, equation 2 with p = 2) and the
SAM gradient is g2 = grad L(w + eps) (equation 3). The variants change how eps
is found:

- `p`: the dual-norm solution of equation (2) for any p in [1, inf]
  (p = inf gives eps = rho * sign(g1), Appendix C.5);
- `adaptive` (ASAM, Kwon et al. 2021): the ball is measured in the
  coordinates w / T_w with T_w = |w| + eta, so eps = T_w * eps_p(T_w * g1);
- `random_sam_gradient`: eps = rho * z / ||z||, z ~ N(0, I) (Appendix C.5);
- `multistep_sam_gradient`: k steps of projected ascent (Appendix C.6);
- `second_order_sam_gradient`: d/dw L(w + eps(w)) with the d eps / dw term
  that equation (3) drops, through a Hessian-vector product (Appendix C.4).

Every variant takes (grad_fn, params, rho, ...) and returns
((loss, aux), g2, g1) as `sam_gradient` does. Nothing here communicates
across devices: the step function decides which batch each gradient sees.
"""

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

PyTree = Any
# params -> ((loss, aux), grads), as `jax.value_and_grad(f, has_aux=True)`.
GradFn = Callable[[PyTree], tuple[tuple[jax.Array, Any], PyTree]]

DEFAULT_ADAPTIVE_ETA = 0.01  # Kwon et al. (2021), all experiments.


def global_norm(tree: PyTree) -> jax.Array:
  """The L2 norm of all leaves of `tree` taken together."""
  return optax.global_norm(tree)


def _float32_leaves(tree: PyTree) -> list[jax.Array]:
  return [x.astype(jnp.float32) for x in jax.tree.leaves(tree)]


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
  squared_norm = sum(jnp.sum(jnp.square(g)) for g in _float32_leaves(grads))
  # A zero gradient has no ascent direction: eps = 0, not 0/0 = NaN. The
  # square root sees a safe value so that its derivative is finite too.
  nonzero = squared_norm > 0
  scale = jnp.where(
      nonzero, rho * jax.lax.rsqrt(jnp.where(nonzero, squared_norm, 1.0)),
      0.0)
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
  magnitudes = [jnp.abs(g) for g in _float32_leaves(grads)]
  inverse_max = _safe_inverse(
      jnp.max(jnp.stack([jnp.max(a) for a in magnitudes])))
  relative = [a * inverse_max for a in magnitudes]
  if p == 1:
    powered = [(a == 1.0).astype(jnp.float32) for a in relative]
    denominator = sum(jnp.sum(a) for a in powered)
  else:
    q = p / (p - 1.0)
    # a ** (q - 1) with a finite derivative at a = 0 (q - 1 < 1 for p > 2).
    powered = [jnp.where(a > 0, jnp.where(a > 0, a, 1.0) ** (q - 1), 0.0)
               for a in relative]
    denominator = sum(jnp.sum(a * b) for a, b in zip(powered, relative))
    denominator = jnp.where(denominator > 0, denominator, 0.0) ** (1.0 / p)
  scale = rho * _safe_inverse(denominator)
  return jax.tree.unflatten(treedef, [
      (jnp.sign(g) * a * scale).astype(g.dtype)
      for g, a in zip(leaves, powered)])


def adaptive_scale(params: PyTree, eta: float = DEFAULT_ADAPTIVE_ETA):
  """ASAM's T_w = |w| + eta, leaf by leaf (all leaves, as in the paper)."""
  return jax.tree.map(lambda w: jnp.abs(w) + eta, params)


def perturbation(grads: PyTree, params: PyTree, rho: float, *,
                 p: float = 2.0, adaptive: bool = False,
                 adaptive_eta: float = DEFAULT_ADAPTIVE_ETA) -> PyTree:
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


def project(eps: PyTree, params: PyTree, rho: float, *, p: float = 2.0,
            adaptive: bool = False,
            adaptive_eta: float = DEFAULT_ADAPTIVE_ETA) -> PyTree:
  """The closest point to eps in the ball of `perturbation` (p = 2 or inf).

  With `adaptive` the ball is {||eps / T_w||_p <= rho} and the projection is
  taken in the scaled coordinates.
  """
  scale = adaptive_scale(params, adaptive_eta) if adaptive else None
  if scale is not None:
    eps = jax.tree.map(jnp.divide, eps, scale)
  if p == 2:
    norm = jnp.sqrt(sum(jnp.sum(jnp.square(e)) for e in _float32_leaves(eps)))
    eps = _scale(eps, jnp.minimum(1.0, rho * _safe_inverse(norm)))
  elif p == math.inf:
    eps = jax.tree.map(lambda e: jnp.clip(e, -rho, rho), eps)
  else:
    raise ValueError(f'projected ascent needs p = 2 or inf, got p = {p}')
  if scale is not None:
    eps = jax.tree.map(jnp.multiply, eps, scale)
  return eps


def random_perturbation(key: jax.Array, params: PyTree, rho: float) -> PyTree:
  """eps = rho * z / ||z||_2 with z ~ N(0, I), shaped like params."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  noise = [jax.random.normal(k, w.shape, jnp.float32)
           for k, w in zip(keys, leaves)]
  return l2_perturbation(jax.tree.unflatten(treedef, noise), rho)


def perturb(params: PyTree, eps: PyTree) -> PyTree:
  """w + eps, leaf by leaf."""
  return jax.tree.map(jnp.add, params, eps)


def _transformed(grads: PyTree, transform) -> PyTree:
  return grads if transform is None else transform(grads)


def sam_gradient(grad_fn: GradFn, params: PyTree, rho: float, *,
                 ascent_grad_fn: GradFn | None = None,
                 first_grad_transform: Callable[[PyTree], PyTree] | None = None,
                 p: float = 2.0, adaptive: bool = False,
                 adaptive_eta: float = DEFAULT_ADAPTIVE_ETA):
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
    p: the norm of the neighbourhood (equation 2), in [1, inf].
    adaptive: ASAM's scale-invariant neighbourhood (see `perturbation`).
    adaptive_eta: eta of ASAM's T_w = |w| + eta.

  Returns:
    ((loss, aux), g2, g1): the loss and aux of the unperturbed pass (its
    BatchNorm statistics are the ones to keep), the SAM gradient
    grad L(w + eps) and the unperturbed gradient.
  """
  (loss, aux), g1 = (ascent_grad_fn or grad_fn)(params)
  eps = perturbation(_transformed(g1, first_grad_transform), params, rho,
                     p=p, adaptive=adaptive, adaptive_eta=adaptive_eta)
  _, g2 = grad_fn(perturb(params, eps))
  return (loss, aux), g2, g1


def random_sam_gradient(grad_fn: GradFn, params: PyTree, rho: float, *,
                        key: jax.Array, ascent_grad_fn: GradFn | None = None):
  """The random-perturbation ablation: g2 = grad L(w + rho z / ||z||).

  The unperturbed pass still runs for its loss and BatchNorm statistics (its
  gradient is returned as g1 and is dead code when unused).

  Args:
    grad_fn: as in `sam_gradient`.
    params: the current weights w.
    rho: radius of the sphere eps lies on.
    key: the random key of z; the same key gives the same eps.
    ascent_grad_fn: the unperturbed pass, if it differs from `grad_fn`.

  Returns:
    ((loss, aux), g2, g1) as `sam_gradient`.
  """
  (loss, aux), g1 = (ascent_grad_fn or grad_fn)(params)
  _, g2 = grad_fn(perturb(params, random_perturbation(key, params, rho)))
  return (loss, aux), g2, g1


def multistep_sam_gradient(
    grad_fn: GradFn, params: PyTree, rho: float, *, num_steps: int,
    ascent_grad_fn: GradFn | None = None,
    first_grad_transform: Callable[[PyTree], PyTree] | None = None,
    p: float = 2.0, adaptive: bool = False,
    adaptive_eta: float = DEFAULT_ADAPTIVE_ETA):
  """SAM with k steps of projected gradient ascent for eps (Appendix C.6).

  From eps = 0, each step adds the steepest-ascent step of length rho at
  w + eps (`perturbation` of the gradient there) and projects back onto the
  ball. The first step is plain SAM's eps, so num_steps = 1 is `sam_gradient`.

  Args:
    grad_fn, params, rho, ascent_grad_fn, first_grad_transform, p, adaptive,
      adaptive_eta: as in `sam_gradient` (p = 2 or inf when num_steps > 1).
    num_steps: k >= 1 ascent steps (k + 1 gradients in all).

  Returns:
    ((loss, aux), g2, g1) as `sam_gradient`; g1 is the gradient at w.
  """
  if num_steps < 1:
    raise ValueError(f'num_steps must be >= 1, got {num_steps}')
  ascent = ascent_grad_fn or grad_fn
  options = dict(p=p, adaptive=adaptive, adaptive_eta=adaptive_eta)
  (loss, aux), g1 = ascent(params)
  eps = perturbation(_transformed(g1, first_grad_transform), params, rho,
                     **options)

  # A Python loop (k is static and small): XLA:CPU took 18 minutes to
  # compile WRN-16-4 with k = 2 as a fori_loop, against about one for SAM.
  for _ in range(num_steps - 1):
    _, grads = ascent(perturb(params, eps))
    step = perturbation(_transformed(grads, first_grad_transform), params,
                        rho, **options)
    eps = project(jax.tree.map(jnp.add, eps, step), params, rho, **options)
  _, g2 = grad_fn(perturb(params, eps))
  return (loss, aux), g2, g1


def second_order_sam_gradient(
    grad_fn: GradFn, params: PyTree, rho: float, *,
    ascent_grad_fn: GradFn | None = None,
    first_grad_transform: Callable[[PyTree], PyTree] | None = None,
    p: float = 2.0, adaptive: bool = False,
    adaptive_eta: float = DEFAULT_ADAPTIVE_ETA):
  """d/dw L(w + eps(w)) including the d eps / dw term (Appendix C.4).

  With eps = E(g1(w), w): the gradient is
  g2 + (dE/dw)^T g2 + H(w) (dE/dg)^T g2, where g2 = grad L(w + eps) and
  H(w) = d g1 / dw. The Hessian enters through one Hessian-vector product
  (forward-over-reverse, linearised during the first pass), never a matrix.

  `first_grad_transform` must be an average (e.g. over devices): it is
  applied to g2 as well, so that the averages of the per-device results are
  the gradient of the averaged objective.

  Args:
    as in `sam_gradient`.

  Returns:
    ((loss, aux), g, g1, g2): as `sam_gradient` with g the full gradient,
    plus the first-order SAM gradient g2 (for their cosine similarity).
  """
  ascent = ascent_grad_fn or grad_fn
  # linearize: the first pass runs once and leaves w -> H(w) v to apply.
  g1, hessian_vector_product, (loss, aux) = jax.linearize(
      lambda w: ascent(w)[::-1], params, has_aux=True)
  eps_fn = lambda g, w: perturbation(g, w, rho, p=p, adaptive=adaptive,
                                     adaptive_eta=adaptive_eta)
  eps, eps_vjp = jax.vjp(eps_fn, _transformed(g1, first_grad_transform),
                         params)
  _, g2 = grad_fn(perturb(params, eps))
  through_g, through_w = eps_vjp(_transformed(g2, first_grad_transform))
  curvature = hessian_vector_product(through_g)
  grads = jax.tree.map(lambda a, b, c: a + b + c, g2, through_w, curvature)
  return (loss, aux), grads, g1, g2


def cosine_similarity(a: PyTree, b: PyTree) -> jax.Array:
  """<a, b> / (||a|| ||b||) over all leaves (0 if either is 0)."""
  dot = sum(jnp.vdot(x, y) for x, y in zip(_float32_leaves(a),
                                            _float32_leaves(b)))
  return dot * _safe_inverse(global_norm(a) * global_norm(b))
