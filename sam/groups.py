"""Wrappers around any method: m-sharpness groups and accumulation steps.

Both split the leading (example) axis into equal parts and recombine the
per-part results the same way: gradients, losses and BatchNorm statistics are
averaged (a running-statistics update is linear in the batch statistics, so
the average is what one device per part and a `pmean` would give), per-example
outputs are concatenated back in order.

- m-sharpness (Section 4.1) runs the parts in an unrolled loop (or side by
  side with `jax.vmap`): each group of m examples is a virtual device with
  its own perturbation (and its own BatchNorm batch, as on a device of
  batch m).
- Gradient accumulation runs the parts one after another with `jax.lax.scan`,
  so only one micro-batch's activations are live at a time (unrolled on CPU,
  see `scan_mean`).

A part function maps (part, index) -> (averaged, concatenated) pytrees.
`grouped_gradient` composes the two around a method's gradient function.
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from sam import interface

PyTree = Any
PartFn = Callable[[PyTree, jax.Array], tuple[PyTree, PyTree]]


def split(batch: PyTree, num_parts: int) -> PyTree:
  """Reshapes every leaf [n, ...] to [num_parts, n // num_parts, ...]."""
  size = jax.tree.leaves(batch)[0].shape[0]
  if num_parts < 1 or size % num_parts:
    raise ValueError(
        f'cannot split {size} examples into {num_parts} equal ' 'parts'
    )
  return jax.tree.map(
      lambda x: x.reshape((num_parts, size // num_parts) + x.shape[1:]), batch
  )


def _merge_leading(tree: PyTree) -> PyTree:
  return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), tree)


def vmap_mean(fn: PartFn, batch: PyTree, part_size: int):
  """Runs fn on consecutive parts of `part_size` examples side by side.

  Args:
    fn: (part, index) -> (averaged, concatenated).
    batch: pytree of [n, ...] arrays, n divisible by part_size.
    part_size: examples per part (m).

  Returns:
    (mean over parts of `averaged`, `concatenated` of all parts [n, ...]).
  """
  num_parts = jax.tree.leaves(batch)[0].shape[0] // part_size
  averaged, concatenated = jax.vmap(fn)(
      split(batch, num_parts), jnp.arange(num_parts)
  )
  return (
      jax.tree.map(lambda x: jnp.mean(x, axis=0), averaged),
      _merge_leading(concatenated),
  )


def unrolled_mean(fn: PartFn, batch: PyTree, part_size: int):
  """As `vmap_mean`, with a static loop over the parts.

  Each part is its own program: per-part weights (m-sharpness's descent
  passes) stay plain convolutions, where vmap makes them grouped ones, which
  XLA:CPU runs several times slower. Compile time grows with the parts.
  """
  num_parts = jax.tree.leaves(batch)[0].shape[0] // part_size
  outputs = [
      fn(
          jax.tree.map(
              lambda x, i=i: x[i * part_size : (i + 1) * part_size], batch
          ),
          jnp.int32(i),
      )
      for i in range(num_parts)
  ]
  averaged = jax.tree.map(
      lambda *x: sum(x) / num_parts, *[out[0] for out in outputs]
  )
  concatenated = jax.tree.map(
      lambda *x: jnp.concatenate(x), *[out[1] for out in outputs]
  )
  return averaged, concatenated


def scan_mean(fn: PartFn, batch: PyTree, num_parts: int):
  """Runs fn on `num_parts` equal micro-batches one after another.

  Args:
    fn: (part, index) -> (averaged, concatenated).
    batch: pytree of [n, ...] arrays, n divisible by num_parts.
    num_parts: the number of micro-batches k.

  Returns:
    (mean over parts of `averaged`, `concatenated` of all parts [n, ...]).
  """
  parts = split(batch, num_parts)
  first = jax.tree.map(lambda x: x[0], parts)
  averaged_shape, _ = jax.eval_shape(fn, first, jnp.int32(0))
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), averaged_shape)

  def body(total, inputs):
    averaged, concatenated = fn(*inputs)
    return jax.tree.map(jnp.add, total, averaged), concatenated

  # XLA:CPU runs a loop's body several times slower than the same code
  # outside a loop (WRN-16-4, batch 128, 2 micro-batches: 742 s a step
  # against 36 s without accumulation), so on CPU the loop is unrolled.
  # Accelerators keep the loop, which holds one micro-batch's activations
  # at a time.
  total, concatenated = jax.lax.scan(
      body,
      zeros,
      (parts, jnp.arange(num_parts, dtype=jnp.int32)),
      unroll=jax.default_backend() == 'cpu',
  )
  return (
      jax.tree.map(lambda x: x / num_parts, total),
      _merge_leading(concatenated),
  )


