"""Tests for sam/analysis/inputs.py, and the analyses end to end on a tiny
model (configs/smoke.py: a WRN-mini on the offline digits)."""

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import smoke
from data import datasets as datasets_lib
import models
from sam import losses
from sam.analysis import hessian
from sam.analysis import inputs as analysis_inputs
from sam.analysis import landscape
from sam.analysis import sharpness
from sam.run import experiment


def _random_variables(shapes, seed=0):
  """Plausible weights of the given shapes from numpy: He-scaled kernels,
  BN scales near 1, small biases and running means, variances near 1.
  (numpy, not model.init: random-number kernels compile slowly on CPU.)"""
  rng = np.random.default_rng(seed)

  def draw(path, shape):
    name = path[-1].key
    noise = rng.normal(size=shape.shape).astype(np.float32)
    if name == 'kernel':
      return noise * np.sqrt(2.0 / np.prod(shape.shape[:-1]))
    if name in ('scale', 'var'):
      return 1.0 + 0.1 * np.abs(noise)
    return 0.1 * noise  # bias, mean

  return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope='module')
def tiny_run():
  """(config, model, variables, datasets) as `experiment.load_run` returns
  them, for a WRN-mini on the offline digits."""
  config = smoke.get_config()
  datasets = datasets_lib.create_datasets(
      config.data,
      batch_size=config.optim.batch_size,
      eval_batch_size=config.eval.batch_size,
      seed=config.seed,
  )
  model = models.create_model(config.model.name, datasets.num_classes)
  shapes = jax.eval_shape(
      functools.partial(model.init, train=False),
      jax.random.key(0),
      jnp.zeros((1,) + datasets.image_shape),
  )
  return experiment.LoadedRun(
      config, model, _random_variables(shapes), datasets
  )


def test_bn_modes_use_batch_or_running_statistics(tiny_run):
  _, model, variables, datasets = tiny_run
  images, labels = analysis_inputs.split_examples(datasets, 'test', 8)
  batch = {'image': images, 'label': labels}
  train_loss, eval_loss, eval_l2_loss = (
      analysis_inputs.make_batch_loss(
          losses.make_loss_fn(model, weight_decay=wd, bn_mode=mode),
          variables['batch_stats'],
      )
      for mode, wd in (('train', 0.0), ('eval', 0.0), ('eval', 0.1))
  )

  @jax.jit
  def losses_and_expected(params):
    # One compilation for everything: compiles dominate on CPU.
    logits_train, _ = model.apply(
        variables, images, train=True, mutable=['batch_stats']
    )
    logits_eval = model.apply(variables, images, train=False)
    expected = [
        jnp.mean(jax.nn.logsumexp(z, -1) - z[jnp.arange(8), labels])
        for z in (logits_train, logits_eval)
    ]
    l2 = 0.05 * sum(jnp.sum(w**2) for w in jax.tree.leaves(params))
    return (
        [
            train_loss(params, batch),
            eval_loss(params, batch),
            eval_l2_loss(params, batch),
        ],
        [expected[0], expected[1], expected[1] + l2],
    )

  actual, expected = losses_and_expected(variables['params'])
  np.testing.assert_allclose(actual, expected, rtol=1e-5)
  # Batch and running statistics differ here, so the modes really differ.
  assert abs(float(actual[0]) - float(actual[1])) > 1e-3
  with pytest.raises(ValueError, match='bn_mode'):
    losses.make_loss_fn(model, bn_mode='running')


def test_split_examples_and_batches(tiny_run):
  _, _, _, datasets = tiny_run
  images, labels = analysis_inputs.split_examples(datasets, 'train', 50, seed=3)
  assert images.shape == (50, 8, 8, 1) and images.dtype == np.float32
  # Normalised with the dataset's statistics, no augmentation.
  rows = np.sort(
      np.random.default_rng(3).permutation(len(datasets.train_labels))[:50]
  )
  mean, std = datasets.mean[0], datasets.std[0]
  np.testing.assert_allclose(
      images, (datasets.train_images[rows] - mean) / std, rtol=1e-5
  )
  np.testing.assert_array_equal(labels, datasets.train_labels[rows])
  stacked = analysis_inputs.stack_batches(images, labels, 16)
  assert stacked['image'].shape == (3, 16, 8, 8, 1)
  assert len(analysis_inputs.unstack_batches(stacked)) == 3
  all_test = analysis_inputs.split_examples(datasets, 'test', 0)[1]
  assert len(all_test) == len(datasets.examples('test')[1])
  with pytest.raises(ValueError, match='split'):
    analysis_inputs.split_examples(datasets, 'val', 10)
  with pytest.raises(ValueError, match='batch_size'):
    analysis_inputs.stack_batches(images, labels, 64)


