"""SAMPa's two gradients on two device groups (`Objective.grad_pair`).

SAMPa (Xie et al., NeurIPS 2024) takes two gradients a step, at x~ and at y,
neither needing the other, and its paper computes them on two devices at
once. Under data parallelism each device holds one replica's n examples, and
the two can be ordered two ways:

- one after another (two `Objective.grad` calls): every device evaluates
  both weight sets on its own examples, two passes of n examples each;
- on two device groups (here): devices 2k and 2k + 1 form a pair (adjacent,
  so that a pair shares a host), each receives its partner's examples and
  regulariser key, the even devices evaluate the first weight set and the
  odd ones the second, each in one pass over the pair's 2n examples, and
  the pair then exchanges what the other needs.

The pass is a `jax.vmap` over the pair's two replicas at one weight set: the
convolutions see one batch of 2n examples, while BatchNorm normalises each
replica's n examples by their own statistics and each replica keeps its own
dropout and shake draws, as in the sequential form. Its gradient is that of
the mean of the two replicas' losses: the pair's mean gradient, which equals
the mean of the sequential form's two up to the order of float additions.
A method may therefore use these grads only linearly (SAMPa does; the step
averages the result over replicas). Losses, per-example outputs and
BatchNorm statistics are each replica's own.

Per device both forms do 2n example-passes; this one runs them as one pass
at one weight set instead of two at two weight sets, and adds two exchanges
within the pair (n examples; a gradient and the per-example outputs). It
wins where a pass over 2n examples costs less than two over n (accelerators
not saturated at the per-device batch, the weights read once) by more than
the exchange costs; on fake CPU devices, which share the host's cores, it
does not (results/benchmarks/sampa.md).
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp

from sam import groups
from sam.run import state as state_lib

AXIS = state_lib.AXIS
PyTree = Any
# (params, examples, index, ascent, key) -> (loss, Outputs): a group's loss
# with an explicit regulariser key (sam/run/step.py's group_objective).
KeyedLoss = Callable[..., tuple[jax.Array, Any]]


def applies(options: Any, group: groups.Group) -> bool:
  """Whether a group's two gradients can run on two device groups.

  Inside the pmapped step: it reads the number of devices from the axis.

  Args:
    options: the step's StepOptions (layout, group_mode,
      accumulation_steps).
    group: the group.

  Returns:
    True on an even number of devices where each group lies within one
    device and takes one pass (no micro-batches), and the device's groups
    run in a static loop (their collectives then come in the same order on
    every device).
  """
  layout = options.layout
  return (
      jax.lax.axis_size(AXIS) % 2 == 0
      and layout.devices_per_group == 1
      and options.accumulation_steps == 1
      and group.micro_batches == 1
      and (group.count == 1 or options.group_mode == 'unroll')
  )


def _swap(tree: PyTree) -> PyTree:
  """The partner's `tree`: devices 2k and 2k + 1 exchange theirs."""
  size = jax.lax.axis_size(AXIS)
  # batch: a copy between the two devices of each pair, nothing summed.
  return jax.lax.ppermute(tree, AXIS, [(i, i ^ 1) for i in range(size)])


def _select(second: jax.Array, if_second: PyTree, if_first: PyTree) -> PyTree:
  return jax.tree.map(lambda a, b: jnp.where(second, a, b), if_second, if_first)


def _pick(tree: PyTree, index: int) -> PyTree:
  return jax.tree.map(lambda x: x[index], tree)


def grad_pair_fn(
    loss: KeyedLoss, examples: PyTree, key: jax.Array
) -> Callable[[PyTree, PyTree], tuple[Any, Any]]:
  """`Objective.grad_pair` of one group on two device groups.

  Args:
    loss: the group's loss with an explicit regulariser key.
    examples: the group's examples.
    key: the group's regulariser key (its passes' dropout and shake draws).

  Returns:
    (params_a, params_b) -> (((loss_a, outputs_a), grads_a), ((loss_b,
    outputs_b), grads_b)); params_a and params_b must be the same on every
    device (functions of the replicated state).
  """

  def pair_loss(params, both, keys):
    values, outputs = jax.vmap(
        lambda e, k: loss(params, e, 0, False, k), in_axes=(0, 0)
    )(both, keys)
    return jnp.mean(values), (values, outputs)

  def grad_pair(params_a, params_b):
    second = jax.lax.axis_index(AXIS) % 2 == 1
    theirs, their_key = _swap((examples, key))
    both = jax.tree.map(lambda x, y: jnp.stack([x, y]), examples, theirs)
    (_, (values, outputs)), grads = jax.value_and_grad(pair_loss, has_aux=True)(
        _select(second, params_b, params_a),
        both,
        jnp.stack([key, their_key]),
    )
    mine = ((values[0], _pick(outputs, 0)), grads)
    # The partner's point on these examples, and its pair-mean gradient.
    other = _swap(((values[1], _pick(outputs, 1)), grads))
    return _select(second, other, mine), _select(second, mine, other)

  return grad_pair


def grad_pair(
    options: Any, group: groups.Group, loss: KeyedLoss, key: jax.Array
) -> Callable[[PyTree, PyTree], tuple[Any, Any]] | None:
  """`Objective.grad_pair` of a group where it `applies`, else None.

  Args:
    options: the step's StepOptions.
    group: the group.
    loss: its loss with an explicit regulariser key.
    key: its regulariser key.

  Returns:
    The function, or None (the method then calls `Objective.grad` twice).
  """
  if not applies(options, group):
    return None
  return grad_pair_fn(loss, group.examples, key)
