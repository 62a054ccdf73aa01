"""End to end: train_and_evaluate on mock CIFAR with 2 fake devices."""

import contextlib
import json
import os
import shutil
import threading

from etils import epath
import jax
from jax._src import array as jax_array
import numpy as np
import pytest

from configs import smoke
from sam.run import checkpoints
from sam.run import checks
from sam.run import experiment
from sam.run import loop
from sam.run import metrics_file
from sam.run import state as state_lib


@pytest.fixture(scope='module')
def sam_run(mock_cifar, cifar_config, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('sam_run'))
  return workdir, experiment.train_and_evaluate(cifar_config(), workdir)


def final_params(workdir):
  *_, variables, _ = experiment.load_run(workdir)
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(variables)])


def test_sam_run_writes_summary_metrics_and_checkpoints(sam_run):
  workdir, summary = sam_run
  assert summary['finished'] and summary['num_steps'] == 8
  assert summary['num_devices'] == 2
  assert 0 <= summary['final']['test_error'] <= 1
  assert summary['best']['test_error'] <= summary['final']['test_error']
  # Top-5 (Table 2) is in every summary; with 10 classes it is below top-1.
  assert (
      0
      <= summary['final']['test_top5_error']
      <= (summary['final']['test_error'])
  )
  with open(os.path.join(workdir, 'summary.json')) as f:
    assert json.load(f) == summary
  records = metrics_file.read_metrics(workdir)
  train = [r for r in records if 'train_loss' in r]
  assert [r['step'] for r in train] == [2, 4, 6, 8]
  # SAM logs both passes: at w and at w + eps (what the official code logs).
  assert all('train_loss_perturbed' in r for r in train)
  assert all(
      np.isfinite(r['grad_norm']) and r['learning_rate'] >= 0 for r in train
  )
  assert [r['step'] for r in records if 'test_error' in r] == [4, 8]
  # Eval records carry the epoch, for figures against epochs.
  assert [r['epoch'] for r in records if 'test_error' in r] == [1.0, 2.0]
  manager = checkpoints.create_manager(workdir, 5)
  assert manager.all_steps() == [3, 6, 8]
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(workdir))


def test_resume_equals_uninterrupted_run_bit_for_bit(
    sam_run, cifar_config, tmp_path_factory
):
  workdir, summary = sam_run
  resumed = str(tmp_path_factory.mktemp('resumed'))
  shutil.copytree(workdir, resumed, dirs_exist_ok=True)
  # As if the run had died between steps 3 and 6: only checkpoint 3 left.
  for step in ('6', '8'):
    shutil.rmtree(os.path.join(resumed, 'checkpoints', step))
  os.remove(os.path.join(resumed, 'summary.json'))
  resumed_summary = experiment.train_and_evaluate(cifar_config(), resumed)
  np.testing.assert_array_equal(final_params(resumed), final_params(workdir))
  assert resumed_summary['final'] == summary['final']
  assert metrics_file.read_metrics(resumed)[-1]['step'] == 8


def test_rerun_of_a_finished_run_changes_nothing(sam_run, cifar_config):
  workdir, summary = sam_run
  before = {
      f: os.path.getmtime(os.path.join(workdir, f))
      for f in ('summary.json', 'metrics.jsonl', 'config.json')
  }
  assert experiment.train_and_evaluate(cifar_config(), workdir) == summary
  assert before == {
      f: os.path.getmtime(os.path.join(workdir, f)) for f in before
  }


def test_workdir_of_another_config_is_refused(sam_run, cifar_config):
  workdir, _ = sam_run
  other = cifar_config()
  other.sam.rho = 0.1
  with pytest.raises(checks.ConfigError, match=r"\['sam.rho'\] differ"):
    experiment.train_and_evaluate(other, workdir)


def test_placement_fields_may_differ_on_resume(sam_run, cifar_config):
  workdir, summary = sam_run
  moved = cifar_config()
  moved.run.distributed.process_id = 3
  assert experiment.train_and_evaluate(moved, workdir) == summary


