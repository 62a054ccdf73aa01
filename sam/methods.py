"""The SAM family behind one interface: a name -> constructor table.

Every method, SGD included, is a `Method`: `init(params) -> state` and
`gradient(objective, params, state) -> Gradient`, where the `Objective` is the
training loss on one replica's examples. A constructor's arguments are
named as the `config.sam` fields it reads, and its line in `METHODS` passes
them by name (`rho=s.rho`); their defaults live in configs/base.py alone. So
adding a method is one function, one line of `METHODS`, one field line in
`configs/base.py` per knob, and its test (README, "Adding a SAM variant").

Algorithm 1 of the paper is `sam`: with g1 = grad L(w) and
eps = rho * g1 / ||g1||_2 (the norm over all parameter leaves together), the
update direction is g2 = grad L(w + eps), with the same examples and the same
random key in both passes. The paper's variants change how eps is found:
`p` and `adaptive` (ASAM) change the ball (sam/perturbation.py) and
`ascent_steps` takes k steps of projected ascent (Appendix C.6); its
ablations `random` (C.5) and `second_order` (C.4) are in sam/ablations.py.

Nothing here communicates across devices: the step function decides which
examples an objective covers, and passes `Objective.sync` (a mean over
devices, or the identity) for methods whose ascent direction is shared.
"""

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from configs import base
from sam import ablations
from sam import directions
from sam import efficient
from sam import esam
from sam import history
from sam import perturbation as ball
from sam.interface import FieldError
from sam.interface import Gradient
from sam.interface import Method
from sam.interface import Objective
from sam.interface import no_state
from sam.interface import pass_metrics
from sam.interface import perturbed_pass
from sam.interface import require

PyTree = Any


