"""The fields of every run, in sections; each paper setting overrides a few.

Not a runnable setting on its own: `configs/cifar.py`, `configs/quickstart.py`
and the other files start from `base_config()`. The defaults are the paper's
CIFAR WRN-28-10 recipe (Table 6). Sections:

  data   what the examples are and how they are augmented (data/)
  model  the network (models/)
  optim  the objective and the base optimizer (sam/losses.py, sam/optim.py)
  sam    the SAM-family gradient (sam/methods.py, sam/groups.py)
  eval   evaluation and the sharpness probe logged during training
  run    logging, checkpoints and multi-host placement (sam/run/)
"""

import ml_collections

from configs import knobs


def data_section() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
      {
          'dataset': 'cifar10',
          # tfds data directory (local or gs://); for 'folder', the image root.
          'data_dir': ml_collections.FieldReference(None, field_type=str),
          # Read the tfds files as training goes (data/streaming.py) instead of
          # holding the dataset in memory; datasets outside data.sources.SOURCES
          # (ImageNet, the finetuning sets) always stream.
          'streaming': False,
          'shuffle_buffer_examples': 0,  # Streamed: 0 = up to 20,000 records.
          'image_size': 0,  # Training/eval resolution; 0 keeps the dataset's.
          'augment': 'basic',  # A name of data.augment.AUGMENTATIONS.
          'crop_padding': 4,
          'autoaugment_policy': '',  # '' picks the dataset's published policy.
          'randaugment_layers': 2,
          'randaugment_magnitude': 9.0,
          # Per-channel normalisation on the 0-255 scale; empty = the dataset's
          # own statistics (pretrained weights bring the ones they were trained
          # with).
          'input_mean': (),
          'input_std': (),
          'validation_split': False,  # Hold out part of train (the rho search).
          'validation_fraction': 0.1,
          'svhn_extra': False,  # SVHN: train on train + extra (604,388 images).
          # Table 4: corrupt this fraction of training labels (never validation
          # or test). 'uniform' (Zhang et al. 2017, MentorMix's data) redraws
          # each label with probability r over all classes; 'different'
          # moves exactly round(r N) labels to another class.
          'label_noise': 0.0,
          'label_noise_mode': 'uniform',
          'mixup_alpha': 0.0,  # > 0: mixup with Beta(alpha, alpha) on device.
          # Bootstrap (Table 4): train on the labels that the finished run in
          # this workdir predicts for the training set.
          'bootstrap_teacher_workdir': '',
      }
  )


def model_section() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
      {
          'name': 'wrn28_10',  # A key of models.MODELS.
          # Computation dtype: 'bfloat16' keeps the parameters float32;
          # 'float64' holds them in float64 too (train.py turns on jax's 64-bit
          # mode), to check that a config trains the same on any device count
          # (README, "Replicas").
          'dtype': 'float32',
          # Finetuning (paper C.2): start from this orbax checkpoint of converted
          # weights; the head is re-initialised when the number of classes
          # differs.
          'init_checkpoint': '',
          'freeze_batch_stats': False,  # BatchNorm uses its running averages.
          # The official code (train.py, hardware_bernoulli) swaps
          # jax.random.bernoulli for a hardware RNG that ignores its key, so
          # each pass of a SAM step draws new dropout, drop-connect and
          # ShakeDrop gates while the uniform shake coefficients, drawn from
          # the key, are shared. True follows it (every paper number came
          # from it); False gives both passes the same gates.
          'fresh_gates_each_pass': True,
      }
  )


