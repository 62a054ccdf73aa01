"""Offline quickstart: a small WRN on scikit-learn's handwritten digits.

  python train.py --config=configs/quickstart.py --workdir=/tmp/quickstart_sam
  python train.py --config=configs/quickstart.py:opt=sgd \
    --workdir=/tmp/quickstart_sgd

No download: the 1,797 real 8x8 digit images ship inside scikit-learn
(fixed split, data/sources.py: 1,500 train / 297 test). WRN-10-2 at the
native 8x8 resolution, batch 64, 30 epochs, random 1-pixel shifts (no flips:
digits are not mirror-symmetric). Not a paper number; a few minutes on
2 CPU cores. Knobs: opt [sam | sgd], rho [0.05], epochs_x [1], validation
[false], seed [0], model [wrn10_2], epochs [30].
"""

from configs import base


def get_config(arg: str | None = None):
  knobs = base.parse_knobs(arg, {
      'opt': 'sam', 'rho': '0.05', 'epochs_x': '1', 'validation': 'false',
      'seed': '0', 'model': 'wrn10_2', 'epochs': '30'})
  c = base.base_config()
  c.dataset = 'digits'
  c.augment = 'crop'
  c.crop_padding = 1
  c.model = knobs.pop('model')
  c.num_epochs = int(knobs.pop('epochs'))
  c.batch_size = 64
  c.eval_batch_size = 128
  c.learning_rate = 0.1
  c.weight_decay = 5e-4
  c.log_every_steps = 50
  c.eval_every_epochs = 5
  c.checkpoint_every_steps = 200
  return base.apply_common_knobs(c, knobs)
