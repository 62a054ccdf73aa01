"""ImageNet from scratch with ResNets: Table 2 (hyperparameters: appendix C.1).

  python train.py --workdir=/tmp/r50_sam \
    --config=configs/imagenet.py:model=resnet50,epochs=100,opt=sam \
    --config.data.data_dir=gs://BUCKET/tensorflow_datasets

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
from configs import knobs

KNOBS = {
    **base.COMMON_KNOBS,
    'model': knobs.Knob(
        str, 'resnet50', ('resnet50', 'resnet101', 'resnet152')
    ),
    'epochs': knobs.Knob(int, 100),
    'augment': knobs.Knob(str, 'basic'),
    'warmup': knobs.Knob(float, 0.0),
}


def get_config(arg: str | None = None):
  k = knobs.parse(arg, KNOBS, 'configs/imagenet.py')
  c = base.base_config()
  c.data.dataset = 'imagenet2012'
  c.model.name = k['model']
  c.data.augment = k['augment']
  c.data.image_size = 224
  c.optim.num_epochs = k['epochs']
  c.optim.warmup_epochs = k['warmup']
  c.optim.batch_size = 4096
  c.optim.replica_batch_size = 128  # 32 TPUv3 cores.
  c.optim.learning_rate = 1.0
  c.optim.weight_decay = 1e-4
  c.optim.momentum = 0.9
  c.eval.batch_size = 1024
  c.eval.every_epochs = 5.0
  c.run.log_every_steps = 100
  c.run.checkpoint_every_steps = 1000
  return base.apply_common_knobs(c, k, setting_rho=0.05)
