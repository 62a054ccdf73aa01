"""End to end: train_and_evaluate on mock CIFAR with 2 fake devices."""

import json
import os
import shutil

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import base
from sam import checkpointing
from sam import config_checks
from sam import training
from sam import writers


def tiny_config(optimizer='sam'):
  c = base.base_config()
  c.dataset = 'cifar10'
  c.model = 'wrn_mini'
  c.optimizer = optimizer
  c.batch_size = 8
  c.eval_batch_size = 16
  c.num_epochs = 2  # 32 examples / 8 = 4 steps an epoch, 8 in all.
  c.log_every_steps = 2
  c.checkpoint_every_steps = 3
  c.keep_checkpoints = 5
  return c


@pytest.fixture(scope='module')
def mock_cifar():
  with tfds.testing.mock_data(num_examples=32):
    yield


@pytest.fixture(scope='module')
def sam_run(mock_cifar, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('sam_run'))
  return workdir, training.train_and_evaluate(tiny_config(), workdir)


def final_params(workdir):
  *_, variables, _ = training.load_run(workdir)
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(variables)])


def test_sam_run_writes_summary_metrics_and_checkpoints(sam_run):
  workdir, summary = sam_run
  assert summary['finished'] and summary['num_steps'] == 8
  assert summary['num_devices'] == 2
  assert 0 <= summary['final']['test_error'] <= 1
  assert summary['best']['test_error'] <= summary['final']['test_error']
  with open(os.path.join(workdir, 'summary.json')) as f:
    assert json.load(f) == summary
  records = writers.read_metrics(workdir)
  train = [r for r in records if 'train_loss' in r]
  assert [r['step'] for r in train] == [2, 4, 6, 8]
  assert all(np.isfinite(r['grad_norm']) and r['learning_rate'] >= 0
             for r in train)
  assert [r['step'] for r in records if 'test_error' in r] == [4, 8]
  manager = checkpointing.create_manager(workdir, 5)
  assert manager.all_steps() == [3, 6, 8]
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(workdir))


def test_resume_equals_uninterrupted_run_bit_for_bit(sam_run,
                                                     tmp_path_factory):
  workdir, summary = sam_run
  resumed = str(tmp_path_factory.mktemp('resumed'))
  shutil.copytree(workdir, resumed, dirs_exist_ok=True)
  # As if the run had died between steps 3 and 6: only checkpoint 3 left.
  for step in ('6', '8'):
    shutil.rmtree(os.path.join(resumed, 'checkpoints', step))
  os.remove(os.path.join(resumed, 'summary.json'))
  resumed_summary = training.train_and_evaluate(tiny_config(), resumed)
  np.testing.assert_array_equal(final_params(resumed), final_params(workdir))
  assert resumed_summary['final'] == summary['final']
  assert writers.read_metrics(resumed)[-1]['step'] == 8


def test_rerun_of_a_finished_run_changes_nothing(sam_run):
  workdir, summary = sam_run
  before = {f: os.path.getmtime(os.path.join(workdir, f))
            for f in ('summary.json', 'metrics.jsonl', 'config.json')}
  assert training.train_and_evaluate(tiny_config(), workdir) == summary
  assert before == {f: os.path.getmtime(os.path.join(workdir, f))
                    for f in before}


def test_workdir_of_another_config_is_refused(sam_run):
  workdir, _ = sam_run
  other = tiny_config()
  other.sam.rho = 0.1
  with pytest.raises(config_checks.ConfigError, match=r"\['sam'\] differ"):
    training.train_and_evaluate(other, workdir)


def test_sgd_runs_end_to_end(mock_cifar, tmp_path):
  summary = training.train_and_evaluate(tiny_config('sgd'), str(tmp_path))
  assert summary['finished'] and summary['config']['optimizer'] == 'sgd'
  assert 0 <= summary['final']['test_error'] <= 1


def test_bootstrap_trains_on_the_teacher_predictions(sam_run):
  workdir, _ = sam_run
  student = tiny_config()
  student.bootstrap_teacher_workdir = workdir
  datasets, *_ = training.build(student)
  _, model, variables, teacher_data = training.load_run(workdir)
  images = (teacher_data.train_images.astype(np.float32) -
            np.array(teacher_data.mean)) / np.array(teacher_data.std)
  predicted = np.argmax(model.apply(variables, images, train=False), -1)
  np.testing.assert_array_equal(datasets.train_labels, predicted)
  assert np.any(predicted != teacher_data.train_labels)


def test_label_noise_is_recorded_and_spares_validation(mock_cifar, tmp_path):
  config = tiny_config()
  config.label_noise, config.validation_split = 0.4, True
  datasets, *_ = training.build(config)
  clean = tiny_config()
  clean.validation_split = True
  clean_data, *_ = training.build(clean)
  changed = np.flatnonzero(datasets.train_labels != clean_data.train_labels)
  assert len(changed) == round(0.4 * len(clean_data.train_labels))
  np.testing.assert_array_equal(datasets.clean_train_labels,
                                clean_data.train_labels)
  for split in ('validation', 'test'):
    np.testing.assert_array_equal(datasets.eval_splits[split][1],
                                  clean_data.eval_splits[split][1])
  training.record_label_noise(str(tmp_path), datasets)
  with open(tmp_path / 'label_noise.json') as f:
    record = json.load(f)
  assert record['changed_indices'] == changed.tolist()
  assert record['num_train'] == len(datasets.train_labels)


def test_sharpness_probe_is_logged_during_training(mock_cifar, tmp_path):
  config = tiny_config('sgd')
  config.num_epochs = 1
  config.sharpness_every_steps = 2
  training.train_and_evaluate(config, str(tmp_path))
  probes = [r for r in writers.read_metrics(str(tmp_path))
            if 'sharpness' in r]
  assert [r['step'] for r in probes] == [2, 4]
  assert all(np.isfinite(r['sharpness']) and r['sharpness'] > 0
             for r in probes)
