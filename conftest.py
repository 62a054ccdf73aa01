"""Test setup and the fixtures tests share.

Two fake CPU devices, so pmap, per-device SAM perturbations and device
batching run for real in every test.
"""

import atexit
import functools
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# A persistent compilation cache shared by the tests and the train.py
# subprocesses they start: identical steps compile once per session. It is
# this session's own: jaxlib 0.10.2 segfaulted here reading a CPU executable
# that an earlier pytest process had written (the bfloat16 step of
# sam/run/step_test.py, after the tests before it), so no entry outlives
# the session that wrote it.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix='sam_test_jax_cache_')
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _CACHE
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

# pylint: disable=g-import-not-at-top,wrong-import-position
# jax reads the variables above when it is imported, XLA_FLAGS when it starts
# a backend; the collective timeouts keep the fake devices from aborting on a
# loaded host (sam/run/distributed.py).
from sam.run import distributed

os.environ.setdefault('XLA_FLAGS', distributed.cpu_devices_xla_flags(2))
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import smoke
import models

REPO = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(autouse=True, scope='module')
def _release_compiled_programs():
  """Drops jax's compiled programs after each test module. Each XLA:CPU
  executable holds its own memory mappings, and one process of the whole
  suite compiled enough of them to reach the kernel's limit
  (vm.max_map_count, 65530 here): XLA aborted compiling the next one."""
  yield
  jax.clear_caches()
  gc.collect()


@pytest.fixture(scope='session')
def repo_dir():
  """The repository root (train.py's directory)."""
  return REPO


@pytest.fixture(scope='session')
def readme_sam_variant():
  """The code blocks of the README's "Adding a SAM variant", as printed:
  (the constructor, its METHODS line, its configs/base.py line)."""
  with open(os.path.join(REPO, 'README.md')) as f:
    text = f.read()
  section = text.split('## Adding a SAM variant\n')[1].split('\n## ')[0]
  blocks = re.findall(r'```python\n(.*?)```', section, re.DOTALL)
  assert len(blocks) == 3, blocks
  return tuple(textwrap.dedent(block) for block in blocks)


@pytest.fixture(scope='module')
def mock_cifar():
  """tfds's mock CIFAR: 32 random examples per split."""
  with tfds.testing.mock_data(num_examples=32):
    yield


@pytest.fixture
def iterated_dataset_options(monkeypatch):
  """The tf.data options of every dataset iterated from here on, in order.

  The data tests check that no training or evaluation iterator autotunes:
  an autotuned iterator's destructor joins its autotuning thread, which
  stalled the training thread at the end of the data (data/tfdata.py).
  """
  iterated = []
  as_numpy_iterator = tf.data.Dataset.as_numpy_iterator

  def spy(ds):
    iterated.append(ds.options())
    return as_numpy_iterator(ds)

  monkeypatch.setattr(tf.data.Dataset, 'as_numpy_iterator', spy)
  return iterated


def cifar_smoke_config(method='sam'):
  """configs/smoke.py on mock CIFAR-10: 32 examples / batch 8 = 4 steps an
  epoch, 2 epochs, logs every 2 steps, checkpoints every 3."""
  c = smoke.get_config(f'opt={method}')
  c.data.dataset = 'cifar10'
  c.data.augment = 'basic'
  c.data.crop_padding = 4
  c.optim.batch_size = 8
  c.optim.replica_batch_size = 0  # One replica per device.
  c.eval.batch_size = 16
  c.optim.num_epochs = 2
  c.eval.every_epochs = 1
  c.run.log_every_steps = 2
  c.run.checkpoint_every_steps = 3
  c.run.keep_checkpoints = 5
  return c


@pytest.fixture(scope='session')
def cifar_config():
  """A factory: method -> `cifar_smoke_config(method)`."""
  return cifar_smoke_config


