"""The interface every SAM-family method implements (sam/methods.py).

A method is a `Method`: `init(params) -> state` and
`gradient(objective, params, state) -> Gradient`, where the `Objective` is the
training loss on one replica's examples. Nothing here communicates across
devices: the step function decides which examples an objective covers and
passes `Objective.sync` for methods whose ascent direction is shared.
"""

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

PyTree = Any


class Outputs(NamedTuple):
  """What a pass of the training loss reports besides the loss.

  Attributes:
    batch_stats: BatchNorm's running statistics after the pass ({} for a
      model without BatchNorm, or the stored ones where they are frozen).
    per_example: {'loss', 'error', 'logits'} of each example, [n] leading.
  """

  batch_stats: PyTree
  per_example: dict[str, jax.Array]


# (params) -> ((loss, outputs), grads), as `jax.value_and_grad(f, has_aux=True)`.
GradFn = Callable[[PyTree], tuple[tuple[jax.Array, Any], PyTree]]


class Objective(NamedTuple):
  """The training loss on one replica's examples, as a method may query it.

  Attributes:
    grad: (params, ascent=False) -> ((loss, outputs), grads) on the
      replica's examples, accumulated over its micro-batches; outputs are
      the pass's `Outputs` (toy objectives may return anything there).
      `ascent=True` is an ascent pass: models with shake regularisers
      backpropagate through the sampled coefficients there. Every call sees
      the same examples and random key.
    sync: grads -> grads shared by every replica that shares one
      perturbation (the identity, or a mean over devices for
      sam.sync_perturbation); applied to ascent directions only.
    key: the replica's random key for the method's own draws.
    step: the number of optimizer steps taken before this one (for methods
      that act on a schedule: every k steps, a learning-rate-tied rho).
    losses: params -> the replica's per-example losses [n] (a forward pass
      in training mode, with the same key; no gradient), or None where the
      step cannot give it (with gradient accumulation).
    subset: indices [k] -> the Objective of those k of the replica's
      examples (static k), or None where the step cannot give it.
    descend: grads -> the weights the run's optimizer step would reach from
      w with these grads and its current state (learning rate, momentum,
      clipping), for methods that look ahead (SAMPa); None where there is
      no optimizer.
    second_pass: for a method with a `Method.schedule`, whether this step
      takes SAM's second pass, decided on the host (the loop compiles one
      program for True and one for False); None where the method decides
      on device from `step`.
    grad_pair: (params_a, params_b) -> (((loss_a, outputs_a), grads_a),
      ((loss_b, outputs_b), grads_b)): `grad` (ascent=False) at two weight
      sets that are the same on every replica (functions of the replicated
      state, as SAMPa's points), which the step may compute on two device
      groups (sam/run/pair_groups.py): one group's devices evaluate
      params_a and the other's params_b, each on its own and a partner's
      examples. The grads are then the mean over this replica and its
      partner's, so only a method whose returned grads and state are linear
      in them may call it (the step averages those over replicas); losses
      and outputs stay the replica's own. None where the step computes the
      two one after another (1 device, an odd count, micro-batches, replicas
      spanning devices, tests).
  """

  grad: Callable[..., tuple[tuple[jax.Array, Any], PyTree]]
  sync: Callable[[PyTree], PyTree]
  key: jax.Array | None = None
  step: jax.Array | None = None
  losses: Callable[[PyTree], jax.Array] | None = None
  subset: Callable[[jax.Array], 'Objective'] | None = None
  descend: Callable[[PyTree], PyTree] | None = None
  second_pass: bool | None = None
  grad_pair: Callable[..., tuple[Any, Any]] | None = None


class Gradient(NamedTuple):
  """What a method returns for one replica.

  Attributes:
    grads: the direction the optimizer applies (the step averages it over
      replicas).
    loss: the loss at w.
    outputs: the `Outputs` of the pass at w; its BatchNorm statistics are
      the ones kept.
    state: the method's state after this step (averaged over replicas).
    extras: pytrees averaged over replicas for `Method.metrics`.
  """

  grads: PyTree
  loss: jax.Array
  outputs: Any
  state: PyTree = ()
  extras: dict[str, PyTree] = {}


def no_metrics(grads: PyTree, extras: dict[str, PyTree]) -> dict:
  del grads, extras
  return {}


def perturbed_pass(outputs: Any) -> dict[str, jax.Array]:
  """The mean loss and error of a pass at w + eps, for `pass_metrics`.

  Args:
    outputs: the pass's `Outputs`; a toy objective's other outputs give {}.

  Returns:
    {'perturbed_loss', 'perturbed_error'}, or {}.
  """
  if not isinstance(outputs, Outputs):
    return {}
  return {
      'perturbed_loss': jnp.mean(outputs.per_example['loss']),
      'perturbed_error': jnp.mean(outputs.per_example['error']),
  }


def pass_metrics(grads: PyTree, extras: dict[str, PyTree]) -> dict:
  """Train loss and error at w + eps: what the official code logs as the
  train loss and error (Appendix C.4 reports them), beside the loss and
  error at w that the step logs for every method."""
  del grads
  names = {
      'perturbed_loss': 'train_loss_perturbed',
      'perturbed_error': 'train_error_perturbed',
  }
  return {names[k]: v for k, v in extras.items() if k in names}


