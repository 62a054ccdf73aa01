"""The paper's ablations of how SAM finds eps, behind the `Method` interface.

`random` draws eps at random on the sphere of radius rho (Appendix C.5), and
`second_order` keeps the d eps / dw term that equation (3) drops (C.4). SAM
itself, with its ball (`p`, ASAM's `adaptive`) and k-step ascent (C.6), is
`sam.methods.sam`. Nothing here communicates across devices.
"""

from typing import Any

import jax

from sam import perturbation as ball
from sam.interface import Gradient
from sam.interface import Method
from sam.interface import Objective
from sam.interface import no_state
from sam.interface import pass_metrics
from sam.interface import perturbed_pass

PyTree = Any


def random_sam_gradient(
    objective: Objective, params: PyTree, rho: float
) -> Gradient:
  """The random-perturbation ablation: grad L(w + rho z / ||z||) (C.5).

  The pass at w still runs for its loss and BatchNorm statistics.

  Args:
    objective: the loss on the replica's examples; `objective.key` draws z
      (the same key gives the same eps).
    params: the weights w.
    rho: radius of the sphere eps lies on.

  Returns:
    The Gradient.
  """
  (loss, outputs), _ = objective.grad(params, ascent=True)
  eps = ball.random_perturbation(objective.key, params, rho)
  (_, perturbed), g2 = objective.grad(ball.perturb(params, eps))
  return Gradient(g2, loss, outputs, extras=perturbed_pass(perturbed))


def second_order_sam_gradient(
    objective: Objective,
    params: PyTree,
    rho: float,
    *,
    p: float = 2.0,
    adaptive: bool = False,
    adaptive_eta: float = ball.DEFAULT_ADAPTIVE_ETA,
) -> Gradient:
  """d/dw L(w + eps(w)) including the d eps / dw term (Appendix C.4).

  With eps = E(g1(w), w): the gradient is
  g2 + (dE/dw)^T g2 + H(w) (dE/dg)^T g2, where g2 = grad L(w + eps) and
  H(w) = d g1 / dw. The Hessian enters through one Hessian-vector product
  (forward-over-reverse, linearised during the first pass), never a matrix.

  `objective.sync` must be an average (e.g. over devices): it is applied to
  g2 as well, so that the averages of the per-replica results are the
  gradient of the averaged objective.

  Args:
    objective, params, rho, p, adaptive, adaptive_eta: as in
      `sam_gradient`.

  Returns:
    The Gradient, with extras {'first_order': g2}, the first-order SAM
    gradient (for their cosine similarity), and the perturbed pass's loss
    and error.
  """
  # linearize: the first pass runs once and leaves w -> H(w) v to apply.
  g1, hessian_vector_product, (loss, outputs) = jax.linearize(
      lambda w: objective.grad(w, ascent=True)[::-1], params, has_aux=True
  )
  eps_fn = lambda g, w: ball.perturbation(
      g, w, rho, p=p, adaptive=adaptive, adaptive_eta=adaptive_eta
  )
  eps, eps_vjp = jax.vjp(eps_fn, objective.sync(g1), params)
  (_, perturbed), g2 = objective.grad(ball.perturb(params, eps))
  through_g, through_w = eps_vjp(objective.sync(g2))
  curvature = hessian_vector_product(through_g)
  grads = jax.tree.map(lambda a, b, c: a + b + c, g2, through_w, curvature)
  return Gradient(
      grads,
      loss,
      outputs,
      extras={'first_order': g2, **perturbed_pass(perturbed)},
  )


# The constructors: each takes its config.sam fields by name (defaults in
# configs/base.py) and checks them.


def random(*, rho: float) -> Method:
  """A random perturbation of norm rho (the paper's C.5 ablation)."""
  return Method(
      no_state,
      lambda objective, params, state: random_sam_gradient(
          objective, params, rho
      ),
      pass_metrics,
  )


def _second_order_metrics(grads, extras):
  return {
      'second_order_cosine': ball.cosine_similarity(
          grads, extras['first_order']
      ),
      **pass_metrics(grads, extras),
  }


def second_order(
    *, rho: float, p: float, adaptive: bool, adaptive_eta: float
) -> Method:
  """SAM with its second-order term (C.4); logs second_order_cosine."""
  ball.check(p, adaptive_eta)

  def gradient(objective, params, state):
    del state
    return second_order_sam_gradient(
        objective,
        params,
        rho,
        p=p,
        adaptive=adaptive,
        adaptive_eta=adaptive_eta,
    )

  return Method(no_state, gradient, _second_order_metrics)
