"""Methods that perturb from what earlier steps computed.

SAM evaluates its update gradient at w + rho g / ||g||, g this step's
gradient. These methods take the ascent direction from a state that earlier
steps built (passes a step): `msam` (1: against a momentum buffer), `fsam`
(2: along g minus an EMA of past gradients), `sampa` (2, independent of each
other: from the previous step's auxiliary gradient).

Their state is float32 pytrees shaped like params (SAMPa's is float64 in a
float64 run); the step averages it over replicas. `objective.sync` is applied to ascent directions only; nothing
here communicates across devices.
"""

from typing import Any

import jax
import jax.numpy as jnp

from sam import perturbation as ball
from sam.interface import Gradient
from sam.interface import Method
from sam.interface import Objective
from sam.interface import pass_metrics
from sam.interface import perturbed_pass
from sam.interface import require
from sam.interface import require_in
from sam.interface import step_of

PyTree = Any


def _zeros(params: PyTree) -> PyTree:
  return jax.tree.map(lambda w: jnp.zeros(w.shape, jnp.float32), params)


# Momentum-SAM.


def msam_gradient(
    objective: Objective,
    params: PyTree,
    velocity: PyTree,
    rho: float,
    momentum: float,
) -> Gradient:
  """Momentum-SAM: the one gradient of the step, at w - rho v / ||v||.

  v accumulates past gradients (v <- mu v + g, as SGD's momentum buffer), so
  -v points where the optimizer is heading: the perturbation costs no pass
  (a Nesterov-like look-ahead, scaled to norm rho). v = 0 gives eps = 0, so
  the first step is plain SGD.

  Args:
    objective: the loss on the replica's examples.
    params: the weights w.
    velocity: v, the momentum buffer of the previous steps' gradients.
    rho: the radius; MSAM's is much larger than SAM's (3 in the paper's
      code, against 0.2 for SAM there).
    momentum: mu of v <- mu v + g.

  Returns:
    The Gradient: grad L(w - rho v / ||v||), with that pass's loss and outputs
    (there is no pass at w), and the updated v as state.
  """
  eps = jax.tree.map(
      jnp.negative, ball.l2_perturbation(objective.sync(velocity), rho)
  )
  (loss, outputs), grads = objective.grad(ball.perturb(params, eps))
  velocity = jax.tree.map(
      lambda v, g: momentum * v + g.astype(jnp.float32), velocity, grads
  )
  return Gradient(grads, loss, outputs, state=velocity)


def msam(*, rho: float, msam_momentum: float) -> Method:
  """Momentum-SAM (Becker, Altrock & Conrad, 2023): 1 pass a step.

  The paper's rho is 3 for every setting (the official README runs MSAM with
  --rho 3 and SAM with --rho 0.2), far above SAM's 0.05: pass it explicitly.
  The reported loss is the perturbed pass's.
  """
  require_in('msam_momentum', msam_momentum, 0.0, 1.0, False)
  return Method(
      _zeros,
      lambda objective, params, state: msam_gradient(
          objective, params, state, rho, msam_momentum
      ),
  )


# Friendly SAM.


def fsam_gradient(
    objective: Objective,
    params: PyTree,
    average: PyTree,
    rho: float,
    sigma: float,
    decay: float,
) -> Gradient:
  """F-SAM: SAM perturbing along the batch's gradient noise.

  m, an EMA of past gradients, estimates the full-batch gradient; the
  perturbation follows d = g - sigma m_{t-1}, eps = rho d / ||d||, and then
  m_t = lambda m_{t-1} + (1 - lambda) g: the full-gradient part of g raises
  the sharpness of the whole data set rather than of the batch the update
  sees, and hurts generalization (the paper, Section 3). As the official
  code (nblt/F-SAM, FriendlySAM.first_step), m starts at the first gradient
  and nothing is subtracted on that step, which is SAM's.

  Args:
    objective: the loss on the replica's examples; step 0 starts m.
    params: the weights w.
    average: m_{t-1} (unused at step 0).
    rho: the radius.
    sigma: the weight of m in d (the paper's sigma).
    decay: the EMA's lambda.

  Returns:
    The Gradient, with the loss and outputs of the pass at w and m_t.
  """
  first = step_of(objective, 'fsam') == 0
  (loss, outputs), g = objective.grad(params, ascent=True)
  direction = jax.tree.map(
      lambda x, m: (x - jnp.where(first, 0.0, sigma) * m).astype(x.dtype),
      g,
      average,
  )
  average = jax.tree.map(
      lambda m, x: jnp.where(
          first, x.astype(jnp.float32), decay * m + (1 - decay) * x
      ),
      average,
      g,
  )
  eps = ball.l2_perturbation(objective.sync(direction), rho)
  (_, perturbed), grads = objective.grad(ball.perturb(params, eps))
  return Gradient(
      grads, loss, outputs, state=average, extras=perturbed_pass(perturbed)
  )


