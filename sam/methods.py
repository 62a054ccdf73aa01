"""The SAM family behind one interface: a name -> constructor table.

Every method, SGD included, is a `Method`: `init(params) -> state` and
`gradient(objective, params, state) -> Gradient`, where the `Objective` is the
training loss on one replica's examples. A constructor takes the method's own
fields of `config.sam` as keyword arguments (`create` passes exactly those),
so adding a method is one function, one line of `METHODS` and its test.

Algorithm 1 of the paper is `sam`: with g1 = grad L(w) and
eps = rho * g1 / ||g1||_2 (the norm over all parameter leaves together), the
update direction is g2 = grad L(w + eps), with the same examples and the same
random key in both passes. The paper's variants change how eps is found:
`p` and `adaptive` (ASAM) change the ball (sam/perturbation.py),
`ascent_steps` takes k steps of projected ascent (Appendix C.6), `random`
draws eps at random (C.5) and `second_order` keeps the d eps / dw term that
equation (3) drops (C.4).

Nothing here communicates across devices: the step function decides which
examples an objective covers, and passes `Objective.sync` (a mean over
devices, or the identity) for methods whose ascent direction is shared.
"""

import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp

from sam import directions
from sam import efficient
from sam import perturbation as ball
from sam.interface import Gradient
from sam.interface import Method
from sam.interface import Objective
from sam.interface import no_state
from sam.interface import pass_metrics
from sam.interface import perturbed_pass

PyTree = Any


def sgd_gradient(objective: Objective, params: PyTree) -> Gradient:
  """The plain gradient at w (the SGD baseline: no ascent).

  Args:
    objective: the loss on the replica's examples.
    params: the weights w.

  Returns:
    The Gradient.
  """
  (loss, aux), grads = objective.grad(params)
  return Gradient(grads, loss, aux)


def sam_gradient(
    objective: Objective,
    params: PyTree,
    rho: float,
    *,
    p: float = 2.0,
    ascent_steps: int = 1,
    adaptive: bool = False,
    adaptive_eta: float = ball.DEFAULT_ADAPTIVE_ETA,
) -> Gradient:
  """The SAM gradient of Algorithm 1 (equation 3), with k-step ascent.

  From eps = 0, each ascent step adds the steepest-ascent step of length rho
  at w + eps (`ball.perturbation` of the gradient there) and projects back
  onto the ball (Appendix C.6); one step is the paper's SAM.

  Args:
    objective: the loss on the replica's examples.
    params: the weights w.
    rho: radius of the neighbourhood; rho = 0 gives the plain gradient.
    p: the norm of the ball (equation 2), in [1, inf]; 2 or inf when
      ascent_steps > 1.
    ascent_steps: k >= 1 ascent steps (k + 1 gradients in all).
    adaptive: ASAM's scale-invariant ball.
    adaptive_eta: eta of ASAM's T_w = |w| + eta.

  Returns:
    The Gradient: grad L(w + eps), with the loss and aux of the pass at w
    (its BatchNorm statistics are the ones to keep).
  """
  if ascent_steps < 1:
    raise ValueError(f'ascent_steps must be >= 1, got {ascent_steps}')
  options = dict(p=p, adaptive=adaptive, adaptive_eta=adaptive_eta)
  (loss, aux), g1 = objective.grad(params, ascent=True)
  eps = ball.perturbation(objective.sync(g1), params, rho, **options)
  # A Python loop (k is static and small): XLA:CPU took 18 minutes to
  # compile WRN-16-4 with k = 2 as a fori_loop, against about one for SAM.
  for _ in range(ascent_steps - 1):
    _, grads = objective.grad(ball.perturb(params, eps), ascent=True)
    step = ball.perturbation(objective.sync(grads), params, rho, **options)
    eps = ball.project(jax.tree.map(jnp.add, eps, step), params, rho, **options)
  (_, perturbed), g2 = objective.grad(ball.perturb(params, eps))
  return Gradient(g2, loss, aux, extras=perturbed_pass(perturbed))


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
  (loss, aux), _ = objective.grad(params, ascent=True)
  eps = ball.random_perturbation(objective.key, params, rho)
  (_, perturbed), g2 = objective.grad(ball.perturb(params, eps))
  return Gradient(g2, loss, aux, extras=perturbed_pass(perturbed))


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
  g1, hessian_vector_product, (loss, aux) = jax.linearize(
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
      grads, loss, aux, extras={'first_order': g2, **perturbed_pass(perturbed)}
  )