def test_sgd_runs_end_to_end(mock_cifar, cifar_config, tmp_path):
  summary = experiment.train_and_evaluate(cifar_config('sgd'), str(tmp_path))
  assert summary['finished'] and summary['config']['sam']['method'] == 'sgd'
  assert 0 <= summary['final']['test_error'] <= 1


def test_bootstrap_trains_on_the_teacher_predictions(sam_run, cifar_config):
  workdir, _ = sam_run
  datasets = experiment.build(
      cifar_config(), experiment.teacher_labels(workdir)
  ).datasets
  _, model, variables, teacher_data = experiment.load_run(workdir)
  images = (
      teacher_data.train_images.astype(np.float32) - np.array(teacher_data.mean)
  ) / np.array(teacher_data.std)
  predicted = np.argmax(model.apply(variables, images, train=False), -1)
  np.testing.assert_array_equal(datasets.train_labels, predicted)
  assert np.any(predicted != teacher_data.train_labels)


def test_label_noise_is_recorded_and_spares_validation(
    mock_cifar, cifar_config, tmp_path
):
  config = cifar_config()
  config.data.label_noise, config.data.validation_split = 0.4, True
  datasets = experiment.build(config).datasets
  clean = cifar_config()
  clean.data.validation_split = True
  clean_data = experiment.build(clean).datasets
  changed = np.flatnonzero(datasets.train_labels != clean_data.train_labels)
  # The default 'uniform' rule changes r (K - 1) / K = 0.36 of the labels
  # in expectation; 4 binomial standard deviations either side.
  n = len(clean_data.train_labels)
  assert abs(len(changed) - 0.36 * n) < 4 * np.sqrt(n * 0.36 * 0.64)
  np.testing.assert_array_equal(
      datasets.clean_train_labels, clean_data.train_labels
  )
  for split in ('validation', 'test'):
    np.testing.assert_array_equal(
        datasets.eval_splits[split][1], clean_data.eval_splits[split][1]
    )
  config.optim.num_epochs = 1
  experiment.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / 'label_noise.json') as f:
    record = json.load(f)
  assert record['changed_indices'] == changed.tolist()
  assert record['num_train'] == len(datasets.train_labels)


def test_sharpness_probe_is_logged_during_training(
    mock_cifar, cifar_config, tmp_path
):
  config = cifar_config('sgd')
  config.optim.num_epochs = 1
  config.eval.sharpness_every_steps = 2
  experiment.train_and_evaluate(config, str(tmp_path))
  probes = [
      r for r in metrics_file.read_metrics(str(tmp_path)) if 'sharpness' in r
  ]
  assert [r['step'] for r in probes] == [2, 4]
  assert all(np.isfinite(r['sharpness']) and r['sharpness'] > 0 for r in probes)


def test_sam_fraction_weighs_each_log_by_the_steps_it_covers():
  records = [
      {'step': 5, 'sam_fraction': 0.2, 'train_loss': 1.0},
      {'step': 5, 'test_error': 0.1},
      {'step': 10, 'sam_fraction': 0.4},
      {'step': 12, 'sam_fraction': 1.0},
  ]
  assert loop.sam_fraction(records) == pytest.approx((1 + 2 + 2) / 12)
  assert loop.sam_fraction([{'step': 5, 'train_loss': 1.0}]) is None


class _DeviceReads:
  """Makes reading a device array's value on this thread fail while on.

  On CPU, jax's transfer guard sees host-to-device transfers but not
  device-to-host ones (a CPU array's bytes are already the host's), so
  the test guards the one door every read goes through instead: float(),
  int(), np.asarray() and jax.device_get() all take ArrayImpl._value.
  """

  def __init__(self, monkeypatch):
    self.on, self._thread = False, threading.get_ident()
    value = jax_array.ArrayImpl._value

    def guarded(array):
      # Orbax's threads copy checkpoints to the host in the background.
      if self.on and threading.get_ident() == self._thread:
        raise AssertionError('a device array was read between logs')
      return value.fget(array)

    monkeypatch.setattr(jax_array.ArrayImpl, '_value', property(guarded))

  @contextlib.contextmanager
  def allowed(self):
    was, self.on = self.on, False
    try:
      with jax.transfer_guard('allow'):
        yield
    finally:
      self.on = was


