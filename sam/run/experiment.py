"""One run from its config: data, model and state are built, trained and
summarised; and a finished run is rebuilt from its workdir.

A workdir holds one run. Rerunning the same command resumes from the latest
checkpoint (same data order and random keys, so the result equals an
uninterrupted run); rerunning a finished run returns its summary without
training; a workdir holding another config is refused.
"""

import time
from typing import Any, Callable, NamedTuple

from absl import logging
from etils import epath
import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from configs import base
from data import datasets as datasets_lib
from models import pretrained
from sam import losses
from sam import sharpness
from sam.run import checkpoints
from sam.run import checks
from sam.run import compile_cache
from sam.run import files
from sam.run import loop
from sam.run import state as state_lib
from sam.run import workdir_lock
from sam.run import writers

SUMMARY_FILE = 'summary.json'
CONFIG_FILE = 'config.json'
LABEL_NOISE_FILE = 'label_noise.json'


def build(
    config: ml_collections.ConfigDict,
    relabel: datasets_lib.Relabel | None = None,
) -> loop.Setup:
  """Data, model, schedule and the state's shapes for a config.

  Args:
    config: the run config.
    relabel: replaces the training labels (bootstrap).

  Returns:
    The loop.Setup.
  """
  datasets = datasets_lib.create_datasets(
      config.data,
      batch_size=config.optim.batch_size,
      eval_batch_size=config.eval.batch_size,
      seed=config.seed,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
      local_device_count=jax.local_device_count(),
      relabel=relabel,
  )
  if datasets.steps_per_epoch < 1:
    raise checks.ConfigError(
        f'config.optim.batch_size = {config.optim.batch_size}: larger than '
        f'the {datasets.num_train_examples} training examples'
    )
  return loop.prepare(config, datasets)


def initial_state(config: ml_collections.ConfigDict, setup: loop.Setup):
  """The step-0 state: a fresh initialisation, or pretrained weights."""
  state = state_lib.create_train_state(
      setup.model,
      setup.datasets.image_shape,
      setup.abstract_state.tx,
      config.seed,
      setup.sam.method.init,
  )
  if not config.model.init_checkpoint:
    return state
  # Finetuning (paper C.2): pretrained weights; the head is re-initialised
  # when the number of classes differs.
  try:
    variables = pretrained.load_into(
        {'params': state.params, 'batch_stats': state.batch_stats},
        config.model.init_checkpoint,
    )
  except ValueError as e:
    raise checks.ConfigError(
        f'config.model.init_checkpoint = {config.model.init_checkpoint!r}: '
        f'{e}'
    ) from e
  return state.replace(
      params=variables['params'], batch_stats=variables['batch_stats']
  )


def make_sharpness_probe(
    model: nn.Module, config: ml_collections.ConfigDict
) -> Callable:
  """jitted (params, batch_stats, batch) -> the sharpness of the training
  objective on `batch` (train-mode BatchNorm), as sam.sharpness defines it."""
  loss_fn = losses.training_loss(model, config)
  key = jax.random.key(config.seed)

  def probe(params, batch_stats, batch):
    return sharpness.sharpness(
        lambda p: loss_fn(p, batch_stats, batch, key)[0],
        params,
        config.eval.sharpness_rho,
        config.eval.sharpness_ascent_steps,
    ).sharpness

  return jax.jit(probe)


def teacher_labels(teacher_workdir: str) -> datasets_lib.Relabel:
  """The classes a finished run predicts, as a relabelling of the training
  set (the paper's bootstrap targets, Table 4).

  Args:
    teacher_workdir: workdir of a finished run on the same dataset.

  Returns:
    (normalised images) -> int32 predicted labels.
  """
  _, teacher, variables, teacher_data = load_run(teacher_workdir)
  predict = jax.jit(
      lambda x: jnp.argmax(teacher.apply(variables, x, train=False), -1)
  )

  def relabel(images):
    if images.shape[1:] != tuple(teacher_data.image_shape):
      raise checks.ConfigError(
          f'config.data.bootstrap_teacher_workdir = {teacher_workdir!r}: its '
          f'images are {tuple(teacher_data.image_shape)}, not '
          f'{images.shape[1:]}'
      )
    return np.asarray(predict(images), np.int32)

  return relabel