def fsam(*, rho: float, fsam_sigma: float, fsam_lambda: float) -> Method:
  """Friendly SAM (Li et al., CVPR 2024): d = g - sigma m_{t-1}, m an EMA of
  the gradients with decay lambda, started at the first gradient (the
  official code's sigma and lmbda)."""
  require_in('fsam_sigma', fsam_sigma, 0.0, None, True)
  require_in('fsam_lambda', fsam_lambda, 0.0, 1.0, False)
  return Method(
      _zeros,
      lambda objective, params, state: fsam_gradient(
          objective, params, state, rho, fsam_sigma, fsam_lambda
      ),
      pass_metrics,
  )


# SAMPa.


def _state_dtype(w: jax.Array):
  # float32 for float32 weights. A float64 run keeps g_y in float64: rounded
  # to float32, the order in which the devices average it would show in the
  # next step's points at 1e-9 (sam/run/pair_groups_test.py).
  return jnp.promote_types(w.dtype, jnp.float32)


def sampa_gradient(
    objective: Objective,
    params: PyTree,
    auxiliary: PyTree,
    rho: float,
    weight: float,
    device_groups: bool = True,
) -> Gradient:
  """SAMPa's step (Xie et al., 2024, equation 3 / the README's recursion).

  With x_t = w and g_y = grad f(y_t) from the previous step:
    x~_t = x_t + rho g_y / ||g_y||,   y_{t+1} = the optimizer's step from
    x_t with g_y,   update = (1 - lambda) grad f(x~_t) + lambda grad f(y_{t+1}).
  The paper writes y_{t+1} = x_t - eta_t g_y; the official code (train.py)
  takes a full SGD step there, momentum and weight decay included, which
  `objective.descend` gives (this run's optimizer; its L2 is in the loss,
  so g_y holds it). Neither point needs the other's gradient: with
  `objective.grad_pair` the step computes them on two device groups at once
  (the paper's parallelism), else they are two `objective.grad` calls (not
  a `jax.vmap` over the stacked weight sets: XLA:CPU runs those as grouped
  convolutions, at 4.9-6.5x SGD's step time against 1.8-2.0x for the two
  calls). grad f(y_{t+1}) is the next step's g_y. g_y = 0 at the start (as
  the official code) makes step 0's first gradient SGD's and its y_1 the
  optimizer's zero-gradient step.
  Departure: both gradients here are on the current batch; the official
  code takes grad f(x~_t) on the previous batch, the one g_y came from,
  which the step would have to carry in its checkpointed state.

  Args:
    objective: the loss on the replica's examples; needs `descend`.
    params: the weights x_t.
    auxiliary: g_y = grad f(y_t), the state.
    rho: the radius.
    weight: lambda, the weight of grad f(y_{t+1}) in the update.
    device_groups: use `objective.grad_pair` where the step gives one.

  Returns:
    The Gradient, with the loss and outputs of the pass at y_{t+1} (the point
    nearest w), extras with the x~ pass's loss and error, and
    grad f(y_{t+1}) as state.
  """
  if objective.descend is None:
    raise ValueError(
        "sampa looks ahead with the optimizer's step: needs "
        'objective.descend'
    )
  eps = ball.l2_perturbation(objective.sync(auxiliary), rho)
  perturbed = ball.perturb(params, eps)
  g_y = jax.tree.map(lambda g, w: g.astype(w.dtype), auxiliary, params)
  descended = objective.descend(g_y)
  # Both points are functions of the replicated w and g_y (the step averages
  # the state), as grad_pair requires; its grads enter linearly below.
  if device_groups and objective.grad_pair is not None:
    at_perturbed, at_descended = objective.grad_pair(perturbed, descended)
  else:
    at_perturbed = objective.grad(perturbed)
    at_descended = objective.grad(descended)
  (_, perturbed_outputs), g_perturbed = at_perturbed
  (loss, outputs), g_descended = at_descended
  update = jax.tree.map(
      lambda a, b: ((1 - weight) * a + weight * b).astype(a.dtype),
      g_perturbed,
      g_descended,
  )
  return Gradient(
      update,
      loss,
      outputs,
      state=jax.tree.map(
          lambda g, w: g.astype(_state_dtype(w)), g_descended, params
      ),
      extras=perturbed_pass(perturbed_outputs),
  )


def sampa(
    *, rho: float, sampa_lambda: float, sampa_device_groups: str
) -> Method:
  """SAMPa (Xie et al., NeurIPS 2024): two independent gradients a step, on
  two device groups where the step can (`Objective.grad_pair`) and
  sampa_device_groups says so: 'on', 'off', or 'auto' (off on XLA:CPU,
  where fake devices share the cores and the groups cost 2.5x SGD's step
  against 1.9x for two sequential calls, results/benchmarks/sampa.md; on
  elsewhere). Either way the update is the same up to rounding."""
  require_in('sampa_lambda', sampa_lambda, 0.0, 1.0, True)
  choices = ('auto', 'on', 'off')
  require(
      sampa_device_groups in choices,
      'sampa_device_groups',
      sampa_device_groups,
      f'valid: {choices}',
  )
  device_groups = sampa_device_groups == 'on' or (
      sampa_device_groups == 'auto' and jax.default_backend() != 'cpu'
  )

  def init(params):
    return jax.tree.map(lambda w: jnp.zeros(w.shape, _state_dtype(w)), params)

  def gradient(objective, params, state):
    return sampa_gradient(
        objective, params, state, rho, sampa_lambda, device_groups
    )

  return Method(init, gradient, pass_metrics)
