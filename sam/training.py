"""The training loop: config -> data + model + optimizer -> pmapped steps ->
metrics, checkpoints and a summary.

A workdir holds one run. Rerunning the same command resumes from the latest
checkpoint (same data order and random keys, so the result equals an
uninterrupted run); rerunning a finished run returns its summary without
training; a workdir holding another config is refused.
"""

import functools
import json
import os
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import periodic_actions
from flax import jax_utils

import models
from configs import base
from models import pretrained
from data import pipeline
from data import streaming
from sam import analysis_inputs
from sam import checkpointing
from sam import config_checks
from sam import optim
from sam import sharpness
from sam import steps
from sam import writers

SUMMARY_FILE = 'summary.json'


def _read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def _write_json_atomically(path: str, value: Any) -> None:
  with open(path + '.tmp', 'w') as f:
    json.dump(value, f, indent=2, sort_keys=True)
  os.replace(path + '.tmp', path)


def build(config: ml_collections.ConfigDict):
  """Data, model, schedule and the state's shapes for a config.

  Returns:
    (datasets, model, schedule, abstract TrainState (shapes and dtypes),
    total steps).
  """
  create = (streaming.create_streamed_datasets
            if streaming.uses_streaming(config) else pipeline.create_datasets)
  datasets = create(config, jax.process_index(), jax.process_count(),
                    jax.local_device_count())
  if datasets.steps_per_epoch < 1:
    raise config_checks.ConfigError(
        f'config.batch_size = {config.batch_size}: larger than the '
        f'{datasets.num_train_examples} training examples')
  model = models.create_model(config.model, datasets.num_classes,
                              config.dtype)
  if config.bootstrap_teacher_workdir:
    datasets.train_labels = predict_labels(config.bootstrap_teacher_workdir,
                                           datasets)
  schedule = optim.learning_rate_schedule(config, datasets.steps_per_epoch)
  abstract_state = jax.eval_shape(functools.partial(
      steps.create_train_state, model, datasets.image_shape,
      optim.create_optimizer(config, schedule), config.seed))
  total_steps = optim.total_train_steps(config, datasets.steps_per_epoch)
  return datasets, model, schedule, abstract_state, total_steps


def initial_state(config: ml_collections.ConfigDict, model, datasets,
                  abstract_state):
  """The step-0 state: a fresh initialisation, or pretrained weights."""
  state = steps.create_train_state(model, datasets.image_shape,
                                   abstract_state.tx, config.seed)
  if config.init_checkpoint:
    # Finetuning (paper C.2): pretrained weights; the head is re-initialised
    # when the number of classes differs.
    try:
      variables = pretrained.load_into(
          {'params': state.params, 'batch_stats': state.batch_stats},
          config.init_checkpoint)
    except ValueError as e:
      raise config_checks.ConfigError(
          f'config.init_checkpoint = {config.init_checkpoint!r}: {e}') from e
    state = state.replace(params=variables['params'],
                          batch_stats=variables['batch_stats'])
  return state


def replicate(tree, devices=None):
  """Copies `tree` to every local device, laid out as the pmapped step's
  outputs are (mesh axis 'batch'): with jax_utils.replicate's own layout the
  step's second call would compile the step a second time."""
  return jax.pmap(lambda x: x, axis_name='batch', devices=devices)(
      jax_utils.replicate(tree, devices))


def make_sharpness_probe(model, config: ml_collections.ConfigDict):
  """jitted (params, batch_stats, batch) -> the sharpness of the training
  objective on `batch` (train-mode BatchNorm), as sam.sharpness computes."""

  def probe(params, batch_stats, batch):
    loss_fn = analysis_inputs.make_batch_loss(
        model, batch_stats, 'train', weight_decay=config.weight_decay,
        exclude_bn_bias=config.weight_decay_exclude_bn_bias,
        label_smoothing=config.label_smoothing, dropout_seed=config.seed)
    return sharpness.sharpness(lambda p: loss_fn(p, batch), params,
                               config.sharpness_rho,
                               config.sharpness_ascent_steps).sharpness

  return jax.jit(probe)


def predict_labels(teacher_workdir: str, datasets) -> np.ndarray:
  """The classes a finished run predicts for `datasets`' training images
  (the paper's bootstrap targets, Table 4).

  Args:
    teacher_workdir: workdir of a finished run on the same dataset.
    datasets: the student's datasets (its training images are labelled).

  Returns:
    int32 [N] predicted labels.
  """
  _, teacher, variables, teacher_data = load_run(teacher_workdir)
  if teacher_data.image_shape != datasets.image_shape:
    raise config_checks.ConfigError(
        f'config.bootstrap_teacher_workdir = {teacher_workdir!r}: its images '
        f'are {teacher_data.image_shape}, not {datasets.image_shape}')
  predict = jax.jit(lambda x: jax.numpy.argmax(
      teacher.apply(variables, x, train=False), -1))
  batch = 256
  return np.concatenate([
      np.asarray(predict(pipeline.normalize(
          datasets.train_images[i:i + batch], datasets.mean,
          datasets.std).numpy()))
      for i in range(0, len(datasets.train_images), batch)]).astype(np.int32)