def sgd_gradient(objective: Objective, params: PyTree) -> Gradient:
  """The plain gradient at w (the SGD baseline: no ascent).

  Args:
    objective: the loss on the replica's examples.
    params: the weights w.

  Returns:
    The Gradient.
  """
  (loss, outputs), grads = objective.grad(params)
  return Gradient(grads, loss, outputs)


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
    The Gradient: grad L(w + eps), with the loss and outputs of the pass at w
    (its BatchNorm statistics are the ones to keep).
  """
  options = dict(p=p, adaptive=adaptive, adaptive_eta=adaptive_eta)
  (loss, outputs), g1 = objective.grad(params, ascent=True)
  eps = ball.perturbation(objective.sync(g1), params, rho, **options)
  # A Python loop (k is static and small): XLA:CPU took 18 minutes to
  # compile WRN-16-4 with k = 2 as a fori_loop, against about one for SAM.
  for _ in range(ascent_steps - 1):
    _, grads = objective.grad(ball.perturb(params, eps), ascent=True)
    step = ball.perturbation(objective.sync(grads), params, rho, **options)
    eps = ball.project(jax.tree.map(jnp.add, eps, step), params, rho, **options)
  (_, perturbed), g2 = objective.grad(ball.perturb(params, eps))
  return Gradient(g2, loss, outputs, extras=perturbed_pass(perturbed))


# The constructors: each takes its config.sam fields by name (their defaults
# and citations are in configs/base.py) and checks them; `METHODS` below maps
# the fields to the arguments.


def sgd() -> Method:
  """SGD: the gradient at w."""
  return Method(
      no_state,
      lambda objective, params, state: sgd_gradient(objective, params),
  )


def sam(
    *,
    rho: float,
    p: float,
    ascent_steps: int,
    adaptive: bool,
    adaptive_eta: float,
) -> Method:
  """SAM (Foret et al., 2021) and its ball and k-step variants."""
  ball.check(p, adaptive_eta)
  require(ascent_steps >= 1, 'ascent_steps', ascent_steps, 'must be >= 1')
  require(
      ascent_steps == 1 or p in (2, math.inf),
      'ascent_steps',
      ascent_steps,
      'projected ascent (> 1) needs sam.p = 2 or inf',
  )

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


class RunFacts(NamedTuple):
  """What a few methods read of the run besides their config.sam fields.

  Attributes:
    learning_rate: the run's schedule, step -> lr (gsam).
    num_steps: the run's optimizer steps (gsam, aesam).
    seed: the run's seed (rst's draws).
  """

  learning_rate: Callable[[Any], Any] | None
  num_steps: int | None
  seed: int | None


# name -> (config.sam, the run's facts) -> Method: each line is the one place
# where a method's config fields become its arguments.
METHODS: dict[str, Callable[[Any, RunFacts], Method]] = {
    'sgd': lambda s, run: sgd(),
    'sam': lambda s, run: sam(
        rho=s.rho,
        p=s.p,
        ascent_steps=s.ascent_steps,
        adaptive=s.adaptive,
        adaptive_eta=s.adaptive_eta,
    ),
    # The paper's ablations (sam/ablations.py) ...
    'random': lambda s, run: ablations.random(rho=s.rho),
    'second_order': lambda s, run: ablations.second_order(
        rho=s.rho, p=s.p, adaptive=s.adaptive, adaptive_eta=s.adaptive_eta
    ),
    # ... the family after the paper: where to perturb (sam/directions.py,
    # and from earlier steps, sam/history.py) ...
    'gsam': lambda s, run: directions.gsam(
        rho=s.rho,
        gsam_rho_min=s.gsam_rho_min,
        gsam_alpha=s.gsam_alpha,
        learning_rate=run.learning_rate,
        num_steps=run.num_steps,
    ),
    'msam': lambda s, run: history.msam(
        rho=s.rho, msam_momentum=s.msam_momentum
    ),
    'fsam': lambda s, run: history.fsam(
        rho=s.rho, fsam_sigma=s.fsam_sigma, fsam_lambda=s.fsam_lambda
    ),
    'samon': lambda s, run: directions.samon(
        rho=s.rho,
        samon_adaptive=s.samon_adaptive,
        adaptive_eta=s.adaptive_eta,
    ),
    'sampa': lambda s, run: history.sampa(
        rho=s.rho,
        sampa_lambda=s.sampa_lambda,
        sampa_device_groups=s.sampa_device_groups,
    ),
    'rwp': lambda s, run: directions.rwp(
        rwp_sigma=s.rwp_sigma, rwp_alpha=s.rwp_alpha
    ),
    # ... and how to pay less for the second pass (sam/esam.py,
    # sam/efficient.py).
    'esam': lambda s, run: esam.esam(
        rho=s.rho,
        esam_weight_fraction=s.esam_weight_fraction,
        esam_example_fraction=s.esam_example_fraction,
    ),
    'looksam': lambda s, run: efficient.looksam(
        rho=s.rho, looksam_every=s.looksam_every, looksam_alpha=s.looksam_alpha
    ),
    'aesam': lambda s, run: efficient.aesam(
        rho=s.rho,
        aesam_ema=s.aesam_ema,
        aesam_lambda_start=s.aesam_lambda_start,
        aesam_lambda_end=s.aesam_lambda_end,
        num_steps=run.num_steps,
        aesam_branch=s.aesam_branch,
    ),
    'rst': lambda s, run: efficient.rst(
        rho=s.rho, rst_probability=s.rst_probability, seed=run.seed
    ),
}

# The fields of config.sam that `create` reads for every method.
SHARED_FIELDS = ('method', 'rho', 'm', 'm_groups', 'sync_perturbation')
M_GROUPS = ('unroll', 'vmap')


class Configured(NamedTuple):
  """The method that config.sam configures, and how the step groups it.

  Attributes:
    name: the method's name in METHODS.
    method: the Method.
    m: examples per perturbation (m-sharpness), 0 for the replica; 0 for
      SGD, which does not perturb.
    m_groups: how the groups run: 'unroll' or 'vmap'.
    sync_perturbation: one perturbation from the global batch's gradient
      (False for SGD).
    fields: the config.sam fields the method's METHODS line read, by name,
      with their values (rho among them where the method uses it): what
      summary.json records of the method.
  """

  name: str
  method: Method
  m: int
  m_groups: str
  sync_perturbation: bool
  fields: dict[str, Any]


class _Reads:
  """A config section as a METHODS line sees it, noting what it reads."""

  def __init__(self, section: Any):
    self._section = section
    self.names = set()

  def __getattr__(self, name: str) -> Any:
    self.names.add(name)
    try:
      return getattr(self._section, name)
    except AttributeError:
      method = self._section.method
      raise FieldError(
          f'sam.{name} = None: required by sam.method={method}'
      ) from None


def create(
    sam_config: Any,
    *,
    learning_rate: Callable[[Any], Any] | None = None,
    num_steps: int | None = None,
    seed: int | None = None,
) -> Configured:
  """Builds the method that `sam_config.method` names: the one place where
  config.sam is read.

  Args:
    sam_config: the config's `sam` section (any object with its fields as
      attributes).
    learning_rate: the run's schedule, for methods tied to it (gsam).
    num_steps: the run's optimizer steps, for methods with a schedule over
      the run (gsam, aesam).
    seed: the run's seed, for methods with their own draws (rst).

  Returns:
    The Configured method.

  Raises:
    FieldError: naming the first field the method cannot take.
  """
  s = sam_config
  require(s.method in METHODS, 'method', s.method, f'valid: {sorted(METHODS)}')
  require(s.rho >= 0, 'rho', s.rho, 'must be >= 0')
  require(math.isfinite(s.rho), 'rho', s.rho, 'must be finite')
  require(s.m >= 0, 'm', s.m, 'must be >= 0 (0: the replica)')
  require(
      s.m_groups in M_GROUPS,
      'm_groups',
      s.m_groups,
      f'valid: {sorted(M_GROUPS)}',
  )
  require(
      not (s.m and s.sync_perturbation),
      'm',
      s.m,
      'must be 0 with sam.sync_perturbation (one global eps)',
  )
  line = _Reads(s)
  method = METHODS[s.method](line, RunFacts(learning_rate, num_steps, seed))
  # m-sharpness and a shared perturbation shape the ascent: SGD has none.
  perturbs = s.method != 'sgd'
  return Configured(
      s.method,
      method,
      m=s.m if perturbs else 0,
      m_groups=s.m_groups,
      sync_perturbation=s.sync_perturbation and perturbs,
      fields={name: getattr(s, name) for name in sorted(line.names)},
  )


def fields(
    sam_config: Any,
    *,
    learning_rate: Callable[[Any], Any] | None = None,
    num_steps: int | None = None,
    seed: int | None = None,
) -> tuple[Configured, set[str]]:
  """`create`, and the fields its METHODS line read besides SHARED_FIELDS.

  Args:
    sam_config, learning_rate, num_steps, seed: as `create`.

  Returns:
    (the Configured method, the names of the method's own fields).
  """
  configured = create(
      _Reads(sam_config),
      learning_rate=learning_rate,
      num_steps=num_steps,
      seed=seed,
  )
  return configured, set(configured.fields) - set(SHARED_FIELDS)


def reads_rho(name: str) -> bool:
  """Whether method `name` reads sam.rho (RWP and SGD do not), so that a
  rho grid means something for it.

  Args:
    name: a key of METHODS.

  Returns:
    True if its METHODS line reads rho.
  """
  line = _Reads(base.sam_section())
  METHODS[name](line, RunFacts(lambda step: 0.1, 1, 0))
  return 'rho' in line.names


def build(
    name: str,
    *,
    learning_rate: Callable[[Any], Any] | None = None,
    num_steps: int | None = None,
    seed: int = 0,
    **fields: Any,
) -> Method:
  """Method `name` with configs/base.py's defaults and `fields` set, for
  notebooks and tests (a run builds its method with `create`).

  Args:
    name: a key of METHODS.
    learning_rate, num_steps, seed: as `create`.
    **fields: config.sam fields to set (e.g. rho=0.1, looksam_every=2).

  Returns:
    The Method.
  """
  config = base.sam_section()
  config.method = name
  config.update(fields)
  return create(
      config, learning_rate=learning_rate, num_steps=num_steps, seed=seed
  ).method
