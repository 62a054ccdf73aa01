"""The compiled programs of a run: the pmapped train step, and the eval step.

A method whose second pass depends on the step alone (`Method.schedule`:
LookSAM's period, RST's draws) gets two train programs, one compiled with
SAM's second pass and one without (`Objective.second_pass`), and the host
picks one per step. A `jax.lax.cond` on device would give the same update,
but XLA:CPU compiles a network inside a conditional's branch to much slower
kernels (benchmarks/cond_conv.py), and a select would pay for both branches
every step. The host's choice costs nothing on any backend.
"""

import functools
import itertools
from typing import Any, Callable, Iterator, NamedTuple

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from sam import methods
from sam.run import step as step_lib

AXIS = step_lib.AXIS


class TrainPrograms(NamedTuple):
  """The pmapped train step(s) of a run, each donating its state.

  Attributes:
    by_choice: {None: the step} for most methods; {True: the step with SAM's
      second pass, False: the step without} for a method with a schedule.
    schedule: the method's `Method.schedule`, or None.
  """

  by_choice: dict[bool | None, Callable[..., Any]]
  schedule: Callable[[np.ndarray], np.ndarray] | None

  def for_steps(self, start_step: int, total_steps: int) -> Iterator[Callable]:
    """The program of each step after start_step up to total_steps.

    Args:
      start_step: the steps taken so far.
      total_steps: the run's last step.

    Returns:
      An iterator of programs, (state, batch) -> (state, metrics), one per
      step, in order.
    """
    if self.schedule is None:
      return itertools.repeat(self.by_choice[None], total_steps - start_step)
    # The schedule takes the steps taken before each step, as the device's
    # state.step counts them.
    choices = self.schedule(np.arange(start_step, total_steps))
    return (self.by_choice[bool(c)] for c in choices)


def pmap_steps(
    config: ml_collections.ConfigDict,
    model: nn.Module,
    num_classes: int,
    sam: methods.Configured,
    devices=None,
) -> tuple[TrainPrograms, Callable[..., Any]]:
  """The run's train programs and its pmapped eval step.

  Args:
    config: the run config.
    model: the linen module.
    num_classes: the dataset's classes.
    sam: the SAM-family member, from `methods.create(config.sam, ...)`.
    devices: the devices to map over (default: all).

  Returns:
    (TrainPrograms, the pmapped eval step).
  """
  num_devices = len(devices) if devices else jax.device_count()
  schedule = sam.method.schedule
  choices = (None,) if schedule is None else (True, False)
  by_choice = {
      choice: jax.pmap(
          step_lib.make_train_step(
              config, model, num_classes, num_devices, sam, choice
          ),
          axis_name=AXIS,
          devices=devices,
          donate_argnums=(0,),
      )
      for choice in choices
  }
  evaluate = jax.pmap(
      functools.partial(step_lib.eval_step, model=model),
      axis_name=AXIS,
      devices=devices,
  )
  return TrainPrograms(by_choice, schedule), evaluate
