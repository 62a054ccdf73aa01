"""Config strings: typed knobs, one-line errors, and every config file's
knobs and docstring command."""

import importlib
import os
import re
import subprocess
import sys

import pytest

from configs import base
from configs import cifar
from configs import knobs
from configs import noisy_labels
from configs import quickstart
from configs import smoke

CONFIG_FILES = (
    'cifar',
    'svhn',
    'fashion_mnist',
    'imagenet',
    'finetune',
    'noisy_labels',
    'quickstart',
    'smoke',
)


def test_knobs_are_typed_and_default():
  values = knobs.parse(
      'rho=0.2,validation=true,epochs=3',
      {
          'rho': knobs.Knob(float, None),
          'validation': knobs.Knob(bool, False),
          'epochs': knobs.Knob(int, 200),
          'model': knobs.Knob(str, 'wrn28_10'),
      },
      'configs/x.py',
  )
  assert values == {
      'rho': 0.2,
      'validation': True,
      'epochs': 3,
      'model': 'wrn28_10',
  }


@pytest.mark.parametrize(
    'arg,message',
    [
        ('rho=abc', "configs/cifar.py: rho='abc': takes float values"),
        (
            'epoch=1',
            "configs/cifar.py: bad knob 'epoch=1'; valid knobs: opt=, ",
        ),
        ('epochs=many', "configs/cifar.py: epochs='many': takes int values"),
        ('validation=maybe', "validation='maybe': takes true or false"),
        ('rho=nan', "rho='nan': takes a number, not nan"),
        ('dataset=svhn', "dataset='svhn'; valid: ['cifar10', 'cifar100']"),
    ],
)
def test_bad_knobs_are_one_line(arg, message):
  with pytest.raises(knobs.KnobError) as error:
    cifar.get_config(arg)
  assert message in str(error.value)
  assert '\n' not in str(error.value)


def test_noisy_labels_ranges():
  with pytest.raises(knobs.KnobError, match=r'noise=1.5; valid: \[0, 1\)'):
    noisy_labels.get_config('noise=1.5')
  c = noisy_labels.get_config('noise=0.8,opt=sgd,mixup=8')
  assert (c.data.label_noise, c.sam.rho, c.sam.method, c.data.mixup_alpha) == (
      0.8,
      0.05,
      'sgd',
      8.0,
  )


@pytest.mark.parametrize('name', CONFIG_FILES)
def test_every_config_file_builds_with_defaults_and_common_knobs(name):
  module = importlib.import_module(f'configs.{name}')
  config = module.get_config()
  assert set(config) == set(base.base_config())
  assert module.get_config('opt=sgd,seed=2,epochs_x=2').sam.method == 'sgd'
  # The docstring names a train.py command for this file.
  assert re.search(rf'configs/{name}\.py', module.__doc__)


def test_smoke_is_the_tiny_digits_run():
  c = smoke.get_config()
  assert (
      c.data.dataset,
      c.model.name,
      c.optim.num_epochs,
      c.optim.batch_size,
  ) == ('digits', 'wrn_mini', 1, 64)
  assert (c.run.checkpoint_every_steps, c.run.log_every_steps) == (4, 5)
  assert smoke.get_config('opt=sgd').sam.method == 'sgd'
  # Every knob it lists reaches its field (noise was once dropped).
  c = smoke.get_config('noise=0.4,rho=0.2,seed=3,epochs=2,validation=true')
  assert (
      c.data.label_noise,
      c.sam.rho,
      c.seed,
      c.optim.num_epochs,
      c.data.validation_split,
  ) == (0.4, 0.2, 3, 2, True)


def test_each_setting_sets_rho_once_from_its_table_or_the_knob():
  assert cifar.get_config('dataset=cifar100').sam.rho == 0.1  # Table 6.
  assert cifar.get_config('dataset=cifar100,rho=0.3').sam.rho == 0.3
  assert noisy_labels.get_config('noise=0.8').sam.rho == 0.05
  assert noisy_labels.get_config('noise=0.8,rho=0.2').sam.rho == 0.2


def test_quickstart_rho_knob_and_defaults():
  assert quickstart.get_config().sam.rho == 0.05
  assert quickstart.get_config('rho=0.1').sam.rho == 0.1


def test_from_record_fills_fields_a_record_lacks():
  record = {'model': {'name': 'wrn16_4'}, 'data': {'input_mean': [1.0]}}
  c = base.from_record(record)
  assert c.model.name == 'wrn16_4' and c.data.input_mean == (1.0,)
  assert c.optim.batch_size == base.base_config().optim.batch_size


def test_loading_a_config_imports_no_tensorflow_or_jax(repo_dir):
  code = (
      'import sys\n'
      'from configs import ' + ', '.join(CONFIG_FILES) + '\n'
      'for m in (' + ', '.join(CONFIG_FILES) + '):\n'
      '  m.get_config()\n'
      "heavy = [m for m in ('tensorflow', 'jax', 'flax', 'data', 'models',"
      " 'sam') if m in sys.modules]\n"
      'print(heavy)\n'
  )
  out = subprocess.run(
      [sys.executable, '-c', code],
      cwd=repo_dir,
      capture_output=True,
      text=True,
      check=True,
      env={**os.environ, 'PYTHONPATH': repo_dir},
  ).stdout
  assert out.strip() == '[]'
