"""Finetuning pretrained EfficientNets: Table 3 (hyperparameters: C.2, Table 8).

  python -m models.keras_convert --model=efficientnet_b7 --weights=imagenet \
    --output=/ckpt/efficientnet_b7
  python train.py --workdir=/tmp/b7_flowers \
    --config=configs/finetune.py:dataset=oxford_flowers102,opt=sam,\
checkpoint=/ckpt/efficientnet_b7

is Table 3's EfficientNet-B7 + SAM cell on Flowers (paper: 0.63% error);
`opt=sgd` is the cell beside it (1.16%). Knobs (defaults in brackets):
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
learning rate 0.1 and rho 0.05. CIFAR uses the AutoAugment policy of the
CIFAR experiments; the other datasets use no augmentation, only the ImageNet
preprocessing. The input is normalised with the ImageNet mean and std, as the
converted Keras EfficientNets expect (models/keras_convert.py).

Every dataset is streamed from its prepared tfds files (config.data_dir) and
resized to the model's resolution. fgvc_aircraft and birdsnap are not in the
tfds catalogue: prepare them as tfds datasets of those names (features
'image' and 'label', splits 'train' and 'test') in data_dir; tfds reads a
prepared dataset without its builder.
"""

from configs import base
from data import streaming
from models import efficientnet

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
# C.2: model -> (batch size, learning rate, steps).
SCHEDULES = {
    'efficientnet_b7': (1024, 0.016, 5000),
    'efficientnet_l2': (512, 0.008, 10000),
}
IMAGENET_EPOCHS = 10
IMAGENET_LEARNING_RATE = 0.1
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


def get_config(arg: str | None = None):
  knobs = base.parse_knobs(arg, {
      'model': 'efficientnet_b7', 'dataset': 'oxford_flowers102',
      'opt': 'sam', 'rho': '', 'checkpoint': '', 'seed': '0'})
  c = base.base_config()
  c.model = knobs.pop('model')
  c.dataset = knobs.pop('dataset')
  if c.model not in SCHEDULES:
    raise ValueError(f'configs/finetune.py: model={c.model!r}; valid: '
                     f'{sorted(SCHEDULES)}')
  if c.dataset not in TRAIN_EXAMPLES:
    raise ValueError(f'configs/finetune.py: dataset={c.dataset!r}; valid: '
                     f'{sorted(TRAIN_EXAMPLES)}')
  c.init_checkpoint = knobs.pop('checkpoint')
  # Read from the tfds files at the model's resolution (data/streaming.py):
  # even CIFAR at 600x600 would not fit in memory decoded.
  c.streaming = True
  c.freeze_batch_stats = True
  # The converted Keras EfficientNets take ImageNet-normalised RGB
  # (keras_convert.input_normalisation), not the target dataset's statistics.
  c.input_mean = streaming.IMAGENET_MEAN
  c.input_std = streaming.IMAGENET_STD
  c.image_size = efficientnet.FINETUNE_RESOLUTION[c.model.split('_')[1]]

  c.batch_size, c.learning_rate, steps = SCHEDULES[c.model]
  if c.dataset == 'imagenet2012':
    c.learning_rate = IMAGENET_LEARNING_RATE
    c.num_epochs = IMAGENET_EPOCHS
    c.num_steps = 0
    c.sam.rho = IMAGENET_RHO
  else:
    # A step budget; num_epochs says about the same (base's num_epochs is an
    # int) for a loop that counts epochs.
    c.num_steps = steps
    c.num_epochs = round(steps * c.batch_size / TRAIN_EXAMPLES[c.dataset])
    c.sam.rho = TABLE8_RHO[c.dataset]
  c.weight_decay = 1e-5
  c.momentum = 0.9
  c.warmup_epochs = 0.0
  if c.dataset in ('cifar10', 'cifar100'):
    c.augment = 'autoaugment'
  else:
    c.augment = 'none'
  c.eval_batch_size = c.batch_size // 4
  c.eval_every_epochs = c.num_epochs / NUM_EVALS
  c.checkpoint_every_steps = 500
  if not knobs['rho']:
    del knobs['rho']
  return base.apply_common_knobs(c, knobs)
