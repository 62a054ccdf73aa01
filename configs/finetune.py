"""Finetuning pretrained EfficientNets: Table 3 (hyperparameters: C.2, Table 8).

The paper finetunes the EfficientNet-B7 released with RandAugment by the TF
EfficientNet code (tensorflow/tpu, models/official/efficientnet; the tarball
https://storage.googleapis.com/cloud-tpu-checkpoints/efficientnet/randaug/\
efficientnet-b7-randaug.tar.gz unpacks to the TF checkpoint folder
efficientnet-b7-randaug/). Convert it with the TF converter (the moving
averages of the weights, as the TF evaluation uses), then finetune:

  python -m models.tf_efficientnet_convert --model=efficientnet_b7 \
    --checkpoint=/ckpt/efficientnet-b7-randaug \
    --output_dir=/ckpt/efficientnet_b7_randaug
  python train.py --workdir=/tmp/b7_flowers \
    --config=configs/finetune.py:dataset=oxford_flowers102,opt=sam,\
checkpoint=/ckpt/efficientnet_b7_randaug

is Table 3's EfficientNet-B7 + SAM cell on Flowers (paper: 0.63% error);
`opt=sgd` is the cell beside it (1.16%). --checkpoint takes the folder
(whose `checkpoint` file names the prefix) or the prefix itself.
models.keras_convert's B7 (the Keras application's ImageNet weights) is
another training run than the paper's. L2 converts the same way from
noisy_student_efficientnet-l2_475 (--model=efficientnet_l2; see
models/tf_efficientnet_convert.py). Knobs (defaults in brackets):
  model [efficientnet_b7 | efficientnet_l2], dataset [cifar10 | cifar100 |
  oxford_flowers102 | oxford_iiit_pet | cars196 | food101 | fgvc_aircraft |
  birdsnap | imagenet2012], opt [sam | sgd], rho [Table 8's value; 0.05 for
  ImageNet], checkpoint [''; the orbax checkpoint of the pretrained weights],
  seed [0].

C.2: start from the public checkpoint with the head re-initialised for the
new classes (kept for ImageNet, whose classes match); BatchNorm statistics
frozen (normalisation with the running averages); SGD with momentum 0.9,
cosine decay, weight decay 1e-5; B7: batch 1024, learning rate 0.016, 5k
steps, resolution 600; L2: batch 512, learning rate 0.008, 10k steps (the
steps scaled with the halved batch), resolution 475. ImageNet: 10 epochs at
learning rate 0.1 and rho 0.05. Every dataset: gradients clipped to global
norm 1.0 and label smoothing 0.1, the flags of the official README's
finetuning command (google-research/sam README.md, "Finetuning
EfficientNet": `--gradient_clipping 1.0 --label_smoothing 0.1`; its
training defaults are 5.0 and 0).

Preprocessing. ImageNet as the official code (dataset_source_imagenet.py,
`preprocess_for_train`, applied to every training example): an Inception
crop of 8-100% of the area, flip, at the model's resolution ('basic' of a
streamed dataset); evaluation takes the centre crop of size / (size + 32) of
the shorter side. CIFAR uses the AutoAugment policy of the CIFAR
experiments at 32 pixels, then each normalised batch is resized to the
model's resolution, as the official code does. For the other datasets the
released official code does not say: its train.py names them but routes
them to a dataset source it did not release (dataset_source_brain, whose
preprocessing ignores the augmentation flag) and later raises 'Dataset not
recognized' for them. They are left without augmentation: the evaluation
crop and ImageNet normalisation (what the pretrained EfficientNets expect),
streamed from their prepared tfds files (config.data.data_dir).
fgvc_aircraft and birdsnap are not in the tfds catalogue: prepare them as
tfds datasets of those names (features 'image' and 'label', splits 'train'
and 'test') in data_dir; tfds reads a prepared dataset without its builder.
"""

from configs import base
from configs import knobs

