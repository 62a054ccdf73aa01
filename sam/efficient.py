"""Methods that cut SAM's cost by skipping its second pass on some steps.

SAM (Algorithm 1) takes two sequential gradients per step: g = grad L(w) and
grad L(w + eps). The methods here keep its ascent eps = rho g / ||g|| and take
the second pass only on some steps (ESAM, which shrinks it instead, is
sam/esam.py):

- `looksam` (Liu et al., CVPR 2022) runs SAM every k steps and, in between,
  reuses the component of SAM's gradient orthogonal to g.
- `aesam` (Jiang et al., ICLR 2023) runs SAM when ||g||^2 is large against
  its running mean and deviation, SGD otherwise.
- `rst` (Zhao et al., 2022) runs SAM with probability p, SGD otherwise, the
  trials drawn from the run's seed.

A skipped pass is skipped in the compiled program too. LookSAM's and RST's
choices are functions of the step alone (`Method.schedule`), so the host
makes them and runs the step compiled for that choice
(`Objective.second_pass`). AE-SAM's choice depends on the gradient, so it is
made on device: a `jax.lax.cond` where conditionals are cheap, and a select
of both branches on XLA:CPU, which compiles a convolution inside a
conditional's branch to a much slower kernel than the same convolution
outside one (benchmarks/cond_conv.py). Both give the same update. Where no
host choice is given (a step built without one, tests), LookSAM and RST
decide on device the same way. Each branch returns the same pytrees
(`extras` of a step without a perturbed pass hold the pass at w).

Nothing here communicates: the choices depend on `objective.step`, on the
state, or on quantities passed through `objective.sync`, so replicas that
share a perturbation share them.
"""

import functools
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
from sam.interface import unchanged as interface_unchanged

PyTree = Any

# RST's draws come from a stream of the run's seed, folded with the step
# alone: every replica and host draws the same choice, a resumed run repeats
# it, and each seed of a sweep draws its own schedule.
_RST_STREAM = 20220611


def _squared_norm(tree: PyTree) -> jax.Array:
  return sum(
      jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)
  )