def _restore_or_start(config, setup, manager, workdir):
  """(start step, state, progress) from the latest checkpoint, or fresh."""
  restored = checkpoints.restore_latest(manager, setup.abstract_state)
  if restored is None:
    return 0, initial_state(config, setup), {'wall_time_s': 0.0}
  start_step, state, progress = restored
  logging.info('Resuming from the checkpoint at step %d.', start_step)
  return start_step, state, progress


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str
) -> dict[str, Any]:
  """Trains and evaluates the config in `workdir`; see the module doc.

  Args:
    config: the run config (configs/base.py lists the fields).
    workdir: directory (or gs:// URL) for checkpoints, metrics and
      summary.json.

  Returns:
    The run summary (also written to workdir/summary.json).
  """
  started = time.time()
  compile_cache.enable(config.run.compilation_cache_dir)
  try:
    datasets_lib.check_dataset(config.data)
  except ValueError as e:
    raise checks.ConfigError(str(e)) from e
  checks.validate(config, jax.device_count())
  workdir = files.resolve(workdir)
  checks.check_workdir_is_folder(workdir)
  # One workdir, one run: nothing below reads or writes the workdir before
  # this process (the primary, for every process) holds it.
  lock = _lock_workdir(workdir)
  try:
    return _train_and_evaluate(config, workdir, started)
  finally:
    if lock is not None:
      lock.release()


def _lock_workdir(workdir: epath.Path) -> workdir_lock.Lock | None:
  """The primary process takes the workdir's lock; every process learns
  whether it was refused, so that all of them stop together."""
  lock, error = None, ''
  if jax.process_index() == 0:
    try:
      lock = workdir_lock.acquire(workdir)
    except workdir_lock.WorkdirBusyError as e:
      error = str(e)
  if jax.process_count() > 1:
    refused = multihost_utils.broadcast_one_to_all(np.int32(bool(error)))
    if refused and not error:
      error = f'workdir {str(workdir)!r} is in use by a live run (process 0)'
  if error:
    raise workdir_lock.WorkdirBusyError(error)
  return lock


def _train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: epath.Path, started: float
) -> dict[str, Any]:
  """`train_and_evaluate` once the workdir is held."""
  checks.check_workdir(config, workdir)
  if (workdir / SUMMARY_FILE).exists():
    logging.info('%s is a finished run; not training again.', workdir)
    return files.read_json(workdir / SUMMARY_FILE)
  teacher = config.data.bootstrap_teacher_workdir
  setup = build(config, teacher_labels(teacher) if teacher else None)
  is_primary = jax.process_index() == 0
  workdir.mkdir(parents=True, exist_ok=True)
  if is_primary:
    files.write_json_atomically(workdir / CONFIG_FILE, checks.identity(config))
    noise = setup.datasets.label_noise_record()
    if noise is not None:
      files.write_json_atomically(workdir / LABEL_NOISE_FILE, noise)
  manager = checkpoints.create_manager(workdir, config.run.keep_checkpoints)
  start_step, state, progress = _restore_or_start(
      config, setup, manager, workdir
  )
  writer = writers.create_writer(
      workdir, is_primary, start_step, config.run.tensorboard
  )
  if start_step == 0:
    # TensorBoard's hparams view; the log gets none (config.json has them).
    writer.write_hparams(config.to_dict())
  training = loop.Loop(
      config,
      workdir,
      setup,
      manager,
      state,
      start_step,
      progress,
      writer,
      make_sharpness_probe(setup.model, config),
  )
  training.run_steps()
  summary = loop.summarize(
      config,
      workdir,
      setup,
      progress['wall_time_s'],
      training.images_per_second(),
  )
  if training.first_step_done is not None:
    # From the start of this call (data, model, compilation) to the end of
    # this process's first step.
    summary['time_to_first_step_s'] = training.first_step_done[1] - started
  if is_primary:
    files.write_json_atomically(workdir / SUMMARY_FILE, summary)
  return summary


class LoadedRun(NamedTuple):
  """A finished (or interrupted) run, rebuilt from its workdir.

  Attributes:
    config: the run's config.
    model: its linen module.
    variables: {'params', 'batch_stats'} of the latest checkpoint, on the
      host.
    datasets: its data (data.datasets.Datasets).
  """

  config: ml_collections.ConfigDict
  model: nn.Module
  variables: dict[str, Any]
  datasets: Any


def load_run(workdir: epath.PathLike) -> LoadedRun:
  """Rebuilds a run from its workdir, for analyses of its checkpoint.

  Args:
    workdir: a workdir written by `train_and_evaluate`.

  Returns:
    The LoadedRun of its latest checkpoint.
  """
  workdir = files.resolve(workdir)
  config = base.from_record(files.read_json(workdir / CONFIG_FILE))
  setup = build(config)
  restored = checkpoints.restore_latest(
      checkpoints.create_manager(workdir, config.run.keep_checkpoints),
      setup.abstract_state,
  )
  if restored is None:
    raise FileNotFoundError(f'no checkpoint in {str(workdir)!r}')
  _, state, _ = restored
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  return LoadedRun(
      config, setup.model, jax.device_get(variables), setup.datasets
  )
