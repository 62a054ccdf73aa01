"""The training loop: a run's Setup -> pmapped steps -> metrics, checkpoints
and a summary.

The host never waits for the devices on a step that neither logs, evaluates
nor checkpoints: step metrics stay on the devices until the next log, and
finiteness is decided on device (sam/run/step.py) and read at those points
only, in the one transfer that brings the host what it needs there; the
host merges in numpy (sam/run/logs.py). A non-finite state is never
checkpointed: the run stops naming the step where it happened, with the
last good checkpoint kept.
"""

import functools
import json
import signal
import time
from typing import Any, NamedTuple

from absl import logging
from etils import epath
import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import ml_collections
import optax

import models
from sam import methods
from sam import optim
from sam.run import checkpoints
from sam.run import logs
from sam.run import metrics_file
from sam.run import programs
from sam.run import state as state_lib


class NonFiniteError(RuntimeError):
  """The loss or gradient stopped being finite."""


class Preemption:
  """SIGTERM (TPU / spot preemption) as a step at which every process stops.

  One process: a Python handler sets a flag that the loop reads after each
  step. Several processes (jax.distributed): the host that gets the signal
  may be any one of them, so the processes must agree. jax's preemption
  service (started by jax.distributed.initialize) catches SIGTERM on any
  host, and `reached_preemption_sync_point`, called by every process after
  every step, returns True on all of them at the same step. No Python
  handler is installed then: one set after jax.distributed.initialize
  replaces jax's and silently turns the service off.
  """

  def __init__(self):
    self.received = False
    self._shared = jax.process_count() > 1
    self._previous = signal.getsignal(signal.SIGTERM)

  def __enter__(self):
    if not self._shared:
      signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM: checkpointing the current step, then exiting.')
    self.received = True

  def reached(self, step: int) -> bool:
    """Whether to checkpoint and stop after `step`; every process must call
    this after every step, from the same first step."""
    if self._shared:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.received

  def __exit__(self, *exc):
    if not self._shared:
      signal.signal(signal.SIGTERM, self._previous)


def evaluate(
    p_eval_step, state, datasets, read=jax.device_get
) -> dict[str, float]:
  """Loss and error on every eval split, every example counted once.

  The host reads no result until every batch is dispatched (it waits only
  to keep state_lib.MAX_IN_FLIGHT unfinished); the results come back in one
  transfer and are merged in numpy.

  Args:
    p_eval_step: the pmapped eval step.
    state: the replicated TrainState.
    datasets: the run's data (the data.datasets.Datasets protocol).
    read: fetches a tree of device arrays to the host (the loop reads its
      finiteness record in the same transfer).

  Returns:
    '<split>_<metric>' -> value.
  """
  in_flight = state_lib.InFlight()
  outputs = {split: [] for split in datasets.eval_split_names}
  for split, batches in outputs.items():
    for batch in datasets.eval_batches(split):
      batches.append(p_eval_step(state, batch))
      in_flight.add(batches[-1])
  results = {}
  for split, collections in read(outputs).items():
    merged = logs.compute(logs.merge_steps(collections))
    results.update({f'{split}_{k}': v for k, v in merged.items()})
  return results


class Setup(NamedTuple):
  """What the loop trains, built from a config and its datasets.

  Attributes:
    datasets: the run's data (the data.datasets.Datasets protocol).
    model: the linen module.
    schedule: step -> learning rate.
    abstract_state: the TrainState's shapes and dtypes.
    total_steps: optimizer steps of the run.
    sam: the SAM-family member as config.sam configures it
      (sam/methods.py).
  """

  datasets: Any
  model: nn.Module
  schedule: optax.Schedule
  abstract_state: Any
  total_steps: int
  sam: methods.Configured


def prepare(config: ml_collections.ConfigDict, datasets) -> Setup:
  """The model, schedule and state shapes of a config over its datasets.

  Args:
    config: the run config.
    datasets: anything with the data.datasets.Datasets interface.

  Returns:
    The Setup.
  """
  model = models.create_model(
      config.model.name, datasets.num_classes, config.model.dtype
  )
  schedule = optim.learning_rate_schedule(
      config.optim, datasets.steps_per_epoch
  )
  total_steps = optim.total_train_steps(config.optim, datasets.steps_per_epoch)
  sam = methods.create(
      config.sam,
      learning_rate=schedule,
      num_steps=total_steps,
      seed=config.seed,
  )
  abstract_state = jax.eval_shape(
      functools.partial(
          state_lib.create_train_state,
          model,
          datasets.image_shape,
          optim.create_optimizer(config.optim, schedule),
          config.seed,
          sam.method.init,
      )
  )
  return Setup(datasets, model, schedule, abstract_state, total_steps, sam)


