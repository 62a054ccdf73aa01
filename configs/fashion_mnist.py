"""Fashion-MNIST: Table 5, right (hyperparameters: Table 7).

  python train.py --workdir=/tmp/fmnist_wrn_sam \
    --config=configs/fashion_mnist.py:model=wrn28_10,augment=basic,opt=sam

is Table 5's Wide-ResNet-28-10, basic augmentation, Fashion-MNIST SAM cell
(paper: 3.98% error); `augment=cutout` is the "Auto augment" line, which for
Fashion-MNIST is cutout only (appendix B.1; paper: 3.61%). Knobs (defaults in
brackets): model [wrn28_10 | shake_shake_26_2x96d], augment [basic | cutout],
opt [sam | sgd], rho [Table 7: 0.05 for WRN, 0.02 for Shake-Shake], epochs
[200; the paper does not state it], epochs_x [1], validation [false], seed [0].

Table 7: learning rate 0.1, weight decay 5e-4; batch 256, cosine decay,
Nesterov momentum 0.9, clipping at norm 5 (C.1). Images are 28x28x1; data/
decides how they enter the 32x32 CIFAR models.
"""

from configs import base
from configs import knobs

# Table 7's rho per model.
RHO = {'wrn28_10': 0.05, 'shake_shake_26_2x96d': 0.02}

KNOBS = {
    **base.COMMON_KNOBS,
    'model': knobs.Knob(str, 'wrn28_10', tuple(RHO)),
    'augment': knobs.Knob(str, 'basic', ('basic', 'cutout')),
    'epochs': knobs.Knob(int, 200),
}


def get_config(arg: str | None = None):
  k = knobs.parse(arg, KNOBS, 'configs/fashion_mnist.py')
  c = base.base_config()
  c.data.dataset = 'fashion_mnist'
  c.model.name = k['model']
  c.data.augment = k['augment']
  c.optim.num_epochs = k['epochs']
  c.optim.learning_rate = 0.1
  c.optim.weight_decay = 5e-4
  c.optim.replica_batch_size = 32  # The paper's 8 GPUs at batch 256.
  return base.apply_common_knobs(c, k, setting_rho=RHO[k['model']])