def optim_section() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
      {
          'batch_size': 256,  # Global, over all devices and hosts.
          # Examples per replica: BatchNorm statistics and the SAM perturbation
          # are computed per replica of this many examples, for SAM and SGD
          # alike, whether a replica is a slice of a device's batch or spans
          # several devices (sam/run/replicas.py); 0 = the per-device batch.
          # The paper's: 32 on CIFAR, SVHN, Fashion-MNIST (256 on 8 GPUs), 128 on
          # ImageNet (4096 on 32 TPU cores).
          'replica_batch_size': 0,
          # Micro-batches per device batch, run one after another (the same
          # update, less memory); must divide the per-device batch.
          'accumulation_steps': 1,
          'num_epochs': 200,
          'num_steps': 0,  # > 0: a step budget that replaces num_epochs.
          # The paper trains SGD for 1x and 2x the epochs of the SAM run.
          'epochs_multiplier': 1.0,
          'learning_rate': 0.1,  # Peak of the per-step cosine decay.
          'warmup_epochs': 0.0,
          'momentum': 0.9,
          'nesterov': True,
          'weight_decay': 5e-4,  # L2 in the loss: 0.5 * wd * ||w||^2.
          'weight_decay_exclude_bn_bias': False,
          'label_smoothing': 0.0,
          'grad_clip_norm': 5.0,  # Global-norm clipping; 0 turns it off.
          # A non-finite loss or gradient stops the run (False) or skips that
          # step's update, counted in the metrics as skipped_steps (True).
          'skip_nonfinite_steps': False,
      }
  )