def no_state(params: PyTree) -> PyTree:
  del params
  return ()


def unchanged(
    grads: PyTree, state: PyTree, extras: dict[str, PyTree], step: jax.Array
) -> tuple[PyTree, PyTree]:
  del extras, step
  return grads, state


class Method(NamedTuple):
  """A member of the SAM family.

  Attributes:
    init: params -> the method's initial state (() when it keeps none).
    gradient: (objective, params, state) -> Gradient, on one replica.
    metrics: (averaged grads, averaged extras) -> scalars to log.
    combine: (averaged grads, averaged state, averaged extras, step) ->
      (the update, the state to keep): the rule of a method that acts on the
      gradient the step applies, the mean over every replica (LookSAM's
      decomposition); `unchanged` for the others.
    schedule: for a method that takes SAM's second pass on some steps
      chosen from the step alone (LookSAM's period, RST's draws): steps
      [n] (optimizer steps taken before each) -> bool [n], computed on the
      host, which then runs the step compiled for that choice
      (`Objective.second_pass`) instead of a conditional on device; None
      for the others.
  """

  init: Callable[[PyTree], PyTree]
  gradient: Callable[[Objective, PyTree, PyTree], Gradient]
  metrics: Callable[[PyTree, dict], dict[str, jax.Array]] = no_metrics
  combine: Callable[..., tuple[PyTree, PyTree]] = unchanged
  schedule: Callable[[Any], Any] | None = None


def lone_replica_update(
    method: Method, objective: Objective, params: PyTree, state: PyTree
) -> Gradient:
  """What the step applies when one replica holds the whole batch: the
  method's gradient, then its `combine` (tests, notebooks).

  Args:
    method: the Method.
    objective: the loss on the batch; its `step` is the combine's step.
    params: the weights w.
    state: the method's state.

  Returns:
    The Gradient, with grads the update and state the state to keep.
  """
  result = method.gradient(objective, params, state)
  step = 0 if objective.step is None else objective.step
  grads, state = method.combine(result.grads, result.state, result.extras, step)
  return result._replace(grads=grads, state=state)


class FieldError(ValueError):
  """A method's field holds a value the method cannot take."""


def require(ok: bool, field: str, value: Any, why: str) -> None:
  """Raises FieldError 'sam.<field> = <value>: <why>' unless ok.

  A constructor's arguments are named as its config.sam fields, so the
  message names the field to change (sam/run/checks.py prefixes 'config.').

  Args:
    ok: whether the value is acceptable.
    field: the field's name in config.sam.
    value: its value.
    why: what it must be.
  """
  if not ok:
    raise FieldError(f'sam.{field} = {value!r}: {why}')


def require_in(
    field: str, value: float, low: float, high: float | None, closed: bool
) -> None:
  """Requires low <= value, and value <= high (closed) or < high (open).

  Args:
    field: the field's name in config.sam.
    value: its value (finite).
    low: the least value.
    high: the bound above, or None.
    closed: whether high itself is allowed.
  """
  inside = math.isfinite(value) and value >= low
  if high is not None:
    inside = inside and (value <= high if closed else value < high)
  bound = '' if high is None else f' and {"<=" if closed else "<"} {high}'
  require(inside, field, value, f'must be >= {low}{bound}')


def step_of(objective: Objective, method: str) -> jax.Array:
  """objective.step, for a method that acts on a schedule.

  Args:
    objective: the Objective.
    method: the method's name, for the error.

  Returns:
    The optimizer steps taken before this one.

  Raises:
    ValueError: when the objective has no step.
  """
  if objective.step is None:
    raise ValueError(f'{method} acts on a schedule: it needs objective.step')
  return jnp.asarray(objective.step)


def require_run_facts(method: str, **facts: Any) -> None:
  """Raises ValueError naming the run's facts (learning_rate, num_steps)
  that `method` needs and was given as None."""
  missing = [name for name, value in facts.items() if value is None]
  if missing:
    raise ValueError(f"{method} needs the run's {' and '.join(missing)}")


def objective(
    grad_fn: GradFn,
    ascent_grad_fn: GradFn | None = None,
    sync: Callable[[PyTree], PyTree] | None = None,
    key: jax.Array | None = None,
    step: jax.Array | int | None = None,
    descend: Callable[[PyTree], PyTree] | None = None,
) -> Objective:
  """An Objective from plain gradient functions (tests, notebooks).

  Args:
    grad_fn: params -> ((loss, outputs), grads).
    ascent_grad_fn: the ascent pass, if it differs from grad_fn.
    sync: the ascent directions' transform; identity if None.
    key: the random key.
    step: the optimizer steps taken before this one.
    descend: the optimizer's look-ahead (see Objective).

  Returns:
    An Objective.
  """

  def grad(params, ascent=False):
    return (ascent_grad_fn if ascent and ascent_grad_fn else grad_fn)(params)

  return Objective(grad, sync or (lambda g: g), key, step, descend=descend)
