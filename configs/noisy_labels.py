"""CIFAR-10 with noisy labels, ResNet-32, 200 epochs: Table 4 (Section 3.3).

  python train.py --workdir=/tmp/noise20_sam \
    --config=configs/noisy_labels.py:noise=0.2,opt=sam

is Table 4's "SAM" cell at 20% noise (paper: 95.1% test accuracy on the clean
test set). The other lines of the lower block:
  SGD                opt=sgd
  Mixup              opt=sgd,mixup=ALPHA   (ALPHA in {1, 8, 16, 32}; the paper
                                            reports the best)
  Bootstrap + Mixup  opt=sgd,mixup=ALPHA,teacher=WORKDIR_OF_THE_MIXUP_RUN
  Bootstrap + SAM    opt=sam,teacher=WORKDIR_OF_THE_SAM_RUN
where "bootstrap" retrains from scratch on the labels that the finished
teacher run predicts for the training set.

Knobs (defaults in brackets): noise [0.2 | 0.4 | 0.6 | 0.8], opt [sam | sgd],
rho [0.1; 0.05 at 80% noise, as the paper], mixup [0: off], teacher [none],
epochs [200], epochs_x [1], validation [false; true holds out a clean 10% of
train, the paper's rho search (Table 9)], seed [0]. The paper does not state
ResNet-32's learning rate or weight decay: the CIFAR defaults of
configs/base.py are used. Noise follows the convention of the work the paper
cites (Zhang et al. 2017, MentorMix): each training label, with probability
noise, is redrawn uniformly over all ten classes (data/label_noise.py).
"""

from configs import base
from configs import knobs

NOISE_RATES = (0.2, 0.4, 0.6, 0.8)

KNOBS = {
    **base.COMMON_KNOBS,
    'noise': knobs.Knob(float, 0.2),
    'mixup': knobs.Knob(float, 0.0),
    'teacher': knobs.Knob(str, ''),
    'epochs': knobs.Knob(int, 200),
}


def get_config(arg: str | None = None):
  k = knobs.parse(arg, KNOBS, 'configs/noisy_labels.py')
  if not 0.0 <= k['noise'] < 1.0:
    raise knobs.KnobError(
        f'configs/noisy_labels.py: noise={k["noise"]}; '
        f'valid: [0, 1), the paper uses {list(NOISE_RATES)}'
    )
  if k['mixup'] < 0:
    raise knobs.KnobError(
        f'configs/noisy_labels.py: mixup={k["mixup"]}; '
        'valid: 0 (off) or a Beta(alpha, alpha) parameter '
        '> 0'
    )
  c = base.base_config()
  c.data.dataset = 'cifar10'
  c.model.name = 'resnet32'
  c.data.augment = 'basic'
  c.data.label_noise = k['noise']
  c.optim.num_epochs = k['epochs']
  c.data.mixup_alpha = k['mixup']
  # Workdir of a finished run whose predictions relabel the training set.
  c.data.bootstrap_teacher_workdir = k['teacher']
  c.optim.replica_batch_size = 32  # The paper's 8 GPUs at batch 256.
  rho = 0.05 if k['noise'] >= 0.8 else 0.1
  return base.apply_common_knobs(c, k, setting_rho=rho)