def _smoke_loop(workdir, eval_batch_size=128):
  """A Loop over the smoke config from step 0 (compiles nothing yet)."""
  config = smoke.get_config()
  config.run.keep_checkpoints = 10
  config.eval.batch_size = eval_batch_size
  setup = experiment.build(config)
  the_loop = loop.Loop(
      config,
      epath.Path(workdir),
      setup,
      checkpoints.create_manager(workdir, config.run.keep_checkpoints),
      experiment.initial_state(config, setup),
      0,
      {'wall_time_s': 0.0},
      metrics_file.JsonLinesWriter(workdir / metrics_file.METRICS_FILE),
  )
  return setup, the_loop


def test_steps_between_logs_transfer_nothing(tmp_path, monkeypatch):
  setup, the_loop = _smoke_loop(tmp_path)
  reads = _DeviceReads(monkeypatch)
  events = []

  def allowed(name):
    method = getattr(the_loop, name)

    def run(step, *args):
      events.append((name, step))
      with reads.allowed():
        return method(step, *args)

    return run

  # Logs, evaluations and checkpoints read the devices; nothing else may.
  for name in ('_log', '_evaluate', '_checkpoint', '_probe'):
    monkeypatch.setattr(the_loop, name, allowed(name))
  reads.on = True
  with pytest.raises(AssertionError, match='read between logs'):
    np.asarray(the_loop.state.step)  # The guard has teeth.
  with jax.transfer_guard('disallow'):
    the_loop.run_steps()
  reads.on = False
  total = setup.total_steps
  assert [s for n, s in events if n == '_log'] == [5, 10, 15, 20, total]
  assert [s for n, s in events if n == '_evaluate'] == [total]
  assert checkpoints.create_manager(tmp_path, 10).all_steps() == [
      *range(4, total, 4),
      total,
  ]
  records = metrics_file.read_metrics(tmp_path)
  assert [r['step'] for r in records if 'train_loss' in r] == [
      5,
      10,
      15,
      20,
      total,
  ]


def test_the_host_waits_for_the_step_eight_before(tmp_path, monkeypatch):
  # XLA:CPU deadlocks when 32 programs are in flight on a fake device
  # (state_lib.MAX_IN_FLIGHT); the loop and the evaluation wait before that.
  # Eval batches of 32: more of them than the limit.
  setup, the_loop = _smoke_loop(tmp_path, eval_batch_size=32)
  added, waits = [], []
  add, wait = state_lib.InFlight.add, jax.block_until_ready

  def spy_add(in_flight, outputs):
    added.append(outputs)
    add(in_flight, outputs)

  def spy_wait(tree):
    # Indices of what InFlight added; the loop's own wait for the first
    # (compiling) step is on the state, which it did not add.
    index = [i for i, outputs in enumerate(added) if outputs is tree]
    waits.extend((len(added), i) for i in index)
    return wait(tree)

  monkeypatch.setattr(state_lib.InFlight, 'add', spy_add)
  monkeypatch.setattr(jax, 'block_until_ready', spy_wait)
  the_loop.run_steps()
  total, limit = setup.total_steps, state_lib.MAX_IN_FLIGHT
  eval_batches = len(added) - total  # One evaluation, after the last step.
  assert limit == 8 and total > limit + 2 and eval_batches > limit
  # Step n's dispatch waits for step n - 8 (1-based), in order; then each
  # eval batch's for the batch 8 before it.
  want = [(n, n - limit - 1) for n in range(limit + 1, total + 1)]
  want += [
      (total + b, total + b - limit - 1)
      for b in range(limit + 1, eval_batches + 1)
  ]
  assert waits == want