def accumulated_value_and_grad(
    loss_fn: Callable[..., tuple[jax.Array, interface.Outputs]],
    batch: PyTree,
    num_parts: int,
):
  """The gradient of the mean loss over a batch, accumulated over micro-batches.

  Args:
    loss_fn: (params, micro_batch, index) -> (loss, Outputs) on micro-batch
      `index`.
    batch: the batch, split into `num_parts` micro-batches.
    num_parts: the number of micro-batches k (1: no split).

  Returns:
    params -> ((loss, Outputs), grads) on the whole batch: loss, grads and
    BatchNorm statistics averaged over the micro-batches, per-example
    outputs concatenated.
  """
  value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)
  if num_parts == 1:
    return lambda params: value_and_grad(params, batch, jnp.int32(0))

  def grad_fn(params):
    def micro_step(micro_batch, index):
      (loss, outputs), grads = value_and_grad(params, micro_batch, index)
      return (loss, outputs.batch_stats, grads), outputs.per_example

    (loss, batch_stats, grads), per_example = scan_mean(
        micro_step, batch, num_parts
    )
    return (loss, interface.Outputs(batch_stats, per_example)), grads

  return grad_fn


class Group(NamedTuple):
  """One group of a device batch: a replica, or an m-sharpness group.

  Attributes:
    examples: pytree of [group size, ...] arrays.
    index: the group's place in the device batch (0 to count - 1; traced
      under vmap).
    count: the groups in the device batch.
    micro_batches: the micro-batches its objective accumulates over (1 when
      the device batch holds several groups: the micro-batches then hold
      whole groups).
  """

  examples: PyTree
  index: Any
  count: int
  micro_batches: int


class _Averaged(NamedTuple):
  """The parts of a group's Gradient that are averaged over groups."""

  grads: PyTree
  loss: jax.Array
  batch_stats: PyTree
  state: PyTree
  extras: dict[str, PyTree]


def grouped_gradient(
    gradient_of: Callable[[Group], interface.Gradient],
    batch: PyTree,
    group_size: int,
    num_micro: int,
    mode: str = 'unroll',
) -> interface.Gradient:
  """A method's gradient over groups of `group_size` examples of `batch`.

  Each group is a virtual device: the method runs on it alone (its own
  perturbation and BatchNorm batch). Gradients, losses, BatchNorm statistics,
  states and extras are averaged over the groups; per-example outputs are
  concatenated in order. With one group, the group's objective itself
  accumulates over the micro-batches; with several, the micro-batches run
  one after another (`scan_mean`) and each holds whole groups.

  Args:
    gradient_of: Group -> the method's Gradient on its examples (outputs
      an interface.Outputs).
    batch: pytree of [n, ...] arrays; group_size divides n and, with several
      groups, n // num_micro.
    group_size: examples per group.
    num_micro: micro-batches (accumulation steps).
    mode: 'unroll' (a static loop over the groups) or 'vmap'.

  Returns:
    The averaged Gradient.
  """
  num_groups = jax.tree.leaves(batch)[0].shape[0] // group_size
  if num_groups == 1:
    return gradient_of(Group(batch, 0, 1, num_micro))
  over_groups = unrolled_mean if mode == 'unroll' else vmap_mean
  groups_per_micro = num_groups // num_micro

  def one_group(examples, index):
    gradient = gradient_of(Group(examples, index, num_groups, 1))
    averaged = _Averaged(
        gradient.grads,
        gradient.loss,
        gradient.outputs.batch_stats,
        gradient.state,
        gradient.extras,
    )
    return averaged, gradient.outputs.per_example

  def micro_batch(examples, micro_index):
    return over_groups(
        lambda part, index: one_group(
            part, micro_index * groups_per_micro + index
        ),
        examples,
        group_size,
    )

  if num_micro == 1:
    averaged, per_example = micro_batch(batch, 0)
  else:
    averaged, per_example = scan_mean(micro_batch, batch, num_micro)
  return interface.Gradient(
      averaged.grads,
      averaged.loss,
      interface.Outputs(averaged.batch_stats, per_example),
      averaged.state,
      averaged.extras,
  )