def _safe_ratio(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
  """numerator / denominator, and 0 where denominator = 0."""
  nonzero = denominator > 0
  return jnp.where(nonzero, numerator / jnp.where(nonzero, denominator, 1.0), 0)


def _axpy(a: jax.Array, x: PyTree, y: PyTree) -> PyTree:
  """a x + y, leaf by leaf, in y's dtypes."""
  return jax.tree.map(lambda u, v: (a * u + v).astype(v.dtype), x, y)


def _sam_pass(objective: Objective, params: PyTree, g: PyTree, rho: float):
  """SAM's second pass from the first gradient g: (grads, extras)."""
  eps = ball.perturbation(objective.sync(g), params, rho)
  (_, perturbed), grads = objective.grad(ball.perturb(params, eps))
  return grads, perturbed_pass(perturbed)


# How a choice made on device picks its branch (see the module docstring).
BRANCHES = ('cond', 'select')


def _branch(use_sam, sam_step: Callable, sgd_step: Callable, branch: str):
  """sam_step() or sgd_step(): a Python choice calls one; a traced one is a
  `jax.lax.cond`, or with branch='select' both run and `jnp.where` picks."""
  if isinstance(use_sam, bool):
    return sam_step() if use_sam else sgd_step()
  if branch == 'cond':
    return jax.lax.cond(use_sam, sam_step, sgd_step)
  return jax.tree.map(
      lambda a, b: jnp.where(use_sam, a, b), sam_step(), sgd_step()
  )


def _host_or_device(objective: Objective, on_device: Callable[[], Any]):
  """The host's choice for this program if it made one, else on_device()."""
  if objective.second_pass is not None:
    return bool(objective.second_pass)
  return on_device()


def _with_sam_fraction(extras: dict, use_sam: jax.Array) -> dict:
  return {**extras, 'sam_fraction': jnp.asarray(use_sam, jnp.float32)}


def _fraction_metrics(grads: PyTree, extras: dict) -> dict:
  """pass_metrics (on an SGD step: the loss and error at w) and the fraction
  of steps that ran SAM's second pass."""
  return {**pass_metrics(grads, extras), 'sam_fraction': extras['sam_fraction']}


# LookSAM.


def orthogonal_component(g_s: PyTree, g: PyTree) -> PyTree:
  """g_v = g_s - (<g_s, g> / ||g||^2) g, the part of g_s orthogonal to g
  (g_s itself when g = 0)."""
  coefficient = _safe_ratio(ball.tree_vdot(g_s, g), _squared_norm(g))
  return _axpy(-coefficient, g, g_s)


def looksam_gradient(
    objective: Objective,
    params: PyTree,
    g_v: PyTree,
    rho: float,
    every: int,
) -> Gradient:
  """LookSAM's passes on one replica: SAM's every k steps, else one at w.

  The rule itself, g + alpha ||g||/||g_v|| g_v on the steps between, acts on
  the gradients the step applies, the means over every replica
  (`looksam_combine`), as public implementations decompose the all-reduced
  gradient. So this returns SAM's g_s on a SAM step (step % k == 0) and g
  otherwise, with g in extras for the decomposition.

  Args:
    objective: the loss on the replica's examples; `step` sets the schedule.
    params: the weights w.
    g_v: the state, the orthogonal component kept at the last SAM step,
      passed on unchanged (`looksam_combine` replaces it).
    rho, every: the radius and the period k.

  Returns:
    The Gradient, with extras {'first_gradient': g, 'sam_fraction'} and the
    perturbed pass's loss and error (the pass at w's on reuse steps).
  """
  # The ascent pass, as in SAM: its gradient is eps's direction on SAM steps
  # and the SGD part of the update on the others (the two coincide except in
  # models with shake regularisers).
  (loss, outputs), g = objective.grad(params, ascent=True)
  use_sam = _host_or_device(
      objective, lambda: step_of(objective, 'looksam') % every == 0
  )
  grads, extras = _branch(
      use_sam,
      lambda: _sam_pass(objective, params, g, rho),
      lambda: (g, perturbed_pass(outputs)),
      'cond',
  )
  extras = {**_with_sam_fraction(extras, use_sam), 'first_gradient': g}
  return Gradient(grads, loss, outputs, state=g_v, extras=extras)


def looksam_combine(
    grads: PyTree,
    g_v: PyTree,
    extras: dict[str, PyTree],
    step: jax.Array,
    every: int,
    alpha: float,
) -> tuple[PyTree, PyTree]:
  """LookSAM's rule on the applied gradients (Algorithm 1 of Liu et al.).

  On a SAM step it applies g_s and keeps g_v = g_s - proj_g(g_s); in
  between, it applies g + alpha ||g|| / ||g_v|| g_v: the kept direction,
  rescaled to alpha ||g||, so that its share follows the current gradient.

  Args:
    grads: the mean over replicas of `looksam_gradient`'s grads (g_s or g).
    g_v: the kept orthogonal component.
    extras: the mean of its extras; 'first_gradient' is g.
    step: the optimizer steps taken before this one.
    every, alpha: the period k and the reused weight.

  Returns:
    (the update, the g_v to keep).
  """
  g = extras['first_gradient']

  def sam_step(_):
    kept = orthogonal_component(grads, g)
    return grads, jax.tree.map(lambda n, o: n.astype(o.dtype), kept, g_v)

  def reuse_step(_):
    scale = alpha * _safe_ratio(
        jnp.sqrt(_squared_norm(g)), jnp.sqrt(_squared_norm(g_v))
    )
    return _axpy(scale, g_v, g), g_v

  # No network in either branch: a cheap conditional on every backend.
  return jax.lax.cond(step % every == 0, sam_step, reuse_step, None)


# AE-SAM.


def aesam_threshold_scale(
    step: jax.Array, lambda_start: float, lambda_end: float, num_steps: int
) -> jax.Array:
  """c_t = lambda_start + (lambda_end - lambda_start) t / T, held at
  lambda_end after T steps."""
  progress = jnp.clip(jnp.asarray(step, jnp.float32) / max(num_steps, 1), 0, 1)
  return lambda_start + (lambda_end - lambda_start) * progress


def aesam_gradient(
    objective: Objective,
    params: PyTree,
    state: dict[str, jax.Array],
    rho: float,
    ema: float,
    lambda_start: float,
    lambda_end: float,
    num_steps: int,
    branch: str = 'cond',
) -> Gradient:
  """AE-SAM's gradient: SAM where ||g||^2 is high for its recent history.

  With s = ||g_t||^2 (of the synced ascent direction, so that replicas that
  share a perturbation decide alike; the paper's one device decides on its
  whole batch, which here is sam.sync_perturbation), the EMAs are updated
  first,
  mu_t = delta mu_{t-1} + (1 - delta) s and
  sigma_t^2 = delta sigma_{t-1}^2 + (1 - delta) (s - mu_t)^2, and the step is
  SAM when s >= mu_t + c_t sigma_t, SGD otherwise (Algorithm 1).

  Args:
    objective: the loss on the replica's examples; `step` sets c_t.
    params: the weights w.
    state: {'mean': mu_{t-1}, 'variance': sigma_{t-1}^2}, float32 scalars.
    rho: radius of the neighbourhood.
    ema: delta, the EMAs' coefficient.
    lambda_start, lambda_end, num_steps: c_0, c_T and T.
    branch: 'cond' or 'select', how the choice picks its branch (the same
      update; see the module docstring).

  Returns:
    The Gradient, with state {mu_t, sigma_t^2} and extras {'sam_fraction'}
    and the perturbed pass's loss and error (the pass at w's on SGD steps).
  """
  # One pass at w serves both branches: the ascent pass, as in SAM (its
  # gradient is also the SGD step's, which differs only with shake models).
  (loss, outputs), g = objective.grad(params, ascent=True)
  squared = _squared_norm(objective.sync(g))
  mean = ema * state['mean'] + (1 - ema) * squared
  variance = ema * state['variance'] + (1 - ema) * jnp.square(squared - mean)
  scale = aesam_threshold_scale(
      step_of(objective, 'aesam'), lambda_start, lambda_end, num_steps
  )
  use_sam = _host_or_device(
      objective, lambda: squared >= mean + scale * jnp.sqrt(variance)
  )
  grads, extras = _branch(
      use_sam,
      lambda: _sam_pass(objective, params, g, rho),
      lambda: (g, perturbed_pass(outputs)),
      branch,
  )
  return Gradient(
      grads,
      loss,
      outputs,
      state={'mean': mean, 'variance': variance},
      extras=_with_sam_fraction(extras, use_sam),
  )


# RST.


def rst_uses_sam(step: jax.Array, probability: float, seed: int) -> jax.Array:
  """RST's Bernoulli trial of step `step` in the run of seed `seed`."""
  stream = jax.random.fold_in(jax.random.key(seed), _RST_STREAM)
  return jax.random.bernoulli(jax.random.fold_in(stream, step), probability)


def rst_schedule(steps: np.ndarray, probability: float, seed: int):
  """RST's trials of `steps` on the host: the draws of `rst_uses_sam`, one
  vectorised call (a vmap of a key function draws what each call draws).

  Args:
    steps: optimizer steps taken before each step, int [n].
    probability, seed: p and the run's seed.

  Returns:
    bool [n], True where the step takes SAM's second pass.
  """
  return np.asarray(
      _rst_trials(jnp.asarray(steps, jnp.int32), probability, seed)
  )


# Compiled once per (length, p, seed): the loop asks once a run, and a
# benchmark once a cycle.
@functools.partial(jax.jit, static_argnums=(1, 2))
def _rst_trials(steps: jax.Array, probability: float, seed: int) -> jax.Array:
  return jax.vmap(lambda step: rst_uses_sam(step, probability, seed))(steps)


def rst_gradient(
    objective: Objective,
    params: PyTree,
    rho: float,
    probability: float,
    seed: int,
) -> Gradient:
  """RST's gradient: SAM with probability p, SGD otherwise.

  The choice needs no gradient, so each branch makes its own first pass: the
  SGD step is the plain descent pass and the SAM step is SAM's.

  Args:
    objective: the loss on the replica's examples; `step` seeds the trial.
    params: the weights w.
    rho, probability: the radius and p, the probability of a SAM step.
    seed: the run's seed, which draws the trials.

  Returns:
    The Gradient, with extras {'sam_fraction'} and the perturbed pass's loss
    and error (the pass at w's on SGD steps).
  """
  use_sam = _host_or_device(
      objective,
      lambda: rst_uses_sam(step_of(objective, 'rst'), probability, seed),
  )

  def sam_step():
    (loss, outputs), g = objective.grad(params, ascent=True)
    grads, extras = _sam_pass(objective, params, g, rho)
    return grads, loss, outputs, extras

  def sgd_step():
    (loss, outputs), grads = objective.grad(params)
    return grads, loss, outputs, perturbed_pass(outputs)

  grads, loss, outputs, extras = _branch(use_sam, sam_step, sgd_step, 'cond')
  return Gradient(
      grads, loss, outputs, extras=_with_sam_fraction(extras, use_sam)
  )


# The constructors: each takes its config.sam fields by name (defaults and
# citations in configs/base.py) and checks them.


def looksam(*, rho: float, looksam_every: int, looksam_alpha: float) -> Method:
  """LookSAM: SAM every k steps; in between, g plus the kept orthogonal
  component of SAM's gradient."""
  require(looksam_every >= 1, 'looksam_every', looksam_every, 'must be >= 1')
  require_in('looksam_alpha', looksam_alpha, 0.0, None, True)

  def init(params):
    return jax.tree.map(jnp.zeros_like, params)

  def gradient(objective, params, state):
    return looksam_gradient(objective, params, state, rho, looksam_every)

  def combine(grads, state, extras, step):
    return looksam_combine(
        grads, state, extras, step, looksam_every, looksam_alpha
    )

  def schedule(steps):
    return np.asarray(steps) % looksam_every == 0

  return Method(init, gradient, _fraction_metrics, combine, schedule)


def aesam(
    *,
    rho: float,
    aesam_ema: float,
    aesam_lambda_start: float,
    aesam_lambda_end: float,
    num_steps: int,
    aesam_branch: str,
) -> Method:
  """AE-SAM: SAM on steps whose squared gradient norm is high against its
  EMA mean and deviation; logs sam_fraction. aesam_branch 'auto' is
  'select' on XLA:CPU and 'cond' on other backends (the same update)."""
  require_in('aesam_ema', aesam_ema, 0.0, 1.0, False)
  require_run_facts('aesam', num_steps=num_steps)
  choices = ('auto', *BRANCHES)
  require(
      aesam_branch in choices, 'aesam_branch', aesam_branch, f'valid: {choices}'
  )
  branch = aesam_branch
  if branch == 'auto':
    branch = 'select' if jax.default_backend() == 'cpu' else 'cond'

  def init(params):
    del params
    # mu_{-1} = sigma_{-1}^2 = 0: the first step's EMAs are (1 - delta)
    # fractions of its own ||g||^2, and it is a SAM step for c_0 <= 0.
    return {
        'mean': jnp.zeros((), jnp.float32),
        'variance': jnp.zeros((), jnp.float32),
    }

  def gradient(objective, params, state):
    return aesam_gradient(
        objective,
        params,
        state,
        rho,
        aesam_ema,
        aesam_lambda_start,
        aesam_lambda_end,
        num_steps,
        branch,
    )

  return Method(init, gradient, _fraction_metrics)


def rst(*, rho: float, rst_probability: float, seed: int) -> Method:
  """RST: each step is SAM with probability p, else SGD, the trials drawn
  from the run's seed; logs sam_fraction. Only RST's constant schedule of p
  is implemented."""
  require_in('rst_probability', rst_probability, 0.0, 1.0, True)
  require_run_facts('rst', seed=seed)

  def gradient(objective, params, state):
    del state
    return rst_gradient(objective, params, rho, rst_probability, seed)

  def schedule(steps):
    return rst_schedule(steps, rst_probability, seed)

  return Method(
      no_state, gradient, _fraction_metrics, interface_unchanged, schedule
  )
