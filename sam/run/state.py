"""The train state and its layout on the devices."""

import collections
import functools
from typing import Any, Iterable, Iterator

import flax.linen as nn
from flax.training import train_state
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import numpy as np
import optax

# The pmapped step's one axis: the data-parallel devices of this host.
AXIS = 'batch'


class TrainState(train_state.TrainState):
  """Parameters, optimizer state, BatchNorm running statistics, the SAM
  method's own state, and the step's finiteness record.

  Attributes:
    batch_stats: BatchNorm running statistics.
    method_state: what the method carries between steps (sam/methods.py).
    nonfinite_steps: steps whose loss or gradient was not finite (skipped
      with optim.skip_nonfinite_steps, else fatal).
    first_nonfinite_step: the first of them (0: none).
  """

  batch_stats: Any
  method_state: Any = ()
  nonfinite_steps: jax.Array = 0
  first_nonfinite_step: jax.Array = 0


def create_train_state(
    model: nn.Module,
    image_shape,
    tx: optax.GradientTransformation,
    seed: int,
    method_init=lambda params: (),
) -> TrainState:
  """Initialises the model on a dummy batch.

  Args:
    model: the linen module.
    image_shape: (H, W, C) of one example.
    tx: the optax optimizer.
    seed: initialisation seed.
    method_init: params -> the SAM method's initial state.

  Returns:
    A TrainState at step 0.
  """
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(seed), jnp.zeros((1,) + tuple(image_shape))
  )
  if model.dtype == jnp.float64:
    # The same initial values, held in float64 like the computation.
    variables = jax.tree.map(lambda x: x.astype(jnp.float64), variables)
  zero = jnp.zeros((), jnp.int32)
  # Strongly typed counters: flax's weakly typed 0 would make the second
  # call of the jitted step compile it again.
  return TrainState.create(
      apply_fn=model.apply,
      params=variables['params'],
      batch_stats=variables.get('batch_stats', {}),
      tx=tx,
      method_state=method_init(variables['params']),
      nonfinite_steps=zero,
      first_nonfinite_step=zero,
  ).replace(step=zero)


def device_mesh(devices=None) -> Mesh:
  """This host's devices on the step's axis."""
  return Mesh(np.asarray(devices or jax.local_devices()), (AXIS,))


def replicate(tree, mesh: Mesh):
  """One copy of `tree` per device, laid out as the pmapped step's outputs
  are (so its second call does not compile it again)."""
  sharding = NamedSharding(mesh, PartitionSpec(AXIS))
  count = mesh.devices.size
  return jax.tree.map(
      lambda x: jax.device_put(
          np.broadcast_to(np.asarray(x), (count,) + np.shape(x)), sharding
      ),
      tree,
  )


def shard(batch, mesh: Mesh):
  """Places a host batch of [devices, ...] arrays, one slice per device."""
  sharding = NamedSharding(mesh, PartitionSpec(AXIS))
  return jax.tree.map(lambda x: jax.device_put(x, sharding), batch)


def prefetch(
    host_batches: Iterable[Any], mesh: Mesh, size: int = 2
) -> Iterator[Any]:
  """Yields the batches placed on the devices, `size` transfers ahead."""
  queue = collections.deque()
  for batch in host_batches:
    queue.append(shard(batch, mesh))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


# Steps (or eval batches) the host may dispatch before it waits for the
# oldest. XLA:CPU deadlocks when a multi-device program with a collective
# is launched while a device has 32 computations in flight (its launch
# limit): one device waits in the collective for a launch that waits for a
# free slot (results/benchmarks/in_flight.md: beside two busy cores, a small
# pmapped step hung in 6 of 10 runs unbounded and 5 of 10 at 40 ahead, in
# none of 30 at 4, 8 and 28). Eight is far below 32, with room for the few
# programs a step adds (a checkpoint's copy, a log's learning rate), and
# keeps a queue on any device: a dispatch takes under a millisecond, a
# training step much longer.
MAX_IN_FLIGHT = 8


class InFlight:
  """The outputs of the programs dispatched and not yet waited for, at most
  `limit` of them: adding one more first waits for the oldest to finish
  (no transfer: the values stay on the devices)."""

  def __init__(self, limit: int = MAX_IN_FLIGHT):
    self.limit = limit
    self._outputs = collections.deque()

  def add(self, outputs) -> None:
    """Registers a dispatched program's outputs, waiting for the oldest
    program's outputs when more than `limit` are unfinished.

    Args:
      outputs: device arrays the program returns that nothing donates.
    """
    self._outputs.append(outputs)
    if len(self._outputs) > self.limit:
      jax.block_until_ready(self._outputs.popleft())


def _first_shard(leaf):
  """A replicated leaf's first device's rows as they lie there, [1, ...]
  (no copy, no dispatch); a host leaf as it is."""
  if isinstance(leaf, jax.Array):
    return leaf.addressable_shards[0].data
  return leaf


@jax.jit
def _first_rows(tree):
  """Each leaf's first row, as new buffers: never the replicated ones that
  the next step donates. One program for the whole tree: indexing each leaf
  eagerly dispatched, and compiled per shape, one gather per leaf."""
  return jax.tree.map(lambda x: x[0], tree)


def unreplicate(tree):
  """The first device's copy of a replicated tree, in one dispatch.

  Args:
    tree: arrays of [devices, ...], as `replicate` and the pmapped step
      lay them out.

  Returns:
    The first device's [...] of each leaf, as new arrays on that device.
  """
  return _first_rows(jax.tree.map(_first_shard, tree))