def test_mean_loss_is_mean_over_batches():
  stacked = {'x': jnp.arange(12.0).reshape(3, 4)}
  loss_fn = analysis_inputs.mean_loss(lambda w, b: jnp.sum(b['x']) * w, stacked)
  assert float(loss_fn(2.0)) == pytest.approx(2.0 * 66 / 3)


def test_hessian_end_to_end(tiny_run, tmp_path):
  record = hessian.analyse(
      tiny_run,
      str(tmp_path),
      num_examples=32,
      batch_size=16,
      order=6,
      num_draws=2,
  )
  with open(tmp_path / 'hessian_train_train.json') as f:
    assert json.load(f)['summary'] == record['summary']
  summary = record['summary']
  assert summary['lambda_max'] > 0
  assert summary['lambda_max'] >= summary['top_eigenvalues'][4]
  grid = np.asarray(record['density']['grid'])
  mass = np.trapezoid(record['density']['values'], grid)
  assert mass == pytest.approx(1.0, abs=1e-3)


def test_sharpness_end_to_end(tiny_run, tmp_path):
  record = sharpness.analyse(
      tiny_run,
      str(tmp_path),
      rho=0.05,
      num_steps=(1, 3),
      m_values=(8,),
      num_examples=32,
      batch_size=16,
  )
  assert os.path.exists(tmp_path / 'sharpness_train_rho0.05.json')
  assert 0 < record['sharpness']['1'] <= record['sharpness']['3']
  assert record['m_sharpness']['8'] > 0


def test_landscape_end_to_end(tiny_run, tmp_path):
  record = landscape.analyse(
      tiny_run,
      str(tmp_path),
      dims=2,
      num_points=3,
      num_examples=32,
      batch_size=16,
  )
  assert np.asarray(record['loss']).shape == (3, 3)
  with open(tmp_path / 'landscape_2d_train.json') as f:
    assert json.load(f)['loss'] == record['loss']
  # The centre is the model itself: the eval-mode loss of its batches.
  _, model, variables, datasets = tiny_run
  stacked = analysis_inputs.stack_batches(
      *analysis_inputs.split_examples(datasets, 'train', 32), 16
  )
  centre = jax.jit(
      analysis_inputs.mean_loss(
          analysis_inputs.make_batch_loss(
              losses.make_loss_fn(model, bn_mode='eval'),
              variables['batch_stats'],
          ),
          stacked,
      )
  )(variables['params'])
  assert record['center_loss'] == pytest.approx(float(centre), rel=1e-5)


@pytest.fixture(scope='module')
def trained_smoke_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('smoke_run'))
  experiment.train_and_evaluate(smoke.get_config(), workdir)
  return workdir


@pytest.mark.parametrize(
    'tool,args,output',
    [
        (
            'hessian',
            [
                '--num_examples=32',
                '--batch_size=16',
                '--order=4',
                '--num_draws=1',
            ],
            'hessian_train_train.json',
        ),
        (
            'sharpness',
            ['--num_examples=32', '--batch_size=16', '--num_steps=1', '--m=8'],
            'sharpness_train_rho0.05.json',
        ),
        (
            'landscape',
            [
                '--num_examples=32',
                '--batch_size=16',
                '--dims=2',
                '--num_points=3',
            ],
            'landscape_2d_train.json',
        ),
    ],
)
def test_command_line_writes_the_json_record(
    trained_smoke_run, repo_dir, tmp_path, tool, args, output
):
  subprocess.run(
      [
          sys.executable,
          '-m',
          'sam.analysis',
          tool,
          f'--workdir={trained_smoke_run}',
          f'--output_dir={tmp_path}',
          *args,
      ],
      cwd=repo_dir,
      check=True,
      capture_output=True,
      timeout=600,
  )
  with open(tmp_path / output) as f:
    assert json.load(f)['method'] == 'sam'
