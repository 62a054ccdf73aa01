"""Bad input: each malformed config fails before compiling, with one line
naming the field and what is accepted, and leaves existing files untouched."""

import math
import os
import subprocess
import sys

import jax
import pytest

from configs import base
from configs import cifar
from configs import knobs
from configs import quickstart
from configs import smoke
from configs import svhn
from sam.run import checks
from sam.run import experiment

# (field path, bad value, expected fragment of the one-line error).
BAD_FIELDS = [
    ('model.name', 'wrn99', "config.model.name = 'wrn99': valid: ["),
    (
        'data.dataset',
        'cifar11',
        "config.data.dataset = 'cifar11': valid: in memory [",
    ),
    ('data.augment', 'fancy', "config.data.augment = 'fancy': valid: ["),
    ('sam.method', 'adam', "config.sam.method = 'adam': valid: ["),
    (
        'model.dtype',
        'float16',
        "config.model.dtype = 'float16': valid: ['bfloat16'",
    ),
    ('sam.rho', -0.1, 'config.sam.rho = -0.1: must be >= 0'),
    ('sam.rho', math.inf, 'config.sam.rho = inf: must be finite'),
    ('optim.num_epochs', 0, 'config.optim.num_epochs = 0: must be > 0'),
    ('optim.num_epochs', -5, 'config.optim.num_epochs = -5: must be > 0'),
    (
        'optim.epochs_multiplier',
        0.0,
        'config.optim.epochs_multiplier = 0.0: must be > 0',
    ),
    ('optim.batch_size', 0, 'config.optim.batch_size = 0: must be > 0'),
    (
        'optim.batch_size',
        7,
        'config.optim.batch_size = 7: must be divisible '
        'by the number of devices (2)',
    ),
    ('eval.batch_size', 5, 'config.eval.batch_size = 5: must be divisible'),
    (
        'optim.learning_rate',
        0.0,
        'config.optim.learning_rate = 0.0: must be > 0',
    ),
    (
        'optim.learning_rate',
        -1.0,
        'config.optim.learning_rate = -1.0: must be > 0',
    ),
    (
        'optim.learning_rate',
        math.inf,
        'config.optim.learning_rate = inf: must be finite',
    ),
    ('optim.momentum', 1.0, 'config.optim.momentum = 1.0: must be in [0, 1)'),
    ('optim.momentum', -0.1, 'config.optim.momentum = -0.1: must be in [0, 1)'),
    (
        'optim.weight_decay',
        -1e-4,
        'config.optim.weight_decay = -0.0001: must be >= 0',
    ),
    (
        'optim.grad_clip_norm',
        -1.0,
        'config.optim.grad_clip_norm = -1.0: must be >= 0',
    ),
    (
        'optim.label_smoothing',
        1.0,
        'config.optim.label_smoothing = 1.0: must be in',
    ),
    (
        'data.validation_fraction',
        0.0,
        'config.data.validation_fraction = 0.0: must be',
    ),
    (
        'data.validation_fraction',
        1.5,
        'config.data.validation_fraction = 1.5: must be',
    ),
    (
        'optim.warmup_epochs',
        -1.0,
        'config.optim.warmup_epochs = -1.0: must be >= 0',
    ),
    ('data.crop_padding', -2, 'config.data.crop_padding = -2: must be >= 0'),
    (
        'data.label_noise',
        1.0,
        'config.data.label_noise = 1.0: must be in [0, 1)',
    ),
    (
        'data.label_noise',
        -0.2,
        'config.data.label_noise = -0.2: must be in [0, 1)',
    ),
    (
        'data.label_noise_mode',
        'flip',
        "config.data.label_noise_mode = 'flip': valid: "
        "['different', 'uniform']",
    ),
    ('data.mixup_alpha', -1.0, 'config.data.mixup_alpha = -1.0: must be >= 0'),
    ('data.image_size', -32, 'config.data.image_size = -32: must be >= 0'),
    (
        'data.bootstrap_teacher_workdir',
        '/nonexistent/run',
        "config.data.bootstrap_teacher_workdir = '/nonexistent/run': no "
        'summary.json',
    ),
    (
        'model.init_checkpoint',
        '/nonexistent/ckpt',
        "config.model.init_checkpoint = '/nonexistent/ckpt': no such path",
    ),
    ('run.log_every_steps', 0, 'config.run.log_every_steps = 0: must be > 0'),
    (
        'run.checkpoint_every_steps',
        0,
        'config.run.checkpoint_every_steps = 0: must',
    ),
    ('run.keep_checkpoints', 0, 'config.run.keep_checkpoints = 0: must be > 0'),
    ('eval.every_epochs', 0.0, 'config.eval.every_epochs = 0.0: must be > 0'),
    (
        'eval.sharpness_every_steps',
        -1,
        'config.eval.sharpness_every_steps = -1: must',
    ),
]


