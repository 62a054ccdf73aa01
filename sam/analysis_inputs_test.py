"""Tests for sam/analysis_inputs.py, and the analysis tools end to end on a
tiny checkpoint (a WRN-mini on the offline digits)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import quickstart
from results import landscape
from sam import analysis_inputs
from sam import checkpointing
from sam import hessian
from sam import sharpness
from sam import training


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  """`load_run` of a workdir holding the config and the initial state of a
  WRN-mini run, as `train_and_evaluate` leaves them (no training: the tools
  only need a checkpoint)."""
  workdir = str(tmp_path_factory.mktemp('tiny_run'))
  config = quickstart.get_config('model=wrn_mini,epochs=1')
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json())
  _, _, _, state, _ = training.build(config)
  manager = checkpointing.create_manager(workdir, 1)
  checkpointing.save(manager, 0, state, {'wall_time_s': 0.0})
  manager.wait_until_finished()
  return training.load_run(workdir)


def test_bn_modes_use_batch_or_running_statistics(tiny_run):
  config, model, variables, datasets = tiny_run
  images, labels = analysis_inputs.split_examples(datasets, 'test', 8)
  batch = {'image': images, 'label': labels}
  logits_train, _ = model.apply(variables, images, train=True,
                                mutable=['batch_stats'])
  logits_eval = model.apply(variables, images, train=False)
  for mode, logits in (('train', logits_train), ('eval', logits_eval)):
    loss_fn = analysis_inputs.make_batch_loss(
        model, variables['batch_stats'], mode)
    expected = jnp.mean(jax.nn.logsumexp(logits, -1) -
                        logits[jnp.arange(8), labels])
    assert float(loss_fn(variables['params'], batch)) == pytest.approx(
        float(expected), rel=1e-5)
  with_l2 = analysis_inputs.make_batch_loss(
      model, variables['batch_stats'], 'eval', weight_decay=0.1)
  l2 = 0.05 * sum(float(jnp.sum(w ** 2))
                  for w in jax.tree.leaves(variables['params']))
  assert float(with_l2(variables['params'], batch)) == pytest.approx(
      float(expected) + l2, rel=1e-5)
  with pytest.raises(ValueError, match='bn_mode'):
    analysis_inputs.make_batch_loss(model, {}, 'running')
  del config


def test_split_examples_and_batches(tiny_run):
  _, _, _, datasets = tiny_run
  images, labels = analysis_inputs.split_examples(datasets, 'train', 50,
                                                  seed=3)
  assert images.shape == (50, 8, 8, 1) and images.dtype == np.float32
  # Normalised with the dataset's statistics, no augmentation.
  rows = np.sort(np.random.default_rng(3).permutation(
      len(datasets.train_labels))[:50])
  mean, std = datasets.mean[0], datasets.std[0]
  np.testing.assert_allclose(
      images, (datasets.train_images[rows] - mean) / std, rtol=1e-5)
  np.testing.assert_array_equal(labels, datasets.train_labels[rows])
  stacked = analysis_inputs.stack_batches(images, labels, 16)
  assert stacked['image'].shape == (3, 16, 8, 8, 1)
  assert len(analysis_inputs.unstack_batches(stacked)) == 3
  all_test = analysis_inputs.split_examples(datasets, 'test', 0)[1]
  assert len(all_test) == len(datasets.eval_splits['test'][1])
  with pytest.raises(ValueError, match='split'):
    analysis_inputs.split_examples(datasets, 'val', 10)
  with pytest.raises(ValueError, match='batch_size'):
    analysis_inputs.stack_batches(images, labels, 64)


def test_mean_loss_is_mean_over_batches():
  stacked = {'x': jnp.arange(12.0).reshape(3, 4)}
  loss_fn = analysis_inputs.mean_loss(lambda w, b: jnp.sum(b['x']) * w,
                                      stacked)
  assert float(loss_fn(2.0)) == pytest.approx(2.0 * 66 / 3)


def test_hessian_end_to_end(tiny_run, tmp_path):
  record = hessian.analyse(tiny_run, str(tmp_path), num_examples=32,
                           batch_size=16, order=6, num_draws=2)
  with open(tmp_path / 'hessian_train_train.json') as f:
    assert json.load(f)['summary'] == record['summary']
  assert os.path.getsize(tmp_path / 'hessian_train_train.png') > 1000
  summary = record['summary']
  assert summary['lambda_max'] > 0
  assert summary['lambda_max'] >= summary['top_eigenvalues'][4]
  grid = np.asarray(record['density']['grid'])
  mass = np.trapezoid(record['density']['values'], grid)
  assert mass == pytest.approx(1.0, abs=1e-3)


def test_sharpness_end_to_end(tiny_run, tmp_path):
  record = sharpness.analyse(tiny_run, str(tmp_path), rho=0.05,
                             num_steps=(1, 3), m_values=(8,), num_examples=32,
                             batch_size=16)
  assert os.path.exists(tmp_path / 'sharpness_train_rho0.05.json')
  assert 0 < record['sharpness']['1'] <= record['sharpness']['3']
  assert record['m_sharpness']['8'] > 0


def test_landscape_end_to_end(tiny_run, tmp_path):
  record = landscape.analyse(tiny_run, str(tmp_path), dims=2, num_points=3,
                             num_examples=32, batch_size=16)
  assert np.asarray(record['loss']).shape == (3, 3)
  assert os.path.getsize(tmp_path / 'landscape_2d_train.png') > 1000
  # The centre is the checkpoint itself: the eval-mode loss of its batches.
  config, model, variables, datasets = tiny_run
  stacked = analysis_inputs.stack_batches(
      *analysis_inputs.split_examples(datasets, 'train', 32), 16)
  centre = analysis_inputs.mean_loss(analysis_inputs.make_batch_loss(
      model, variables['batch_stats'], 'eval'), stacked)(variables['params'])
  assert record['center_loss'] == pytest.approx(float(centre), rel=1e-5)
  del config