class Loop:
  """The steps of one process of a run, from a start state to the end.

  Attributes:
    state: the replicated TrainState after the last step taken.
    skipped_steps: non-finite steps skipped (optim.skip_nonfinite_steps),
      as last read.
  """

  def __init__(
      self,
      config: ml_collections.ConfigDict,
      workdir: epath.Path,
      setup,
      manager,
      state,
      start_step: int,
      progress: dict[str, Any],
      writer,
      probe=None,
  ):
    """Places the state on the devices and compiles nothing yet.

    Args:
      config: the run config.
      workdir: the run's workdir.
      setup: what to train (`prepare`).
      manager: the run's checkpoint manager.
      state: the TrainState to start from, on the host.
      start_step: the steps it has taken.
      progress: the record saved with each checkpoint ('wall_time_s').
      writer: the metric writer (the loop logs its own lines).
      probe: (params, batch_stats, batch) -> sharpness, for
        eval.sharpness_every_steps.
    """
    self.config, self.workdir, self.setup = config, workdir, setup
    self.manager, self.progress = manager, progress
    self.start_step = start_step
    self.probe = probe
    self.output = logs.Output(writer, workdir, manager.latest_step)
    self.mesh = state_lib.device_mesh()
    self.programs, self.p_eval = programs.pmap_steps(
        config, setup.model, setup.datasets.num_classes, setup.sam
    )
    self.state = state_lib.replicate(state, self.mesh)
    self.pending_metrics = []
    self.eval_every = max(
        1, round(config.eval.every_epochs * setup.datasets.steps_per_epoch)
    )
    self.segment_started = time.time()
    self.first_step_done = None  # (step, time) once the first step is done.
    self.last_log = None  # (step, time) of the last log.
    self.skipped_steps = 0
    self._read_at = None  # The step whose finiteness record was last read.

  def _read(self, step: int, tree=None):
    """`tree` on the host, with the record of non-finite steps read in the
    same transfer unless it was read at this step already (a host sync).

    Args:
      step: the step the loop is at.
      tree: device arrays (or None).

    Returns:
      The host copy of `tree`.

    Raises:
      NonFiniteError: a step was not finite and the run does not skip.
    """
    if self._read_at == step:
      return jax.device_get(tree)
    record = (self.state.nonfinite_steps, self.state.first_nonfinite_step)
    tree, (count, first) = jax.device_get((tree, record))
    # [devices] each, all equal: the step decides on gathered metrics.
    count, first = int(count[0]), int(first[0])
    if count and not self.config.optim.skip_nonfinite_steps:
      checkpoints.wait_until_saved(self.manager)
      raise NonFiniteError(
          f'non-finite loss or gradient at step {first}; the last good '
          f'checkpoint (step {self.manager.latest_step()}) is kept in '
          f'{self.workdir}'
      )
    self._read_at, self.skipped_steps = step, count
    return tree

  def _log(self, step: int) -> None:
    # Dispatched before the host waits for the steps in flight. Eagerly, as
    # the log always showed it: jitted, it differs in the last bits.
    learning_rate = self.setup.schedule(step - 1)
    pending, self.pending_metrics = self.pending_metrics, []
    pending, learning_rate = self._read(step, (pending, learning_rate))
    # The steps since the last log are done.
    now = time.time()
    merged = logs.merge_steps(pending)
    scalars = {}
    if merged is not None and merged.train_loss.count > 0:
      scalars = logs.compute(merged)
    if self.config.optim.skip_nonfinite_steps:
      scalars['skipped_steps'] = self.skipped_steps
      if self.skipped_steps:
        logging.warning(
            '%d non-finite steps skipped so far.', self.skipped_steps
        )
    scalars['learning_rate'] = float(learning_rate)
    scalars['epoch'] = self._epoch(step)
    rate, eta_s = logs.rate_and_eta(
        step, now, self.last_log, self.setup.total_steps
    )
    if rate is not None:
      scalars['steps_per_sec'] = rate
    self.last_log = (step, now)
    self.output.write(step, scalars, eta_s)

  def _epoch(self, step: int) -> float:
    return step / self.setup.datasets.steps_per_epoch

  def _evaluate(self, step: int) -> None:
    scalars = evaluate(
        self.p_eval,
        self.state,
        self.setup.datasets,
        functools.partial(self._read, step),
    )
    self.output.write(step, {**scalars, 'epoch': self._epoch(step)})

  def _probe(self, step: int, batch) -> None:
    first_device = state_lib.unreplicate(
        (self.state.params, self.state.batch_stats, batch)
    )
    sharpness = self._read(step, self.probe(*first_device))
    self.output.write(step, {'sharpness': float(sharpness)})

  def _checkpoint(self, step: int) -> None:
    # Dispatched before the finiteness read waits for the steps in flight.
    state = state_lib.unreplicate(self.state)
    self._read(step)
    self.progress['wall_time_s'] += time.time() - self.segment_started
    checkpoints.save(self.manager, step, state, self.progress)
    # Records up to a checkpoint are kept (a gs:// workdir writes them now).
    self.output.flush()
    self.segment_started = time.time()

  def _after_step(self, step: int, batch, preempted: bool) -> None:
    """Logs, probes, evaluates and checkpoints as the config asks."""
    config, total = self.config, self.setup.total_steps
    is_last = step == total
    if step % config.run.log_every_steps == 0 or is_last:
      self._log(step)
    every = config.eval.sharpness_every_steps
    if self.probe is not None and every and step % every == 0:
      self._probe(step, batch)
    if step % self.eval_every == 0 or is_last:
      self._evaluate(step)
    if step % config.run.checkpoint_every_steps == 0 or is_last or preempted:
      self._checkpoint(step)
    if preempted and not is_last:
      checkpoints.wait_until_saved(self.manager)
      self.output.flush()
      raise SystemExit(
          f'preempted: checkpointed step {step} of {total} in '
          f'{self.workdir}; rerun to resume'
      )

  def run_steps(self) -> None:
    """Takes every step from start_step + 1 to the run's last."""
    total = self.setup.total_steps
    batches = state_lib.prefetch(
        self.setup.datasets.train_batches(self.start_step, total), self.mesh
    )
    logging.info(
        'Training %s steps from step %d on %d devices.',
        total,
        self.start_step,
        jax.device_count(),
    )
    self.segment_started = time.time()
    in_flight = state_lib.InFlight()
    with Preemption() as preemption:
      # One program per step: the host's choice where the method has one.
      step_programs = self.programs.for_steps(self.start_step, total)
      for step, program in zip(
          range(self.start_step + 1, total + 1), step_programs
      ):
        batch = next(batches)
        self.state, step_metrics = program(self.state, batch)
        self.pending_metrics.append(step_metrics)
        in_flight.add(step_metrics)
        if self.first_step_done is None:
          # Once: the throughput is timed from the end of the first
          # (compiling) step.
          jax.block_until_ready(self.state.step)
          self.first_step_done = (step, time.time())
          self.last_log = self.first_step_done
        self._after_step(step, batch, preemption.reached(step))
    checkpoints.wait_until_saved(self.manager)
    self.output.flush()

  def images_per_second(self) -> float | None:
    """Training throughput of this process after its first step."""
    total = self.setup.total_steps
    if self.first_step_done is None or self.first_step_done[0] >= total:
      return None
    first_step, first_time = self.first_step_done
    return (
        (total - first_step)
        * self.setup.datasets.global_batch_size
        / max(time.time() - first_time, 1e-9)
    )


