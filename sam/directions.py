"""Methods that change where SAM perturbs, behind the `Method` interface.

SAM evaluates its update gradient at w + rho g / ||g||. These methods move
that point (passes a step): `gsam` (2: a learning-rate-tied rho and an
ascent along the surrogate gap), `samon` (2: the normalisation layers only),
`rwp` (2: a filter-wise Gaussian point, mixed with the gradient at w). Those
that perturb from what earlier steps computed (MSAM, F-SAM, SAMPa) are in
sam/history.py.

None keeps a state. `objective.sync` is applied to ascent directions only;
nothing here communicates across devices.
"""

import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from sam import perturbation as ball
from sam.interface import Gradient
from sam.interface import Method
from sam.interface import Objective
from sam.interface import no_state
from sam.interface import pass_metrics
from sam.interface import perturbed_pass
from sam.interface import require
from sam.interface import require_in
from sam.interface import require_run_facts
from sam.interface import step_of

PyTree = Any
Schedule = Callable[[Any], Any]


# GSAM.


def gsam_gradient(
    objective: Objective, params: PyTree, rho: jax.Array, alpha: float
) -> Gradient:
  """GSAM's update direction (Algorithm 1 of Zhuang et al., 2022).

  With g = grad L(w), eps = rho g / ||g|| and g_p = grad L(w + eps), g splits
  into its part along g_p and g_orth = g - (g . g_p / ||g_p||^2) g_p; the
  update g_p - alpha g_orth descends the perturbed loss and ascends along
  g_orth, which lowers the surrogate gap L(w + eps) - L(w) without changing
  the perturbed loss to first order.

  Args:
    objective: the loss on the replica's examples.
    params: the weights w.
    rho: this step's radius rho_t (see `gsam`).
    alpha: the weight of the orthogonal ascent; 0 gives SAM.

  Returns:
    The Gradient, with the loss and outputs of the pass at w and extras with the
    perturbed pass's loss and error.
  """
  (loss, outputs), g = objective.grad(params, ascent=True)
  eps = ball.l2_perturbation(objective.sync(g), rho)
  (_, perturbed), g_p = objective.grad(ball.perturb(params, eps))
  # Per replica, as the official code: its g_gsam is averaged afterwards.
  squared = ball.tree_vdot(g_p, g_p)
  coefficient = jnp.where(
      squared > 0,
      ball.tree_vdot(g, g_p) / jnp.where(squared > 0, squared, 1.0),
      0.0,
  )
  grads = jax.tree.map(
      lambda gp, gc: (gp - alpha * (gc - coefficient * gp)).astype(gp.dtype),
      g_p,
      g,
  )
  return Gradient(grads, loss, outputs, extras=perturbed_pass(perturbed))


def _gsam_metrics(grads, extras):
  return {'gsam_rho': extras['gsam_rho'], **pass_metrics(grads, extras)}


def gsam(
    *,
    rho: float,
    gsam_rho_min: float,
    gsam_alpha: float,
    learning_rate: Schedule,
    num_steps: int,
) -> Method:
  """GSAM: rho_t = rho_min + (rho - rho_min) (lr_t - lr_min) / (lr_max -
  lr_min), lr_max and lr_min over steps 0..num_steps (rho_t = rho when they
  are equal); rho = rho_min and alpha = 0 give SAM. Logs gsam_rho."""
  require_in('gsam_rho_min', gsam_rho_min, 0.0, None, True)
  require_in('gsam_alpha', gsam_alpha, 0.0, None, True)
  require(
      gsam_rho_min <= rho,
      'gsam_rho_min',
      gsam_rho_min,
      f"must be <= sam.rho ({rho}), which is GSAM's rho_max",
  )
  require_run_facts('gsam', learning_rate=learning_rate, num_steps=num_steps)
  # Once, outside the step: the schedule's range over the whole run.
  rates = np.asarray(jax.vmap(learning_rate)(jnp.arange(num_steps + 1)))
  lr_max, lr_min = float(rates.max()), float(rates.min())

  def gradient(objective, params, state):
    del state
    if lr_max == lr_min:
      rho_t = jnp.asarray(rho, jnp.float32)
    else:
      lr = learning_rate(step_of(objective, 'gsam'))
      rho_t = gsam_rho_min + (rho - gsam_rho_min) * (lr - lr_min) / (
          lr_max - lr_min
      )
    result = gsam_gradient(objective, params, rho_t, gsam_alpha)
    return result._replace(extras={**result.extras, 'gsam_rho': rho_t})

  return Method(no_state, gradient, _gsam_metrics)


# SAM-ON.

_NORM_TOKENS = frozenset({'bn', 'ln', 'gn'})


def _is_norm_parameter(path) -> bool:
  """A scale or bias of a normalisation layer, by name: flax's
  BatchNorm_0 / LayerNorm_0 / GroupNorm_0 and the models' bn, bn1, init_bn,
  shortcut_bn, stem_bn, ... (a head's or a squeeze-excite bias is not)."""
  names = [str(getattr(k, 'key', getattr(k, 'name', k))) for k in path]
  if len(names) < 2 or names[-1] not in ('scale', 'bias'):
    return False
  module = names[-2].lower()
  tokens = set(re.split(r'[_\d]+', module))
  return 'norm' in module or bool(tokens & _NORM_TOKENS)