def record_label_noise(workdir: str, datasets) -> None:
  """Writes which training examples carry a corrupted label (indices into
  the training split after any validation holdout)."""
  changed = np.flatnonzero(datasets.clean_train_labels !=
                           datasets.train_labels)
  _write_json_atomically(os.path.join(workdir, 'label_noise.json'), {
      'num_train': len(datasets.train_labels),
      'num_changed': len(changed),
      'changed_indices': changed.tolist()})


class NonFiniteError(RuntimeError):
  """The loss or gradient stopped being finite."""


class PreemptionSignal:
  """Turns SIGTERM (TPU / spot preemption) into a flag the loop polls, so
  the run checkpoints its current step before exiting."""

  def __init__(self):
    self.received = False
    self._previous = signal.getsignal(signal.SIGTERM)

  def __enter__(self):
    signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM: checkpointing the current step, then exiting.')
    self.received = True

  def __exit__(self, *exc):
    signal.signal(signal.SIGTERM, self._previous)


def evaluate(p_eval_step, state, datasets) -> dict[str, float]:
  """Loss and error on every eval split, every example counted once."""
  results = {}
  for split in datasets.eval_splits:
    merged = None
    for batch in datasets.eval_batches(split):
      batch_metrics = jax_utils.unreplicate(p_eval_step(state, batch))
      merged = batch_metrics if merged is None else merged.merge(
          batch_metrics)
    results.update({f'{split}_{k}': float(v)
                    for k, v in merged.compute().items()})
  return results


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, Any]:
  """Trains and evaluates the config in `workdir`; see the module doc.

  Args:
    config: the run config (configs/base.py lists the fields).
    workdir: directory for checkpoints, metrics and summary.json.

  Returns:
    The run summary (also written to workdir/summary.json).
  """
  config_checks.validate(config, jax.device_count())
  config_checks.check_workdir(config, workdir)
  summary_path = os.path.join(workdir, SUMMARY_FILE)
  if os.path.exists(summary_path):
    logging.info('%s is a finished run; not training again.', workdir)
    return _read_json(summary_path)

  datasets, model, schedule, abstract_state, total_steps = build(config)
  is_primary = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  if is_primary:
    _write_json_atomically(os.path.join(workdir, 'config.json'),
                           json.loads(config.to_json()))
    if datasets.clean_train_labels is not None:
      record_label_noise(workdir, datasets)

  manager = checkpointing.create_manager(workdir, config.keep_checkpoints)
  progress = {'wall_time_s': 0.0}
  restored = checkpointing.restore_latest(manager, abstract_state)
  if restored is None:
    start_step, state = 0, initial_state(config, model, datasets,
                                         abstract_state)
  else:
    start_step, state, progress = restored
    logging.info('Resuming from the checkpoint at step %d.', start_step)
  if is_primary:
    writers.truncate_metrics(workdir, start_step)
  writer = writers.create_writer(workdir, is_primary)
  if start_step == 0:
    writer.write_hparams(config.to_dict())

  p_train_step = jax.pmap(
      functools.partial(steps.train_step, model=model, config=config),
      axis_name='batch', donate_argnums=(0,))
  p_eval_step = jax.pmap(functools.partial(steps.eval_step, model=model),
                         axis_name='batch')
  state = replicate(state)
  sharpness_probe = make_sharpness_probe(model, config)
  eval_every = max(1, round(config.eval_every_epochs *
                            datasets.steps_per_epoch))
  report_progress = periodic_actions.ReportProgress(
      num_train_steps=total_steps, writer=writer,
      every_steps=config.log_every_steps)

  batches = jax_utils.prefetch_to_device(
      datasets.train_batches(start_step, total_steps), 2)
  started = time.time()
  first_step_done = None
  logging.info('Training %s steps from step %d on %d devices.', total_steps,
               start_step, jax.device_count())

  def save_checkpoint(step):
    progress['wall_time_s'] += time.time() - started
    checkpointing.save(manager, step, jax_utils.unreplicate(state), progress)
    return time.time()

  with PreemptionSignal() as preemption:
    train_metrics = None
    for step in range(start_step + 1, total_steps + 1):
      batch = next(batches)
      state, step_metrics = p_train_step(state, batch)
      step_metrics = jax_utils.unreplicate(step_metrics)
      # One host sync a step: a non-finite step must never be checkpointed,
      # and the error names the step where it happened.
      if np.isfinite(float(step_metrics.grad_norm.compute()) +
                     float(step_metrics.train_loss.compute())):
        train_metrics = step_metrics if train_metrics is None else (
            train_metrics.merge(step_metrics))
      elif config.skip_nonfinite_steps:
        # The step function kept the previous state for this step.
        progress['skipped_steps'] = progress.get('skipped_steps', 0) + 1
        logging.warning('Non-finite loss or gradient at step %d: skipped '
                        '(%d so far).', step, progress['skipped_steps'])
      else:
        checkpointing.wait_until_saved(manager)
        raise NonFiniteError(
            f'non-finite loss or gradient at step {step}; the last good '
            f'checkpoint (step {manager.latest_step()}) is kept in {workdir}')
      if first_step_done is None:
        first_step_done = (step, time.time())
      report_progress(step)
      is_last = step == total_steps
      if step % config.log_every_steps == 0 or is_last:
        scalars = ({k: float(v) for k, v in train_metrics.compute().items()}
                   if train_metrics is not None else {})
        if config.skip_nonfinite_steps:
          scalars['skipped_steps'] = progress.get('skipped_steps', 0)
        scalars['learning_rate'] = float(schedule(step - 1))
        scalars['epoch'] = step / datasets.steps_per_epoch
        writer.write_scalars(step, scalars)
        train_metrics = None
      if (config.sharpness_every_steps and
          step % config.sharpness_every_steps == 0):
        first_device = jax.tree.map(lambda x: x[0], (
            state.params, state.batch_stats, batch))
        writer.write_scalars(step, {'sharpness': float(
            sharpness_probe(*first_device))})
      if step % eval_every == 0 or is_last:
        writer.write_scalars(step, evaluate(p_eval_step, state, datasets))
      if (step % config.checkpoint_every_steps == 0 or is_last or
          preemption.received):
        started = save_checkpoint(step)
      if preemption.received and not is_last:
        checkpointing.wait_until_saved(manager)
        writer.flush()
        raise SystemExit(f'preempted: checkpointed step {step} of '
                         f'{total_steps} in {workdir}; rerun to resume')
  checkpointing.wait_until_saved(manager)
  writer.flush()

  summary = summarize(config, workdir, total_steps, progress['wall_time_s'],
                      first_step_done, datasets.global_batch_size)
  if is_primary:
    _write_json_atomically(summary_path, summary)
  return summary