def sam_section() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
      {
          # A name of sam.methods.METHODS: 'sgd' (no ascent), 'sam',
          # 'random' (eps = rho z / ||z||, z ~ N(0, I), Appendix C.5),
          # 'second_order' (keeps the d eps / dw term, C.4; logs
          # second_order_cosine), or the family after the paper: 'gsam',
          # 'esam', 'looksam', 'aesam', 'rst', 'msam', 'fsam', 'samon',
          # 'sampa', 'rwp' (their fields below).
          'method': 'sam',
          'rho': 0.05,
          # False: each device perturbs with its own sub-batch gradient
          # (m-sharpness with m = per-device batch, the paper's setting). True:
          # one perturbation from the gradient of the global batch.
          'sync_perturbation': False,
          # m-sharpness (Section 4.1): examples per independent perturbation,
          # each group of m a virtual device (its own eps and BatchNorm batch);
          # must divide the per-device batch. 0 = the per-device batch.
          'm': 0,
          # How the groups run: 'unroll' (a static loop: compile time grows with
          # the number of groups) or 'vmap' (one batched program, which turns
          # the groups' own weights into grouped convolutions: WRN-16-4, batch
          # 128, m = 32 on XLA:CPU took 97.7 s a step with vmap, 21.4 s
          # unrolled).
          'm_groups': 'unroll',
          # The norm of the neighbourhood, in [1, inf]; 2 is the paper's SAM,
          # inf gives eps = rho * sign(g) (Appendix C.5), others equation (2).
          'p': 2.0,
          # Steps of projected gradient ascent for eps (C.6); 1 is SAM. p = 2 or
          # inf.
          'ascent_steps': 1,
          # ASAM (Kwon et al., 2021): the ball scaled elementwise by |w| + eta.
          # Its rho is larger than SAM's: the ASAM paper uses rho = 0.5
          # (CIFAR-10) and 1.0 (CIFAR-100) with eta = 0.01.
          'adaptive': False,
          'adaptive_eta': 0.01,
          # The SAM family after the paper (README, "The SAM family"); each
          # field is read only by its method (its line in sam.methods.METHODS)
          # and its default, from its paper's code, is set here and nowhere
          # else (sam/methods_test.py checks that the two agree).
          # gsam: rho (rho_max) follows the learning rate down to rho_min;
          # the update subtracts alpha x the gradient's component orthogonal
          # to the perturbed one (alpha from big_vision's GSAM config; its
          # rho_min of 0.1 pairs with rho_max 0.6: 0.01 here, our choice).
          'gsam_rho_min': 0.01,
          'gsam_alpha': 0.6,
          # esam: each weight perturbed with this probability; the second
          # pass on this fraction of the examples, those whose loss rose
          # most (needs optim.accumulation_steps = 1). Du et al. (2022),
          # official run.sh (CIFAR-10/100): beta = 0.5 and gamma = 0.5 for
          # wideresnet18 and pyramidnet (ResNet-18: beta = 0.6).
          'esam_weight_fraction': 0.5,
          'esam_example_fraction': 0.5,
          # looksam: the SAM ascent every k steps; in between, the stored
          # orthogonal component scaled by alpha is added to the gradient.
          # Liu et al. (2022): k = 5 (LookSAM-5 of their tables), alpha = 0.7.
          'looksam_every': 5,
          'looksam_alpha': 0.7,
          # aesam: SAM on steps whose squared gradient norm exceeds its EMA
          # (coefficient aesam_ema) by c_t standard deviations, c_t moving
          # linearly from lambda_start (c_0) to lambda_end (c_T) over the
          # run. Jiang et al. (2023), Section 3: c_t = (t/T) lambda_1 +
          # (1 - t/T) lambda_2 with lambda_1 = -1, lambda_2 = 1 on CIFAR, so
          # c falls from +1 to -1 and SAM fires more often late in training
          # (for a normal ||g||^2, about 16% of steps at the start, 84% at
          # the end); delta = 0.9.
          'aesam_ema': 0.9,
          'aesam_lambda_start': 1.0,
          'aesam_lambda_end': -1.0,
          # How AE-SAM's on-device choice picks its branch: 'cond' runs one,
          # 'select' runs both and keeps one (the same update). 'auto' is
          # select on XLA:CPU, where a network inside a conditional runs
          # many times slower (benchmarks/cond_conv.py), else cond.
          'aesam_branch': 'auto',
          # rst: each step is SAM with this probability, SGD otherwise. Zhao,
          # Zhang & Hu (2022) schedule p over training; the constant p = 0.5
          # (the only schedule implemented) saves half of SAM's extra cost.
          'rst_probability': 0.5,
          # msam: one pass at w - rho m / ||m||, m a momentum of gradients
          # (its paper's rho is 3, not SAM's 0.05). MarlonBecker/MSAM
          # optimizer/msam.py and every configs/*.ini: 0.9.
          'msam_momentum': 0.9,
          # fsam: the perturbation direction g - sigma m, m the EMA (decay
          # lambda) of past gradients. nblt/F-SAM run.sh (the official sample
          # run): sigma = 1, lmbda = 0.95.
          'fsam_sigma': 1.0,
          'fsam_lambda': 0.95,
          # samon: ASAM's elementwise ball over the normalisation leaves
          # (ASAM-ON, the paper's headline variant; mueller-mp/SAM-ON README:
          # --minimizer=ASAM_BN --elementwise --rho=10); False: SAM's ball.
          # Its eta is adaptive_eta (the official train.py passes 0.0; 0.01
          # here, shared with ASAM, changes T = |w| + eta by 1% at |w| ~ 1).
          'samon_adaptive': True,
          # sampa: the update mixes in this weight of the gradient at the
          # auxiliary point. LIONS-EPFL/SAMPa train.py: --og defaults to 0.2.
          'sampa_lambda': 0.2,
          # Where to take SAMPa's two gradients with an even device count:
          # 'on' two device groups (its paper's parallelism), 'off' two
          # calls on every device, 'auto' off on XLA:CPU (slower there,
          # results/benchmarks/sampa.md) and on elsewhere.
          'sampa_device_groups': 'auto',
          # rwp: the update mixes rwp_alpha x the gradient at w + eps and the
          # rest of the gradient at w; eps is Gaussian with a filter-wise std
          # of rwp_sigma x the filter's norm. Li et al.'s code (nblt/RWP,
          # train_rwp_parallel.py): gamma = 0.01 on CIFAR, alpha = 0.5;
          # alpha = 1 is Bisla et al.'s noisy gradient alone.
          'rwp_sigma': 0.01,
          'rwp_alpha': 0.5,
      }
  )


def eval_section() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
      {
          'batch_size': 512,  # Global; the last batch is padded and masked.
          'every_epochs': 1.0,
          # Sharpness probe logged during training (Table 12, Figure 7): every
          # this many steps (0 = never), max_{||eps|| <= rho} L(w + eps) - L(w)
          # by k-step projected ascent on the step's first device batch.
          'sharpness_every_steps': 0,
          'sharpness_rho': 0.05,
          'sharpness_ascent_steps': 1,
      }
  )


