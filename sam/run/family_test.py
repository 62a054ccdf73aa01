"""Every method of sam.methods.METHODS in the real train step, on 2 fake devices.

Every method trains the mini WRN (BatchNorm, so SAM-ON has parameters to
perturb) with replica groups, gradient accumulation and bfloat16 at once, or
is refused in one line where a combination cannot work; a method's state
survives a checkpoint round trip bit for bit.
"""

import jax
import numpy as np
import optax
import pytest

from configs import smoke
import models
from sam import methods
from sam import optim
from sam.run import checkpoints
from sam.run import checks
from sam.run import programs
from sam.run import state as state_lib

NUM_DEVICES = 2
# Every method of the table, so that a new one is tested with no edit here.
FAMILY = tuple(methods.METHODS)
# A resume must change nothing for any method: those that carry a state or
# read a schedule from the step counter most of all.
RESUMABLE = FAMILY
BATCH, SIZE, STEPS = 16, 8, 4
_BUILT = {}


def family_config(method):
  """wrn_mini, 2 devices x 2 replicas of 4 examples, 2 micro-batches each,
  bfloat16; ESAM's example selection takes whole replicas (no micro)."""
  c = smoke.get_config()
  c.model.name, c.model.dtype = 'wrn_mini', 'bfloat16'
  c.sam.method, c.sam.rho = method, 0.05
  c.optim.batch_size = BATCH
  c.optim.replica_batch_size = 4
  c.optim.accumulation_steps = 1 if method == 'esam' else 2
  c.optim.num_steps = STEPS
  if method == 'looksam':
    c.sam.looksam_every = 2  # SAM and reuse steps on each side of a resume.
  checks.validate(c, NUM_DEVICES)
  return c


def build(method):
  """(pmapped step, initial state) of a method, compiled once per test run."""
  if method not in _BUILT:
    config = family_config(method)
    model = models.create_model('wrn_mini', 10, 'bfloat16')
    schedule = optax.cosine_decay_schedule(0.1, STEPS)
    sam = methods.create(
        config.sam, learning_rate=schedule, num_steps=STEPS, seed=config.seed
    )
    tx = optim.create_optimizer(config.optim, schedule)
    state = state_lib.create_train_state(
        model, (SIZE, SIZE, 3), tx, config.seed, sam.method.init
    )
    # The run's own programs: two, chosen on the host, for a method with a
    # schedule (LookSAM, RST).
    train_programs, _ = programs.pmap_steps(
        config, model, 10, sam, jax.local_devices()[:NUM_DEVICES]
    )
    _BUILT[method] = train_programs, state
  return _BUILT[method]


def batch(index):
  rng = np.random.default_rng(index)
  return {
      'image': rng.normal(
          size=(NUM_DEVICES, BATCH // NUM_DEVICES, SIZE, SIZE, 3)
      ).astype(np.float32),
      'label': rng.integers(0, 10, (NUM_DEVICES, BATCH // NUM_DEVICES)).astype(
          np.int32
      ),
  }


def train(method, state, steps):
  train_programs, _ = build(method)
  mesh = state_lib.device_mesh(jax.local_devices()[:NUM_DEVICES])
  replicated = state_lib.replicate(state, mesh)
  metrics = None
  step_programs = train_programs.for_steps(steps.start, steps.stop)
  for index, program in zip(steps, step_programs, strict=True):
    replicated, metrics = program(
        replicated, state_lib.shard(batch(index), mesh)
    )
  return state_lib.unreplicate(replicated), state_lib.unreplicate(metrics)


def leaves_equal(a, b):
  return all(
      np.array_equal(np.asarray(x), np.asarray(y))
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
  )


@pytest.mark.parametrize('method', FAMILY)
def test_every_method_trains_with_groups_accumulation_and_bfloat16(method):
  _, start = build(method)
  state, metrics = train(method, start, range(STEPS))
  computed = {k: float(v) for k, v in metrics.compute().items()}
  assert np.isfinite(computed['train_loss']), computed
  assert int(state.step) == STEPS
  assert not leaves_equal(state.params, start.params)


def test_esam_selection_with_accumulation_is_refused_in_one_line():
  c = family_config('esam')
  c.optim.accumulation_steps = 2
  with pytest.raises(ValueError) as raised:
    checks.validate(c, NUM_DEVICES)
  assert '\n' not in str(raised.value)
  assert 'sam.esam_example_fraction' in str(raised.value)
  assert 'accumulation_steps' in str(raised.value)


@pytest.mark.parametrize('method', RESUMABLE)
def test_a_checkpoint_round_trip_changes_nothing(method, tmp_path):
  _, start = build(method)
  straight, _ = train(method, start, range(STEPS))
  half, _ = train(method, start, range(STEPS // 2))
  manager = checkpoints.create_manager(tmp_path, 2)
  checkpoints.save(manager, STEPS // 2, half, {})
  checkpoints.wait_until_saved(manager)
  restored = checkpoints.restore_latest(
      checkpoints.create_manager(tmp_path, 2), start
  )
  assert restored[0] == STEPS // 2
  assert leaves_equal(restored[1].method_state, half.method_state)
  resumed, _ = train(method, restored[1], range(STEPS // 2, STEPS))
  assert leaves_equal(resumed.params, straight.params)
  assert leaves_equal(resumed.method_state, straight.method_state)
  assert leaves_equal(resumed.opt_state, straight.opt_state)
