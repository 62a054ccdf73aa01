"""SVHN (train + extra, 604,388 images): Table 5, left (hyperparameters:
Table 7).

  python train.py --workdir=/tmp/svhn_wrn_sam \
    --config=configs/svhn.py:model=wrn28_10,augment=basic,opt=sam

is Table 5's Wide-ResNet-28-10, basic augmentation, SVHN SAM cell (paper:
1.42% error); `augment=autoaugment_cutout` is the "Auto augment" line (the
SVHN AutoAugment policy plus cutout, appendix B.1; paper: 0.99%), which the
official code runs without flips or crops (data.augment =
'aa_only_cutout'). Knobs (defaults in brackets): model [wrn28_10 |
shake_shake_26_2x96d], augment [basic | autoaugment_cutout], opt [sam |
sgd], rho [0.01], epochs [200; the paper does not state it], epochs_x [1],
validation [false; true holds out the official code's last 7,328 of train,
training on the first 65,929 (+ extra)], seed [0], extra [true: train on
train + extra as the paper does].

Table 7: learning rate 0.01, weight decay 5e-4, rho 0.01 for both models;
batch 256, cosine decay, Nesterov momentum 0.9, clipping at norm 5 (C.1).
"""

from configs import base
from configs import knobs

KNOBS = {
    **base.COMMON_KNOBS,
    'model': knobs.Knob(str, 'wrn28_10', ('wrn28_10', 'shake_shake_26_2x96d')),
    'augment': knobs.Knob(str, 'basic', ('basic', 'autoaugment_cutout')),
    'epochs': knobs.Knob(int, 200),
    'extra': knobs.Knob(bool, True),
}


def get_config(arg: str | None = None):
  k = knobs.parse(arg, KNOBS, 'configs/svhn.py')
  c = base.base_config()
  c.data.dataset = 'svhn_cropped'
  c.model.name = k['model']
  # The official SVHN AutoAugment runs take the policy alone ('aa-only').
  c.data.augment = {'basic': 'basic', 'autoaugment_cutout': 'aa_only_cutout'}[
      k['augment']
  ]
  c.data.svhn_extra = k['extra']
  c.optim.num_epochs = k['epochs']
  c.optim.learning_rate = 0.01
  c.optim.weight_decay = 5e-4
  c.optim.replica_batch_size = 32  # The paper's 8 GPUs at batch 256.
  return base.apply_common_knobs(c, k, setting_rho=0.01)
