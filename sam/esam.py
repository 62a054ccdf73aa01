"""ESAM (Du et al., ICLR 2022): SAM's step with a cheaper second pass.

SAM (Algorithm 1) takes two sequential gradients per step: g = grad L(w) and
grad L(w + eps). ESAM keeps both but shrinks them: Stochastic Weight
Perturbation (SWP) perturbs a random fraction of the weights, and Sharpness-
sensitive Data Selection (SDS) takes the second gradient on the examples whose
loss rose most under the perturbation (two gradients and one forward pass a
step, the second gradient on a subset). Nothing here communicates: the
examples ranked are the replica's own.
"""

from typing import Any

import jax
import jax.numpy as jnp

from sam import perturbation as ball
from sam.interface import Gradient
from sam.interface import Method
from sam.interface import Objective
from sam.interface import no_state
from sam.interface import pass_metrics
from sam.interface import perturbed_pass
from sam.interface import require
from sam.interface import require_in

PyTree = Any


def swp_mask(key: jax.Array, params: PyTree, beta: float) -> PyTree:
  """ESAM's Stochastic Weight Perturbation mask, like params: each element
  is 1 with probability beta, else 0 (the same key, the same mask)."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(
      treedef,
      [
          jax.random.bernoulli(k, beta, w.shape).astype(w.dtype)
          for k, w in zip(keys, leaves)
      ],
  )


def esam_gradient(
    objective: Objective,
    params: PyTree,
    rho: float,
    weight_fraction: float,
    example_fraction: float,
) -> Gradient:
  """ESAM's gradient: SWP's sparse eps and SDS's second pass on a subset.

  eps = (rho / beta) m * g / ||g||, m ~ Bernoulli(beta) per element as the
  paper writes SWP, with the 1/beta of its code (`rho / grad_norm / beta`):
  E[eps] is SAM's eps. (The official code draws m per tensor and skips
  those tensors' gradients in the next first pass, so its ||g|| is the kept
  tensors'; a jitted pass saves nothing by skipping, so ||g|| here is over
  all weights.) The second gradient is grad L_{B+}(w + eps) over the
  k = round(gamma n) examples B+ with the largest l_i(w + eps) - l_i(w)
  (the official code keeps those above the int(gamma n)-th largest: one
  fewer; exactly k here, a static shape).

  Args:
    objective: the loss on the replica's examples; its key draws the mask,
      its `losses` and `subset` select the examples (when gamma < 1).
    params: the weights w.
    rho: radius of the neighbourhood.
    weight_fraction: beta in (0, 1], the probability that a weight is
      perturbed; 1 perturbs all of them, as SAM does.
    example_fraction: gamma in (0, 1], the fraction of the examples in the
      second pass; 1 keeps all of them (no forward pass to rank them).

  Returns:
    The Gradient, with the loss and outputs of the pass at w, and extras the
    loss and error at w + eps on the selected examples.
  """
  (loss, outputs), g = objective.grad(params, ascent=True)
  eps = ball.l2_perturbation(objective.sync(g), rho / weight_fraction)
  if weight_fraction < 1:
    if objective.key is None:
      raise ValueError('esam_weight_fraction < 1 needs objective.key')
    mask = swp_mask(objective.key, params, weight_fraction)
    eps = jax.tree.map(jnp.multiply, eps, mask)
  perturbed_params = ball.perturb(params, eps)
  before = outputs.per_example['loss']
  n = before.shape[0]
  k = max(1, min(n, round(example_fraction * n)))
  if k == n:
    (_, perturbed), grads = objective.grad(perturbed_params)
    return Gradient(grads, loss, outputs, extras=perturbed_pass(perturbed))
  if objective.losses is None or objective.subset is None:
    raise ValueError(
        'esam needs per-example losses and subsets of the batch, which the'
        ' step gives only without gradient accumulation: set'
        ' optim.accumulation_steps = 1 (or esam_example_fraction = 1)'
    )
  # SDS ranks by each example's own loss increase: the examples are the
  # replica's, so the ranking needs no sync.
  sharpness = objective.losses(perturbed_params) - before
  _, indices = jax.lax.top_k(jax.lax.stop_gradient(sharpness), k)
  (_, perturbed), grads = objective.subset(indices).grad(perturbed_params)
  return Gradient(grads, loss, outputs, extras=perturbed_pass(perturbed))


# The constructor takes its config.sam fields by name (defaults and
# citations in configs/base.py) and checks them.


def esam(
    *, rho: float, esam_weight_fraction: float, esam_example_fraction: float
) -> Method:
  """ESAM: SWP (perturb a fraction beta of the weights) and SDS (the second
  pass on the fraction gamma of examples most sensitive to eps)."""
  for field, value in (
      ('esam_weight_fraction', esam_weight_fraction),
      ('esam_example_fraction', esam_example_fraction),
  ):
    require_in(field, value, 0.0, 1.0, True)
    require(value > 0, field, value, 'must be > 0')

  def gradient(objective, params, state):
    del state
    return esam_gradient(
        objective, params, rho, esam_weight_fraction, esam_example_fraction
    )

  return Method(no_state, gradient, pass_metrics)