# Table 8: rho of the finetuning experiments (the paper's dataset names
# mapped to tfds names).
TABLE8_RHO = {
    'fgvc_aircraft': 0.1,
    'oxford_flowers102': 0.2,
    'oxford_iiit_pet': 0.1,
    'cars196': 0.2,
    'cifar10': 0.05,
    'cifar100': 0.02,
    'birdsnap': 0.05,
    'food101': 0.02,
}
IMAGENET_RHO = 0.05
# C.2: model -> (batch size, learning rate, steps, resolution). The
# resolutions are models.efficientnet.FINETUNE_RESOLUTION's (B7 at its own
# 600, L2 at 475), repeated here so that loading a config imports no model.
SCHEDULES = {
    'efficientnet_b7': (1024, 0.016, 5000, 600),
    'efficientnet_l2': (512, 0.008, 10000, 475),
}
# C.2: B7 ran on 64 TPUv3 cores (1024 / 64 = 16 examples a core), L2 on 128
# (512 / 128 = 4): the examples per replica of each SAM perturbation
# (BatchNorm statistics are frozen, so it sets only the perturbation).
REPLICA_BATCH = {'efficientnet_b7': 16, 'efficientnet_l2': 4}
IMAGENET_EPOCHS = 10
IMAGENET_LEARNING_RATE = 0.1
# The official README's finetuning command: --gradient_clipping 1.0
# --label_smoothing 0.1.
GRAD_CLIP_NORM = 1.0
LABEL_SMOOTHING = 0.1
# ImageNet's RGB statistics on the 0-255 scale, which the converted
# EfficientNets expect (data.streaming.IMAGENET_MEAN / IMAGENET_STD).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
# Training examples per dataset, to express the step budget in epochs for a
# loop that counts epochs.
TRAIN_EXAMPLES = {
    'fgvc_aircraft': 6667,
    'oxford_flowers102': 2040,  # train + validation
    'oxford_iiit_pet': 3680,
    'cars196': 8144,
    'cifar10': 50000,
    'cifar100': 50000,
    'birdsnap': 47386,
    'food101': 75750,
    'imagenet2012': 1281167,
}
NUM_EVALS = 10

KNOBS = {
    **base.COMMON_KNOBS,
    'model': knobs.Knob(str, 'efficientnet_b7', tuple(SCHEDULES)),
    'dataset': knobs.Knob(str, 'oxford_flowers102', tuple(TRAIN_EXAMPLES)),
    'checkpoint': knobs.Knob(str, ''),
}


def get_config(arg: str | None = None):
  """The finetuning config.

  Args:
    arg: the knobs, 'name=value,...' (module docstring), or None.

  Returns:
    The run's ml_collections.ConfigDict.
  """
  k = knobs.parse(arg, KNOBS, 'configs/finetune.py')
  c = base.base_config()
  c.model.name = k['model']
  c.data.dataset = dataset = k['dataset']
  c.model.init_checkpoint = k['checkpoint']
  c.model.freeze_batch_stats = True
  if dataset.startswith('cifar'):
    # As the official code: held in memory at 32x32, the CIFAR AutoAugment
    # policy, flip and crop at 32 pixels, CIFAR's own normalisation, then
    # each batch resized (bicubic) to the model's resolution; evaluation
    # resizes the whole image.
    c.data.augment = 'autoaugment'
  else:
    # Read from the tfds files at the model's resolution (data/streaming.py),
    # with ImageNet's normalisation. ImageNet trains on the official
    # preprocess_for_train (Inception crop and flip: streamed 'basic');
    # the official code does not say what the other datasets did (module
    # docstring), so they train on the evaluation crop.
    c.data.streaming = True
    c.data.augment = 'basic' if dataset == 'imagenet2012' else 'none'
    c.data.input_mean = IMAGENET_MEAN
    c.data.input_std = IMAGENET_STD
  c.optim.batch_size, c.optim.learning_rate, steps, c.data.image_size = (
      SCHEDULES[k['model']]
  )
  c.optim.replica_batch_size = REPLICA_BATCH[k['model']]
  if dataset == 'imagenet2012':
    c.optim.learning_rate = IMAGENET_LEARNING_RATE
    c.optim.num_epochs = IMAGENET_EPOCHS
    c.optim.num_steps = 0
    rho = IMAGENET_RHO
  else:
    # A step budget; num_epochs says about the same (base's num_epochs is an
    # int) for a loop that counts epochs.
    c.optim.num_steps = steps
    c.optim.num_epochs = round(
        steps * c.optim.batch_size / TRAIN_EXAMPLES[dataset]
    )
    rho = TABLE8_RHO[dataset]
  c.optim.weight_decay = 1e-5
  c.optim.momentum = 0.9
  c.optim.grad_clip_norm = GRAD_CLIP_NORM
  c.optim.label_smoothing = LABEL_SMOOTHING
  c.optim.warmup_epochs = 0.0
  c.eval.batch_size = c.optim.batch_size // 4
  c.eval.every_epochs = c.optim.num_epochs / NUM_EVALS
  c.run.checkpoint_every_steps = 500
  return base.apply_common_knobs(c, k, setting_rho=rho)
