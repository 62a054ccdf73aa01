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
  c.autoaugment_policy = ''  # '' picks the dataset's published policy.
  c.randaugment_layers = 2
  c.randaugment_magnitude = 9.0
  # Per-channel normalisation on the 0-255 scale; empty = the dataset's own
  # statistics (pretrained weights bring the statistics they were trained
  # with).
  c.input_mean = ()
  c.input_std = ()
  c.validation_split = False  # Hold out 10% of train (the paper's rho search).
  c.validation_fraction = 0.1
  c.image_size = 0  # Training/eval resolution; 0 keeps the dataset's own.
  c.svhn_extra = False  # SVHN: train on train + extra (604,388 images).
  # Table 4: corrupt this fraction of training labels (never validation or
  # test); 'different' draws a different class, 'uniform' any class.
  c.label_noise = 0.0
  c.label_noise_mode = 'different'
  c.mixup_alpha = 0.0  # > 0: mixup with Beta(alpha, alpha) on train batches.
  # Bootstrap (Table 4): train on the labels that the finished run in this
  # workdir predicts for the training set.
  c.bootstrap_teacher_workdir = ''
  # Read the tfds files as training goes (data/streaming.py) instead of
  # holding the dataset in memory; datasets outside data.sources.SOURCES
  # (ImageNet, the finetuning sets) always stream.
  c.streaming = False
  # Streamed datasets: records in the shuffle buffer (0: up to 20,000).
  c.shuffle_buffer_examples = 0

  # Model (models/).
  c.model = 'wrn28_10'
  c.dtype = 'float32'
  # Finetuning (paper C.2): start from this orbax checkpoint of converted
  # weights; the head is re-initialised when the number of classes differs.
  c.init_checkpoint = ''
  c.freeze_batch_stats = False  # BatchNorm uses its running averages.

  # Optimisation (sam/optim.py): SGD + Nesterov, cosine per step, clipping.
  c.optimizer = 'sam'  # 'sam' or 'sgd'.
  c.batch_size = 256  # Global, over all devices and hosts.
  # Micro-batches per device batch, run one after another (same update,
  # less memory); must divide the per-device batch.
  c.accumulation_steps = 1
  c.num_epochs = 200
  c.num_steps = 0  # > 0: a step budget that replaces num_epochs (finetuning).
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
  # A non-finite loss or gradient stops the run (False) or skips that step's
  # update, counted in the metrics as skipped_steps (True).
  c.skip_nonfinite_steps = False

  # SAM (sam/sam.py).
  c.sam = ml_collections.ConfigDict()
  c.sam.rho = 0.05
  # False: each device perturbs with its own sub-batch gradient (m-sharpness
  # with m = per-device batch, the paper's setting). True: one perturbation
  # from the gradient of the global batch.
  c.sam.sync_perturbation = False
  # m-sharpness (Section 4.1): examples per independent perturbation, each
  # group of m a virtual device (its own eps and BatchNorm batch); must divide
  # the per-device batch. 0 = the per-device batch.
  c.sam.m = 0
  # How the groups run: 'unroll' (a static loop: compile time grows with the
  # number of groups) or 'vmap' (one batched program, which turns the groups'
  # own weights into grouped convolutions: WRN-16-4, batch 128, m = 32 on
  # XLA:CPU took 97.7 s a step with vmap, 21.4 s unrolled).
  c.sam.m_groups = 'unroll'
  # The norm of the neighbourhood, in [1, inf]; 2 is the paper's SAM, inf
  # gives eps = rho * sign(g) (Appendix C.5), others equation (2).
  c.sam.p = 2.0
  # 'gradient' (SAM) or 'random': eps = rho * z / ||z||, z ~ N(0, I) (C.5).
  c.sam.perturbation = 'gradient'
  # Steps of projected gradient ascent for eps (C.6); 1 is SAM. p = 2 or inf.
  c.sam.ascent_steps = 1
  # Keep the d eps / dw term (C.4, one Hessian-vector product); logs the
  # cosine of the second- and first-order updates as second_order_cosine.
  c.sam.second_order = False
  # ASAM (Kwon et al., 2021): the ball scaled elementwise by |w| + eta. Its
  # rho is larger than SAM's: the ASAM paper uses rho = 0.5 (CIFAR-10) and
  # 1.0 (CIFAR-100) with eta = 0.01.
  c.sam.adaptive = False
  c.sam.adaptive_eta = 0.01

  # Sharpness probe logged during training (Table 12, Figure 7): every this
  # many steps (0 = never), max_{||eps|| <= rho} L(w + eps) - L(w) by k-step
  # projected ascent on the step's first device batch.
  c.sharpness_every_steps = 0
  c.sharpness_rho = 0.05
  c.sharpness_ascent_steps = 1

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