def samon_gradient(
    objective: Objective,
    params: PyTree,
    rho: float,
    adaptive: bool,
    adaptive_eta: float,
) -> Gradient:
  """SAM-ON: SAM's perturbation on the normalisation parameters only.

  eps = rho g_N / ||g_N|| on the normalisation layers' scales and biases
  (g_N: their part of g) and 0 elsewhere; the radius is spent on those few
  leaves alone, which the paper finds is where SAM's benefit comes from.
  With `adaptive` the ball is ASAM's over those leaves (ASAM-ON: eps =
  rho T^2 g_N / ||T g_N||, T = |w| + eta), the paper's headline variant.

  Args:
    objective: the loss on the replica's examples.
    params: the weights w.
    rho: the radius, over the normalisation leaves.
    adaptive: ASAM-ON's elementwise ball.
    adaptive_eta: eta of T.

  Returns:
    The Gradient, with the loss and outputs of the pass at w.

  Raises:
    ValueError: when params has no normalisation parameters.
  """
  mask = jax.tree_util.tree_map_with_path(
      lambda path, _: _is_norm_parameter(path), params
  )
  if not any(jax.tree.leaves(mask)):
    raise ValueError(
        'samon perturbs normalisation parameters only, and params has none '
        "(no 'scale' or 'bias' under a *norm* or *bn* module)"
    )
  (loss, outputs), g = objective.grad(params, ascent=True)
  masked = jax.tree.map(
      lambda keep, x: x if keep else jnp.zeros_like(x),
      mask,
      objective.sync(g),
  )
  eps = ball.perturbation(
      masked, params, rho, adaptive=adaptive, adaptive_eta=adaptive_eta
  )
  (_, perturbed), grads = objective.grad(ball.perturb(params, eps))
  return Gradient(grads, loss, outputs, extras=perturbed_pass(perturbed))


def samon(*, rho: float, samon_adaptive: bool, adaptive_eta: float) -> Method:
  """SAM-ON (Mueller et al., NeurIPS 2023): SAM, or ASAM with
  `samon_adaptive`, on the normalisation layers alone.

  Only the normalisation leaves share rho, so its value is far larger than
  full SAM's (the official README runs ASAM-ON at rho = 10).
  """
  ball.check(2.0, adaptive_eta)
  return Method(
      no_state,
      lambda objective, params, state: samon_gradient(
          objective, params, rho, samon_adaptive, adaptive_eta
      ),
      pass_metrics,
  )


# Random weight perturbation.


def _filter_scale(w: jax.Array) -> jax.Array:
  """||w_filter|| per output filter (the last axis: flax's HWIO and IO
  kernels), broadcastable to w; a 1-D or scalar leaf is one filter, ||w||."""
  w = w.astype(jnp.float32)
  if w.ndim < 2:
    return jnp.linalg.norm(w.ravel())
  return jnp.sqrt(jnp.sum(jnp.square(w), axis=tuple(range(w.ndim - 1))))


def rwp_gradient(
    objective: Objective, params: PyTree, sigma: float, alpha: float
) -> Gradient:
  """RWP's update: alpha grad L(w + eps) + (1 - alpha) grad L(w), with
  eps ~ N(0, (sigma ||w_filter||)^2) filter-wise (Li et al.).

  The noise of a filter scales with its norm, so that it is the same relative
  size in every layer whatever the layer's scale (BatchNorm makes a filter's
  scale arbitrary). 1-D leaves (biases, normalisation scales) take the
  leaf's whole norm, as the official code (nblt/RWP) does for them. Its two
  gradients run on two GPUs, each on its own batch; here both are on the
  replica's examples, one after the other. alpha = 1 is the noisy gradient
  alone (Bisla et al.'s variant), one pass.

  Args:
    objective: the loss on the replica's examples; `objective.key` draws eps
      (the same key gives the same eps).
    params: the weights w.
    sigma: the noise's std relative to the filter norm (the code's gamma).
    alpha: the weight of the noisy gradient.

  Returns:
    The Gradient, with the loss and outputs of the pass at w (of the pass at
    w + eps when alpha = 1).
  """
  if objective.key is None:
    raise ValueError(
        'rwp draws its perturbation from objective.key: none given'
    )
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(objective.key, len(leaves))
  eps = [
      (sigma * _filter_scale(w) * jax.random.normal(k, w.shape)).astype(w.dtype)
      for k, w in zip(keys, leaves)
  ]
  (noisy_loss, noisy), g_noisy = objective.grad(
      ball.perturb(params, jax.tree.unflatten(treedef, eps))
  )
  if alpha == 1:
    return Gradient(g_noisy, noisy_loss, noisy)
  (loss, outputs), g = objective.grad(params)
  grads = jax.tree.map(
      lambda a, b: (alpha * a + (1 - alpha) * b).astype(b.dtype), g_noisy, g
  )
  return Gradient(grads, loss, outputs, extras=perturbed_pass(noisy))


def rwp(*, rwp_sigma: float, rwp_alpha: float) -> Method:
  """Random weight perturbation (Li et al.): the noisy and the clean
  gradient mixed by alpha, the noise filter-wise Gaussian."""
  require_in('rwp_sigma', rwp_sigma, 0.0, None, True)
  require_in('rwp_alpha', rwp_alpha, 0.0, 1.0, True)
  return Method(
      no_state,
      lambda objective, params, state: rwp_gradient(
          objective, params, rwp_sigma, rwp_alpha
      ),
      pass_metrics,
  )
