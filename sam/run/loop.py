"""The training loop: a run's Setup -> pmapped steps -> metrics, checkpoints
and a summary.

The host never waits for the devices on a step that neither logs, evaluates
nor checkpoints: step metrics stay on the devices until the next log, and
finiteness is decided on device (sam/run/step.py) and read at those points
only. A non-finite state is never checkpointed: the run stops naming the
step where it happened, with the last good checkpoint kept.
"""

import contextlib
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
from sam.run import metrics_file
from sam.run import state as state_lib
from sam.run import step as step_lib


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


def evaluate(p_eval_step, state, datasets) -> dict[str, float]:
  """Loss and error on every eval split, every example counted once."""
  results = {}
  for split in datasets.eval_split_names:
    merged = None
    for batch in datasets.eval_batches(split):
      batch_metrics = state_lib.unreplicate(p_eval_step(state, batch))
      merged = batch_metrics if merged is None else merged.merge(batch_metrics)
    results.update(
        {f'{split}_{k}': float(v) for k, v in merged.compute().items()}
    )
  return results


def merge_all(collections: list[Any]):
  """One metrics collection from a list of per-step ones (None if empty)."""
  merged = None
  for collection in collections:
    merged = collection if merged is None else merged.merge(collection)
  return merged


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
    skipped_steps: non-finite steps skipped (optim.skip_nonfinite_steps).
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
      writer: the metric writer.
      probe: (params, batch_stats, batch) -> sharpness, for
        eval.sharpness_every_steps.
    """
    self.config, self.workdir, self.setup = config, workdir, setup
    self.manager, self.progress = manager, progress
    self.start_step = start_step
    self.writer, self.probe = writer, probe
    self.mesh = state_lib.device_mesh()
    self.p_train, self.p_eval = step_lib.pmap_steps(
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

  def _finite_so_far(self) -> int:
    """Reads the on-device record of non-finite steps (a host sync).

    Returns:
      The number of skipped steps.

    Raises:
      NonFiniteError: a step was not finite and the run does not skip.
    """
    count, first = jax.device_get(
        (self.state.nonfinite_steps[0], self.state.first_nonfinite_step[0])
    )
    if count and not self.config.optim.skip_nonfinite_steps:
      checkpoints.wait_until_saved(self.manager)
      raise NonFiniteError(
          f'non-finite loss or gradient at step {first}; the last good '
          f'checkpoint (step {self.manager.latest_step()}) is kept in '
          f'{self.workdir}'
      )
    return int(count)

  def _log(self, step: int) -> None:
    skipped = self._finite_so_far()
    merged = merge_all(state_lib.unreplicate(self.pending_metrics))
    self.pending_metrics = []
    scalars = {}
    if merged is not None and float(merged.train_loss.count) > 0:
      scalars = {k: float(v) for k, v in merged.compute().items()}
    if self.config.optim.skip_nonfinite_steps:
      scalars['skipped_steps'] = skipped
      if skipped:
        logging.warning('%d non-finite steps skipped so far.', skipped)
    scalars['learning_rate'] = float(self.setup.schedule(step - 1))
    scalars['epoch'] = self._epoch(step)
    # The state was just read, so the steps since the last log are done.
    now = time.time()
    last_step, last_time = self.last_log or (step, now)
    if step > last_step:
      scalars['steps_per_sec'] = (step - last_step) / max(now - last_time, 1e-9)
    self.last_log = (step, now)
    self._write(step, scalars)

  def _epoch(self, step: int) -> float:
    return step / self.setup.datasets.steps_per_epoch

  def _evaluate(self, step: int) -> None:
    self._finite_so_far()
    scalars = evaluate(self.p_eval, self.state, self.setup.datasets)
    self._write(step, {**scalars, 'epoch': self._epoch(step)})

  def _probe(self, step: int, batch) -> None:
    self._finite_so_far()
    first_device = jax.tree.map(
        lambda x: x[0], (self.state.params, self.state.batch_stats, batch)
    )
    self._write(step, {'sharpness': float(self.probe(*first_device))})

  def _checkpoint(self, step: int) -> None:
    self._finite_so_far()
    self.progress['wall_time_s'] += time.time() - self.segment_started
    checkpoints.save(
        self.manager, step, state_lib.unreplicate(self.state), self.progress
    )
    # Records up to a checkpoint are kept (a gs:// workdir writes them now).
    self._flush_metrics()
    self.segment_started = time.time()

  def _flush_metrics(self) -> None:
    with self._metrics_io():
      self.writer.flush()

  def _write(self, step: int, scalars: dict[str, float]) -> None:
    # TensorBoard's writer flushes on every write, so a full disk shows here.
    with self._metrics_io():
      self.writer.write_scalars(step, scalars)

  @contextlib.contextmanager
  def _metrics_io(self):
    """Turns a failed metric write (a full disk) into one OSError line."""
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except
      # TensorFlow's event writer raises its own types (ResourceExhausted).
      detail = str(e).splitlines()[0] if str(e) else ''
      raise OSError(
          f'cannot write the metrics in {self.workdir} ({type(e).__name__}: '
          f'{detail[:300]}); the latest complete checkpoint is step '
          f'{self.manager.latest_step()}'
      ) from e

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
      self._flush_metrics()
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
    with Preemption() as preemption:
      for step in range(self.start_step + 1, total + 1):
        batch = next(batches)
        self.state, step_metrics = self.p_train(self.state, batch)
        self.pending_metrics.append(step_metrics)
        if self.first_step_done is None:
          # Once: the throughput is timed from the end of the first
          # (compiling) step.
          jax.block_until_ready(self.state.step)
          self.first_step_done = (step, time.time())
          self.last_log = self.first_step_done
        self._after_step(step, batch, preemption.reached(step))
    checkpoints.wait_until_saved(self.manager)
    self._flush_metrics()

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