def sam_fraction(records: list[dict[str, Any]]) -> float | None:
  """The fraction of the run's steps that took a SAM step, from the logged
  `sam_fraction` of the methods that choose per step (each log averages the
  steps since the one before), or None where none was logged.

  Args:
    records: the run's metrics.jsonl records.

  Returns:
    The step-weighted mean, or None.
  """
  logged = {
      r['step']: r['sam_fraction'] for r in records if 'sam_fraction' in r
  }
  total = weighted = previous = 0
  for step in sorted(logged):
    weighted += logged[step] * (step - previous)
    total += step - previous
    previous = step
  return weighted / total if total else None


def method_record(
    sam: methods.Configured, records: list[dict[str, Any]]
) -> dict[str, Any]:
  """What a run's method did, for summary.json: its name, the fields it
  read with their values, its replica options and its SAM-step fraction
  (measured where it chooses per step; 0 for SGD and 1 for a method that
  takes its own step every time, as built)."""
  measured = sam_fraction(records)
  built = 0.0 if sam.name == 'sgd' else 1.0
  return {
      'name': sam.name,
      'fields': sam.fields,
      'm': sam.m,
      'sync_perturbation': sam.sync_perturbation,
      'sam_fraction': built if measured is None else measured,
      'sam_fraction_measured': measured is not None,
  }


def summarize(
    config, workdir, setup: Setup, wall_time_s, images_per_s
) -> dict[str, Any]:
  """The summary.json record of a finished run."""
  records = metrics_file.read_metrics(workdir)
  evals = [r for r in records if 'test_error' in r]
  final = {
      k: v
      for k, v in evals[-1].items()
      if k.startswith(('test_', 'validation_'))
  }
  best = {}
  for key in ('test_error', 'validation_error'):
    scored = [r for r in evals if key in r]
    if scored:
      best_record = min(scored, key=lambda r: r[key])
      best[key] = best_record[key]
      best[f'{key}_step'] = best_record['step']
  return {
      'config': json.loads(config.to_json()),
      'finished': True,
      'num_steps': setup.total_steps,
      'num_devices': jax.device_count(),
      'wall_time_s': wall_time_s,
      'images_per_s': images_per_s,
      'method': method_record(setup.sam, records),
      'final': final,
      'best': best,
  }