# The constructors: each takes its own config.sam fields as keywords.


def sgd() -> Method:
  """SGD: the gradient at w."""
  return Method(
      no_state,
      lambda objective, params, state: sgd_gradient(objective, params),
  )


def sam(
    rho: float,
    p: float = 2.0,
    ascent_steps: int = 1,
    adaptive: bool = False,
    adaptive_eta: float = ball.DEFAULT_ADAPTIVE_ETA,
) -> Method:
  """SAM (Foret et al., 2021) and its ball and k-step variants."""

  def gradient(objective, params, state):
    del state
    return sam_gradient(
        objective,
        params,
        rho,
        p=p,
        ascent_steps=ascent_steps,
        adaptive=adaptive,
        adaptive_eta=adaptive_eta,
    )

  return Method(no_state, gradient, pass_metrics)


def random(rho: float) -> Method:
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
    rho: float,
    p: float = 2.0,
    adaptive: bool = False,
    adaptive_eta: float = ball.DEFAULT_ADAPTIVE_ETA,
) -> Method:
  """SAM with its second-order term (C.4); logs second_order_cosine."""

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


METHODS: dict[str, Callable[..., Method]] = {
    'sgd': sgd,
    'sam': sam,
    'random': random,
    'second_order': second_order,
    # The family after the paper: where to perturb (sam/directions.py) ...
    'gsam': directions.gsam,
    'msam': directions.msam,
    'fsam': directions.fsam,
    'samon': directions.samon,
    'sampa': directions.sampa,
    'rwp': directions.rwp,
    # ... and how to pay less for the second pass (sam/efficient.py).
    'esam': efficient.esam,
    'looksam': efficient.looksam,
    'aesam': efficient.aesam,
    'rst': efficient.rst,
}


# Facts of the run (not config.sam fields) that a constructor may take as
# keyword-only arguments: the learning-rate schedule (step -> lr) and the
# run's optimizer steps.
CONTEXT = ('learning_rate', 'num_steps')


def fields(name: str) -> dict[str, Any]:
  """The config.sam fields that method `name` takes, with their defaults
  (inspect.Parameter.empty for required ones)."""
  return {
      k: v.default
      for k, v in inspect.signature(METHODS[name]).parameters.items()
      if k not in CONTEXT
  }


def create(
    sam_config: Any,
    *,
    learning_rate: Callable[[Any], Any] | None = None,
    num_steps: int | None = None,
) -> Method:
  """Builds the method that `sam_config.method` names.

  Args:
    sam_config: the config's `sam` section (or any mapping with `method`
      and the method's fields).
    learning_rate: the run's schedule, for methods tied to it (gsam, sampa).
    num_steps: the run's optimizer steps, for methods with a schedule over
      the run (gsam, aesam).

  Returns:
    The Method.
  """
  name = sam_config['method']
  if name not in METHODS:
    raise ValueError(f'unknown sam.method {name!r}; valid: {sorted(METHODS)}')
  context = {'learning_rate': learning_rate, 'num_steps': num_steps}
  wanted = inspect.signature(METHODS[name]).parameters
  for key in CONTEXT:
    if key in wanted and context[key] is None:
      raise ValueError(f"sam.method={name} needs the run's {key}")
  return METHODS[name](
      **{k: sam_config[k] for k in fields(name)},
      **{k: context[k] for k in CONTEXT if k in wanted},
  )