def set_field(config, path, value):
  *parents, leaf = path.split('.')
  for name in parents:
    config = config[name]
  config[leaf] = value


def snapshot(directory):
  return {
      name: os.path.getmtime(os.path.join(directory, name))
      for name in sorted(os.listdir(directory))
  }


@pytest.fixture
def existing_workdir(tmp_path):
  (tmp_path / 'notes.txt').write_text('an earlier file')
  return str(tmp_path)


@pytest.mark.parametrize(
    'path,value,message', BAD_FIELDS, ids=[f'{p}={v}' for p, v, _ in BAD_FIELDS]
)
def test_bad_field_fails_with_one_line_and_writes_nothing(
    existing_workdir, path, value, message
):
  config = quickstart.get_config()
  set_field(config, path, value)
  before = snapshot(existing_workdir)
  with pytest.raises(checks.ConfigError) as error:
    experiment.train_and_evaluate(config, existing_workdir)
  assert message in str(error.value)
  assert '\n' not in str(error.value)
  assert snapshot(existing_workdir) == before


def test_batch_larger_than_the_training_set(existing_workdir):
  config = quickstart.get_config()
  config.optim.batch_size = 2048
  with pytest.raises(
      checks.ConfigError,
      match='config.optim.batch_size = 2048: larger than the ' '1500',
  ):
    experiment.train_and_evaluate(config, existing_workdir)
  assert os.listdir(existing_workdir) == ['notes.txt']


def test_workdir_holding_another_config_is_untouched(tmp_path):
  config = quickstart.get_config()
  (tmp_path / 'config.json').write_text(config.to_json())
  before = snapshot(tmp_path)
  other = quickstart.get_config('model=wrn10_1')
  with pytest.raises(
      checks.ConfigError, match=r"fields \['model.name'\] differ"
  ):
    experiment.train_and_evaluate(other, str(tmp_path))
  assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    'content', ['{"data": {', '', '[1, 2]', '\x00\x01 binary']
)
def test_a_damaged_config_record_is_one_line_and_stays(tmp_path, content):
  (tmp_path / 'config.json').write_text(content)
  before = snapshot(tmp_path)
  with pytest.raises(checks.ConfigError) as error:
    experiment.train_and_evaluate(quickstart.get_config(), str(tmp_path))
  message = str(error.value)
  assert str(tmp_path / 'config.json') in message and '\n' not in message
  assert 'use a new workdir' in message
  assert snapshot(tmp_path) == before
  assert (tmp_path / 'config.json').read_text() == content


def test_a_file_given_as_workdir_is_one_line(tmp_path):
  path = tmp_path / 'run'
  path.write_text('not a folder')
  with pytest.raises(checks.ConfigError, match='is a file; a workdir is a'):
    experiment.train_and_evaluate(quickstart.get_config(), str(path))
  assert path.read_text() == 'not a folder'


@pytest.mark.parametrize(
    'arg,message',
    [
        ('modle=wrn28_10', "bad knob 'modle=wrn28_10'; valid knobs: opt="),
        ('rho', "bad knob 'rho'"),
        ('dataset=svhn', "dataset='svhn'; valid: ['cifar10', 'cifar100']"),
        ('epochs=many', "epochs='many': takes int values"),
    ],
)
def test_bad_config_string_knobs(arg, message):
  with pytest.raises(knobs.KnobError) as error:
    cifar.get_config(arg)
  assert message in str(error.value)


def test_wrong_type_is_refused_by_the_config():
  config = quickstart.get_config()
  with pytest.raises(TypeError, match='batch_size'):
    config.optim.batch_size = 'big'


