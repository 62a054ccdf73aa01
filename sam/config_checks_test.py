"""Bad input: each malformed config fails before compiling, with one line
naming the field and what is accepted, and leaves existing files untouched."""

import os
import subprocess
import sys

import pytest

from configs import cifar
from configs import quickstart
from sam import config_checks
from sam import training

# (field path, bad value, expected fragment of the one-line error).
BAD_FIELDS = [
    ('model', 'wrn99', "config.model = 'wrn99': valid: ["),
    ('dataset', 'cifar11', "config.dataset = 'cifar11': valid: in memory ["),
    ('augment', 'fancy', "config.augment = 'fancy': valid: ["),
    ('optimizer', 'adam', "config.optimizer = 'adam': valid: ['sam', 'sgd']"),
    ('dtype', 'float16', "config.dtype = 'float16': valid: ['bfloat16'"),
    ('sam.rho', -0.1, 'config.sam.rho = -0.1: must be >= 0'),
    ('num_epochs', 0, 'config.num_epochs = 0: must be > 0'),
    ('num_epochs', -5, 'config.num_epochs = -5: must be > 0'),
    ('epochs_multiplier', 0.0, 'config.epochs_multiplier = 0.0: must be > 0'),
    ('batch_size', 0, 'config.batch_size = 0: must be > 0'),
    ('batch_size', 7, 'config.batch_size = 7: must be divisible by the '
     'number of devices (2)'),
    ('eval_batch_size', 5, 'config.eval_batch_size = 5: must be divisible'),
    ('learning_rate', 0.0, 'config.learning_rate = 0.0: must be > 0'),
    ('learning_rate', -1.0, 'config.learning_rate = -1.0: must be > 0'),
    ('momentum', 1.0, 'config.momentum = 1.0: must be in [0, 1)'),
    ('momentum', -0.1, 'config.momentum = -0.1: must be in [0, 1)'),
    ('weight_decay', -1e-4, 'config.weight_decay = -0.0001: must be >= 0'),
    ('grad_clip_norm', -1.0, 'config.grad_clip_norm = -1.0: must be >= 0'),
    ('label_smoothing', 1.0, 'config.label_smoothing = 1.0: must be in'),
    ('validation_fraction', 0.0, 'config.validation_fraction = 0.0: must be'),
    ('validation_fraction', 1.5, 'config.validation_fraction = 1.5: must be'),
    ('warmup_epochs', -1.0, 'config.warmup_epochs = -1.0: must be >= 0'),
    ('crop_padding', -2, 'config.crop_padding = -2: must be >= 0'),
    ('label_noise', 1.0, 'config.label_noise = 1.0: must be in [0, 1)'),
    ('label_noise', -0.2, 'config.label_noise = -0.2: must be in [0, 1)'),
    ('label_noise_mode', 'flip', "config.label_noise_mode = 'flip': valid: "
     "['different', 'uniform']"),
    ('mixup_alpha', -1.0, 'config.mixup_alpha = -1.0: must be >= 0'),
    ('image_size', -32, 'config.image_size = -32: must be >= 0'),
    ('bootstrap_teacher_workdir', '/nonexistent/run',
     "config.bootstrap_teacher_workdir = '/nonexistent/run': no summary.json"),
    ('init_checkpoint', '/nonexistent/ckpt',
     "config.init_checkpoint = '/nonexistent/ckpt': no such path"),
    ('log_every_steps', 0, 'config.log_every_steps = 0: must be > 0'),
    ('checkpoint_every_steps', 0, 'config.checkpoint_every_steps = 0: must'),
    ('keep_checkpoints', 0, 'config.keep_checkpoints = 0: must be > 0'),
    ('eval_every_epochs', 0.0, 'config.eval_every_epochs = 0.0: must be > 0'),
    ('sharpness_every_steps', -1, 'config.sharpness_every_steps = -1: must'),
]


def set_field(config, path, value):
  *parents, leaf = path.split('.')
  for name in parents:
    config = config[name]
  config[leaf] = value


def snapshot(directory):
  return {name: os.path.getmtime(os.path.join(directory, name))
          for name in sorted(os.listdir(directory))}


@pytest.fixture
def existing_workdir(tmp_path):
  (tmp_path / 'notes.txt').write_text('an earlier file')
  return str(tmp_path)


@pytest.mark.parametrize('path,value,message', BAD_FIELDS,
                         ids=[f'{p}={v}' for p, v, _ in BAD_FIELDS])
def test_bad_field_fails_with_one_line_and_writes_nothing(
    existing_workdir, path, value, message):
  config = quickstart.get_config()
  set_field(config, path, value)
  before = snapshot(existing_workdir)
  with pytest.raises(config_checks.ConfigError) as error:
    training.train_and_evaluate(config, existing_workdir)
  assert message in str(error.value)
  assert '\n' not in str(error.value)
  assert snapshot(existing_workdir) == before


def test_batch_larger_than_the_training_set(existing_workdir):
  config = quickstart.get_config()
  config.batch_size = 2048
  with pytest.raises(config_checks.ConfigError,
                     match='config.batch_size = 2048: larger than the 1500'):
    training.train_and_evaluate(config, existing_workdir)
  assert os.listdir(existing_workdir) == ['notes.txt']


def test_workdir_holding_another_config_is_untouched(tmp_path):
  config = quickstart.get_config()
  (tmp_path / 'config.json').write_text(config.to_json())
  before = snapshot(tmp_path)
  other = quickstart.get_config('model=wrn10_1')
  with pytest.raises(config_checks.ConfigError,
                     match=r"fields \['model'\] differ"):
    training.train_and_evaluate(other, str(tmp_path))
  assert snapshot(tmp_path) == before


@pytest.mark.parametrize('knobs,message', [
    ('modle=wrn28_10', "bad config knob 'modle=wrn28_10'; valid knobs: model="),
    ('rho', "bad config knob 'rho'"),
    ('dataset=svhn', "dataset='svhn'; valid: ['cifar10', 'cifar100']"),
    ('epochs=many', "invalid literal for int() with base 10: 'many'"),
])
def test_bad_config_string_knobs(knobs, message):
  with pytest.raises(ValueError) as error:
    cifar.get_config(knobs)
  assert message in str(error.value)


def test_wrong_type_is_refused_by_the_config():
  config = quickstart.get_config()
  with pytest.raises(TypeError, match='batch_size'):
    config.batch_size = 'big'


@pytest.mark.parametrize('args,message', [
    (['--config=configs/quickstart.py', '--config.sam.rho=-1'],
     'error: config.sam.rho = -1.0: must be >= 0'),
    (['--config=configs/quickstart.py', '--config.batch_size=big'],
     'batch_size'),
    (['--config=configs/quickstart.py', '--config.no_such_field=1'],
     'no_such_field'),
])
def test_command_line_errors_before_compiling(tmp_path, args, message):
  result = subprocess.run(
      [sys.executable, 'train.py', f'--workdir={tmp_path}/run'] + args,
      capture_output=True, text=True, timeout=300,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert result.returncode != 0
  assert message in result.stderr
  assert not os.path.exists(tmp_path / 'run')
