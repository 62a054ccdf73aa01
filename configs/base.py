"""Fields shared by every config; each paper setting overrides a few.

Not a runnable setting on its own: `configs/cifar.py`, `configs/quickstart.py`
and the other files start from `base_config()`.
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """Returns the defaults: the paper's CIFAR WRN-28-10 recipe (Table 6)."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  # Data (data/).
  c.dataset = 'cifar10'
  c.data_dir = ml_collections.FieldReference(None, field_type=str)
  c.augment = 'basic'
  c.crop_padding = 4
  c.validation_split = False  # Hold out 10% of train (the paper's rho search).
  c.validation_fraction = 0.1
  c.label_noise = 0.0
  c.shuffle_buffer_examples = 0  # Unused for in-memory datasets.

  # Model (models/).
  c.model = 'wrn28_10'
  c.dtype = 'float32'

  # Optimisation (sam/optim.py): SGD + Nesterov, cosine per step, clipping.
  c.optimizer = 'sam'  # 'sam' or 'sgd'.
  c.batch_size = 256  # Global, over all devices and hosts.
  c.num_epochs = 200
  # The paper trains SGD for 1x and 2x the epochs of the SAM run.
  c.epochs_multiplier = 1.0
  c.learning_rate = 0.1
  c.warmup_epochs = 0.0
  c.momentum = 0.9
  c.nesterov = True
  c.weight_decay = 5e-4  # L2 in the loss: 0.5 * wd * ||w||^2.
  c.weight_decay_exclude_bn_bias = False
  c.grad_clip_norm = 5.0  # Global-norm clipping; 0 turns it off.
  c.label_smoothing = 0.0

  # SAM (sam/sam.py).
  c.sam = ml_collections.ConfigDict()
  c.sam.rho = 0.05
  # False: each device perturbs with its own sub-batch gradient (m-sharpness
  # with m = per-device batch, the paper's setting). True: one perturbation
  # from the gradient of the global batch.
  c.sam.sync_perturbation = False

  # Evaluation, logging, checkpoints.
  c.eval_batch_size = 512
  c.eval_every_epochs = 1.0
  c.log_every_steps = 100
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 2
  return c


def parse_knobs(arg: str | None, defaults: dict[str, str]) -> dict[str, str]:
  """Parses 'k=v,k=v' config-string knobs over `defaults`.

  Args:
    arg: the text after ':' in `--config=configs/x.py:arg` (may be empty).
    defaults: every accepted knob and its default value.

  Returns:
    defaults updated with the given knobs (values are strings).
  """
  knobs = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, sep, value = item.partition('=')
    if not sep or key not in defaults:
      raise ValueError(f'bad config knob {item!r}; valid knobs: '
                       f'{", ".join(f"{k}=" for k in defaults)}')
    knobs[key] = value
  return knobs


def apply_common_knobs(c: ml_collections.ConfigDict,
                       knobs: dict[str, str]) -> ml_collections.ConfigDict:
  """Sets the knobs every setting shares: opt, rho, epochs_x, validation,
  seed (knobs absent from `knobs` are left alone)."""
  if 'opt' in knobs:
    c.optimizer = knobs['opt']
  if 'rho' in knobs:
    c.sam.rho = float(knobs['rho'])
  if 'epochs_x' in knobs:
    c.epochs_multiplier = float(knobs['epochs_x'])
  if 'validation' in knobs:
    c.validation_split = knobs['validation'].lower() in ('1', 'true', 'yes')
  if 'seed' in knobs:
    c.seed = int(knobs['seed'])
  return c