@pytest.mark.parametrize(
    'args,message',
    [
        (
            ['--config=configs/quickstart.py', '--config.sam.rho=-1'],
            'error: config.sam.rho = -1.0: must be >= 0',
        ),
        (
            ['--config=configs/quickstart.py', '--config.optim.batch_size=big'],
            'batch_size',
        ),
        (
            ['--config=configs/quickstart.py', '--config.no_such_field=1'],
            'no_such_field',
        ),
        (
            [
                '--config=configs/quickstart.py',
                '--config.optim.learnin_rate=0.1',
            ],
            'learnin_rate',
        ),
        (
            ['--config=configs/cifar.py:rho=abc'],
            "rho='abc': takes float values",
        ),
        (['--config=configs/cifar.py:epoch=1'], "bad knob 'epoch=1'"),
        (
            ['--config=configs/quickstart.py', '--config.sam.method=adam'],
            "config.sam.method = 'adam': valid: [",
        ),
        (
            [
                '--config=configs/quickstart.py',
                '--config.optim.learning_rate=inf',
            ],
            'config.optim.learning_rate = inf: must be finite',
        ),
        (
            ['--config=configs/quickstart.py', '--config.data.label_noise=nan'],
            'config.data.label_noise = nan',
        ),
        (
            ['--config=configs/missing.py'],
            'error: --config=configs/missing.py: no such file',
        ),
        (
            ['--config=configs/quickstart.py', 'extra'],
            "error: unexpected arguments ['extra']; train.py takes --config "
            'and --workdir',
        ),
    ],
)
def test_command_line_errors_are_one_line_before_compiling(
    tmp_path, repo_dir, args, message
):
  result = subprocess.run(
      [sys.executable, 'train.py', f'--workdir={tmp_path}/run'] + args,
      capture_output=True,
      text=True,
      timeout=300,
      cwd=repo_dir,
  )
  assert result.returncode != 0
  # One line, the last: the error, and no traceback before it (the lines
  # before it are TensorFlow's and jax's start-up logs).
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and message in last, result.stderr
  assert 'Traceback' not in result.stderr, result.stderr
  assert not os.path.exists(tmp_path / 'run')


@pytest.mark.parametrize(
    'fields,message',
    [
        ({'sam.p': 0.5}, r'config.sam.p = 0.5: must be in \[1, inf\]'),
        ({'sam.ascent_steps': 0}, 'config.sam.ascent_steps = 0: must be >= 1'),
        ({'sam.ascent_steps': 2, 'sam.p': 3.0}, 'needs sam.p = 2 or inf'),
        (
            {'sam.m': 3},
            r'config.sam.m = 3: must divide the per-device batch \(8\)',
        ),
        (
            {'sam.m': 4, 'sam.sync_perturbation': True},
            'must be 0 with sam.sync',
        ),
        (
            {'optim.accumulation_steps': 3},
            r'must be >= 1 and divide the ' r'per-device batch \(8\)',
        ),
        (
            {'optim.accumulation_steps': 4, 'sam.m': 4},
            r'must divide the ' r'micro-batch \(2\)',
        ),
        ({'sam.method': 'gaussian'}, r"valid: \['aesam', 'esam', 'fsam', "),
        (
            {'sam.method': 'random', 'sam.adaptive': True},
            'random takes no adaptive',
        ),
        (
            {'sam.method': 'second_order', 'sam.ascent_steps': 2},
            'second_order takes no ascent_steps',
        ),
        (
            {'sam.method': 'rst', 'sam.rst_probability': 1.5},
            r'config.sam.rst_probability = 1.5: must be >= 0.0 and <= 1.0',
        ),
        (
            {'sam.method': 'gsam', 'sam.gsam_rho_min': 0.1},
            r"must be <= sam.rho \(0.05\), which is GSAM's rho_max",
        ),
        (
            {'sam.method': 'msam', 'sam.msam_momentum': 1.0},
            r'msam_momentum = 1.0: must be >= 0.0 and < 1.0',
        ),
        (
            {'sam.method': 'looksam', 'sam.looksam_every': 0},
            'looksam_every = 0: must be >= 1',
        ),
        (
            {'sam.method': 'sam', 'sam.looksam_every': 3},
            'sam.method=sam takes no looksam_every',
        ),
    ],
)
def test_bad_sam_family_configs_fail_with_one_line_errors(fields, message):
  config = base.base_config()
  config.optim.batch_size = 16
  for name, value in fields.items():
    section, leaf = name.split('.')
    config[section][leaf] = value
  with pytest.raises(checks.ConfigError, match=message) as error:
    checks.validate(config, num_devices=2)
  assert '\n' not in str(error.value)


def test_sam_family_configs_that_pass_validation():
  config = base.base_config()
  config.optim.batch_size = 16
  config.optim.accumulation_steps = 2
  config.sam.m = 4
  config.sam.p = math.inf
  config.sam.ascent_steps = 3
  checks.validate(config, num_devices=2)


def test_float64_needs_jax_64_bit_mode():
  config = smoke.get_config()
  config.model.dtype = 'float64'
  with pytest.raises(checks.ConfigError, match="needs jax's 64-bit mode"):
    checks.validate(config, jax.device_count())


def test_svhn_validation_takes_only_the_official_holdout():
  # SVHN validates on the official code's train[65929:] (data/sources.py):
  # another fraction is refused before anything loads or compiles.
  config = svhn.get_config('validation=true')
  checks.validate(config, 2)
  config.data.validation_fraction = 0.2
  with pytest.raises(
      checks.ConfigError,
      match=r'config.data.validation_fraction = 0.2: SVHN holds out',
  ):
    checks.validate(config, 2)