def count_params(name, num_classes, image_size=32):
  """'params' size of a named model, from shapes only (no initialisation)."""
  model = models.create_model(name, num_classes)
  shapes = jax.eval_shape(
      lambda: model.init(
          jax.random.key(0),
          jnp.zeros((1, image_size, image_size, 3)),
          train=False,
      )
  )
  return sum(x.size for x in jax.tree_util.tree_leaves(shapes['params']))


def random_variables(model, images, seed=0):
  """Variables of `model` filled with N(0, 0.1) (BN scales 1 + N(0, 0.1),
  variances 1) without running its initialisers, whose random number
  generation compiles slowly on CPU."""
  shapes = jax.eval_shape(
      functools.partial(model.init, train=False), jax.random.key(0), images
  )
  rng = np.random.default_rng(seed)

  def fill(path, shape):
    name = path[-1].key
    if name == 'var':
      return jnp.ones(shape.shape, shape.dtype)
    noise = jnp.asarray(rng.normal(0, 0.1, shape.shape), shape.dtype)
    return noise + 1 if name == 'scale' else noise

  return jax.tree_util.tree_map_with_path(fill, shapes)


def start_smoke_run(workdir, *overrides):
  """train.py on configs/smoke.py in `workdir`, started in the background
  from the repository root, its output captured as text."""
  return subprocess.Popen(
      [
          sys.executable,
          'train.py',
          '--config=configs/smoke.py',
          f'--workdir={workdir}',
          *overrides,
      ],
      cwd=REPO,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )


@pytest.fixture(scope='session')
def start_smoke():
  """The `start_smoke_run` function."""
  return start_smoke_run


@pytest.fixture(scope='session')
def param_count():
  """The `count_params` function."""
  return count_params


@pytest.fixture(scope='session')
def fill_variables():
  """The `random_variables` function."""
  return random_variables


def write_run(
    root,
    name,
    *,
    test_error=None,
    validation_error=None,
    test_top5_error=None,
    finished=True,
    summary=True,
    **overrides,
):
  """Writes a run directory the way train.py does (config.json,
  summary.json). Overrides: rho, method, and the identity fields by their
  leaf name (dataset, model, augment, num_epochs, epochs_multiplier, seed,
  validation_split, label_noise, mixup_alpha, m)."""
  config = {
      'data': {
          'dataset': 'cifar10',
          'augment': 'basic',
          'validation_split': False,
          'label_noise': 0.0,
      },
      'model': {'name': 'wrn28_10'},
      'optim': {'num_epochs': 200, 'epochs_multiplier': 1},
      'sam': {'method': 'sam', 'rho': 0.05, 'sync_perturbation': False},
      'seed': 0,
  }
  sections = {
      'dataset': 'data',
      'augment': 'data',
      'validation_split': 'data',
      'label_noise': 'data',
      'mixup_alpha': 'data',
      'bootstrap_teacher_workdir': 'data',
      'num_epochs': 'optim',
      'epochs_multiplier': 'optim',
      'rho': 'sam',
      'method': 'sam',
      'm': 'sam',
  }
  for key, value in overrides.items():
    if key == 'model':
      config['model']['name'] = value
    elif key == 'seed':
      config['seed'] = value
    else:
      config[sections[key]][key] = value
  workdir = os.path.join(root, name)
  os.makedirs(os.path.join(workdir, 'checkpoints'), exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(config, f)
  if summary:
    final = {}
    if test_error is not None:
      final.update(test_error=test_error, test_loss=1.0)
    if validation_error is not None:
      final.update(validation_error=validation_error, validation_loss=1.0)
    if test_top5_error is not None:
      final.update(test_top5_error=test_top5_error)
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:
      json.dump(
          {
              'config': config,
              'finished': finished,
              'num_steps': 10,
              'num_devices': 1,
              'wall_time_s': 1.0,
              'images_per_s': 1.0,
              'final': final,
              'best': {},
          },
          f,
      )
  return workdir


@pytest.fixture(scope='session')
def make_run():
  """The `write_run` function."""
  return write_run
