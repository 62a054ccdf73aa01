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
configs/base.py are used.
"""

from configs import base

NOISE_RATES = (0.2, 0.4, 0.6, 0.8)


def get_config(arg: str | None = None):
  knobs = base.parse_knobs(arg, {
      'noise': '0.2', 'opt': 'sam', 'rho': '', 'mixup': '0', 'teacher': '',
      'epochs': '200', 'epochs_x': '1', 'validation': 'false', 'seed': '0'})
  c = base.base_config()
  c.dataset = 'cifar10'
  c.model = 'resnet32'
  c.augment = 'basic'
  c.label_noise = float(knobs.pop('noise'))
  if not 0.0 <= c.label_noise < 1.0:
    raise ValueError(f'configs/noisy_labels.py: noise={c.label_noise}; valid: '
                     f'[0, 1), the paper uses {list(NOISE_RATES)}')
  c.num_epochs = int(knobs.pop('epochs'))
  c.sam.rho = 0.05 if c.label_noise >= 0.8 else 0.1
  c.mixup_alpha = float(knobs.pop('mixup'))
  if c.mixup_alpha < 0:
    raise ValueError(f'configs/noisy_labels.py: mixup={c.mixup_alpha}; valid: '
                     '0 (off) or a Beta(alpha, alpha) parameter > 0')
  # Workdir of a finished run whose predictions relabel the training set.
  c.bootstrap_teacher_workdir = knobs.pop('teacher')
  if not knobs['rho']:
    del knobs['rho']
  return base.apply_common_knobs(c, knobs)
