"""Splitting a device's batch: m-sharpness groups and accumulation steps.

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
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp

PyTree = Any
PartFn = Callable[[PyTree, jax.Array], tuple[PyTree, PyTree]]


def split(batch: PyTree, num_parts: int) -> PyTree:
  """Reshapes every leaf [n, ...] to [num_parts, n // num_parts, ...]."""
  size = jax.tree.leaves(batch)[0].shape[0]
  if num_parts < 1 or size % num_parts:
    raise ValueError(f'cannot split {size} examples into {num_parts} equal '
                     'parts')
  return jax.tree.map(
      lambda x: x.reshape((num_parts, size // num_parts) + x.shape[1:]),
      batch)


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
  averaged, concatenated = jax.vmap(fn)(split(batch, num_parts),
                                        jnp.arange(num_parts))
  return (jax.tree.map(lambda x: jnp.mean(x, axis=0), averaged),
          _merge_leading(concatenated))


def unrolled_mean(fn: PartFn, batch: PyTree, part_size: int):
  """As `vmap_mean`, with a static loop over the parts.

  Each part is its own program: per-part weights (m-sharpness's descent
  passes) stay plain convolutions, where vmap makes them grouped ones, which
  XLA:CPU runs several times slower. Compile time grows with the parts.
  """
  num_parts = jax.tree.leaves(batch)[0].shape[0] // part_size
  outputs = [fn(jax.tree.map(lambda x, i=i: x[i * part_size:
                                              (i + 1) * part_size], batch),
                jnp.int32(i)) for i in range(num_parts)]
  averaged = jax.tree.map(lambda *x: sum(x) / num_parts,
                          *[out[0] for out in outputs])
  concatenated = jax.tree.map(lambda *x: jnp.concatenate(x),
                              *[out[1] for out in outputs])
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
      body, zeros, (parts, jnp.arange(num_parts, dtype=jnp.int32)),
      unroll=jax.default_backend() == 'cpu')
  return (jax.tree.map(lambda x: x / num_parts, total),
          _merge_leading(concatenated))


def accumulated_grad_fn(make_grad_fn: Callable[[PyTree, jax.Array], Any],
                        batch: PyTree, num_parts: int):
  """The gradient of the mean loss over a batch, accumulated over micro-batches.

  Args:
    make_grad_fn: (micro_batch, index) -> grad_fn, where grad_fn maps
      params -> ((loss, (averaged_aux, per_example_aux)), grads).
    batch: the batch, split into `num_parts` micro-batches.
    num_parts: the number of micro-batches k (1: no split).

  Returns:
    params -> ((loss, (averaged_aux, per_example_aux)), grads) on the whole
    batch: loss, grads and averaged_aux averaged over the micro-batches.
  """
  if num_parts == 1:
    return make_grad_fn(batch, jnp.int32(0))

  def grad_fn(params):
    def micro_step(micro_batch, index):
      (loss, (averaged_aux, per_example_aux)), grads = make_grad_fn(
          micro_batch, index)(params)
      return (loss, averaged_aux, grads), per_example_aux

    (loss, averaged_aux, grads), per_example_aux = scan_mean(
        micro_step, batch, num_parts)
    return (loss, (averaged_aux, per_example_aux)), grads

  return grad_fn