def summarize(config, workdir, total_steps, wall_time_s, first_step_done,
              global_batch_size) -> dict[str, Any]:
  """The summary.json record of a finished run."""
  records = writers.read_metrics(workdir)
  evals = [r for r in records if 'test_error' in r]
  final = {k: v for k, v in evals[-1].items()
           if k.startswith(('test_', 'validation_'))}
  best = {}
  for key in ('test_error', 'validation_error'):
    scored = [r for r in evals if key in r]
    if scored:
      best_record = min(scored, key=lambda r: r[key])
      best[key] = best_record[key]
      best[f'{key}_step'] = best_record['step']
  images_per_s = None
  if first_step_done is not None and first_step_done[0] < total_steps:
    # Timed from the end of the first (compiling) step of this process.
    first_step, first_time = first_step_done
    images_per_s = ((total_steps - first_step) * global_batch_size /
                    max(time.time() - first_time, 1e-9))
  return {
      'config': json.loads(config.to_json()),
      'finished': True,
      'num_steps': total_steps,
      'num_devices': jax.device_count(),
      'wall_time_s': wall_time_s,
      'images_per_s': images_per_s,
      'final': final,
      'best': best,
  }


def load_run(workdir: str):
  """Rebuilds a run from its workdir, for analyses of its checkpoint.

  Args:
    workdir: a workdir written by `train_and_evaluate`.

  Returns:
    (config, model, variables, datasets): variables = {'params',
    'batch_stats'} of the latest checkpoint, on the host.
  """
  # Over the current defaults, so runs saved before a field existed load.
  config = base.base_config()
  config.update(_read_json(os.path.join(workdir, 'config.json')))
  datasets, model, _, state, _ = build(config)
  restored = checkpointing.restore_latest(
      checkpointing.create_manager(workdir, config.keep_checkpoints), state)
  if restored is None:
    raise FileNotFoundError(f'no checkpoint in {workdir!r}')
  _, state, _ = restored
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  return config, model, jax.device_get(variables), datasets