def run_section() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
      {
          'log_every_steps': 100,
          'checkpoint_every_steps': 1000,
          'keep_checkpoints': 2,
          # TensorBoard event files in the workdir (written by TensorFlow's own
          # filesystem; metrics.jsonl and everything else go through epath).
          'tensorboard': True,
          # JAX's persistent compilation cache: a resumed run or another run of
          # the same shapes loads its compiled steps ('' turns it off).
          'compilation_cache_dir': '~/.cache/sam_jax/compilation',
          # Multi-host runs (launch/tpu.py sets these): join jax.distributed
          # before touching the devices. On a TPU pod jax finds the coordinator
          # and the process ids itself; local CPU processes name them.
          'distributed': ml_collections.ConfigDict(
              {
                  'enabled': False,
                  'coordinator_address': '',
                  'num_processes': 0,
                  'process_id': -1,
              }
          ),
      }
  )


# Fields that say where a run executes, not what it computes: a workdir's
# run may be resumed with other values.
PLACEMENT_FIELDS = (
    'run.distributed',
    'run.tensorboard',
    'run.compilation_cache_dir',
)


def base_config() -> ml_collections.ConfigDict:
  """Returns the defaults: the paper's CIFAR WRN-28-10 recipe (Table 6)."""
  return ml_collections.ConfigDict(
      {
          'seed': 0,
          'data': data_section(),
          'model': model_section(),
          'optim': optim_section(),
          'sam': sam_section(),
          'eval': eval_section(),
          'run': run_section(),
      }
  )


# The methods whose papers set a rho of another scale than SAM's: a setting's
# rho (a SAM table's) does not apply to them, so the opt knob alone gives
# theirs (the rho knob still overrides). MSAM: 3 in every config of
# MarlonBecker/MSAM (against 0.2 for its SAM runs); SAM-ON: 10 for ASAM-ON
# (its README's WRN-28-10 CIFAR-100 command). ASAM-ON's radius is spread
# over the normalisation parameters alone, each moving by about
# rho / sqrt(n): 10 is 0.075 per parameter on WRN-28-10 (n = 17,952), the
# same as rho = 2.3 on WRN-10-2 (928) or 1.6 on the mini WRN (480), where
# rho = 10 does not train (sam/run/learning_test.py).
METHOD_RHO = {'msam': 3.0, 'samon': 10.0}


# The knobs every setting shares: the optimizer (a sam.methods name), rho,
# the SGD epoch multiplier, the validation holdout and the seed.
COMMON_KNOBS = {
    'opt': knobs.Knob(str, 'sam'),
    'rho': knobs.Knob(float, None),
    'epochs_x': knobs.Knob(float, 1.0),
    'validation': knobs.Knob(bool, False),
    'seed': knobs.Knob(int, 0),
}


def apply_common_knobs(
    c: ml_collections.ConfigDict,
    values: dict,
    setting_rho: float | None = None,
) -> ml_collections.ConfigDict:
  """Sets the COMMON_KNOBS fields from parsed knob values: the one place a
  setting's rho is set.

  Args:
    c: the config being built.
    values: from `knobs.parse`, over knobs that include COMMON_KNOBS.
    setting_rho: the setting's own rho (a paper table's), taken when the
      rho knob is None.

  Returns:
    c, updated.
  """
  c.sam.method = values['opt']
  rho = values['rho']
  if rho is None:
    rho = METHOD_RHO.get(values['opt'], setting_rho)
  if rho is not None:
    c.sam.rho = rho
  c.optim.epochs_multiplier = values['epochs_x']
  c.data.validation_split = values['validation']
  c.seed = values['seed']
  return c


def _update(config: ml_collections.ConfigDict, record: dict) -> None:
  for key, value in record.items():
    current = config.get(key)
    if isinstance(current, ml_collections.ConfigDict) and isinstance(
        value, dict
    ):
      _update(current, value)
    elif isinstance(current, tuple) and isinstance(value, list):
      config[key] = tuple(value)
    else:
      config[key] = value


def from_record(record: dict) -> ml_collections.ConfigDict:
  """A run's config.json record over today's defaults, so that runs saved
  before a field existed still load.

  Args:
    record: the JSON data of a config (`json.loads(config.to_json())`).

  Returns:
    The config.
  """
  config = base_config()
  _update(config, record)
  return config
