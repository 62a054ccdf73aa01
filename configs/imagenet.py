"""ImageNet from scratch with ResNets: Table 2 (hyperparameters: appendix C.1).

  python train.py --workdir=/tmp/r50_sam \
    --config=configs/imagenet.py:model=resnet50,epochs=100,opt=sam \
    --config.data_dir=gs://BUCKET/tensorflow_datasets

is Table 2's ResNet-50, 100 epochs, SAM cell (paper: 22.5% top-1 and 6.28%
top-5 error); `opt=sgd` is the cell beside it (22.9% / 6.62%). Knobs (defaults
in brackets): model [resnet50 | resnet101 | resnet152], epochs [100 | 200 |
400], opt [sam | sgd], rho [0.05, from a grid search on ResNet-50 at 100
epochs], augment [basic: the dataset's standard training transform, for
ImageNet an Inception-style random-resized 224 crop and flip], epochs_x [1],
validation [false; true holds out 10% of train], seed [0], warmup [0 epochs;
the paper states none].

C.1: batch 4096 (the paper used a TPUv3 with 32 cores), initial learning rate
1.0 with a cosine decay, SGD with momentum 0.9, weight decay 1e-4.
"""

from configs import base

RESNETS = ('resnet50', 'resnet101', 'resnet152')


def get_config(arg: str | None = None):
  knobs = base.parse_knobs(arg, {
      'model': 'resnet50', 'epochs': '100', 'opt': 'sam', 'rho': '0.05',
      'augment': 'basic', 'epochs_x': '1', 'validation': 'false', 'seed': '0',
      'warmup': '0'})
  c = base.base_config()
  c.dataset = 'imagenet2012'
  c.model = knobs.pop('model')
  if c.model not in RESNETS:
    raise ValueError(f'configs/imagenet.py: model={c.model!r}; valid: '
                     f'{list(RESNETS)}')
  c.augment = knobs.pop('augment')
  c.num_epochs = int(knobs.pop('epochs'))
  c.warmup_epochs = float(knobs.pop('warmup'))
  c.image_size = 224
  c.batch_size = 4096
  c.learning_rate = 1.0
  c.weight_decay = 1e-4
  c.momentum = 0.9
  c.eval_batch_size = 1024
  c.eval_every_epochs = 5.0
  c.log_every_steps = 100
  c.checkpoint_every_steps = 1000
  return base.apply_common_knobs(c, knobs)
