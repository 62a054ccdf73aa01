"""Offline quickstart: a small WRN on scikit-learn's handwritten digits with
40% of the training labels redrawn, where SAM's robustness shows.

  python train.py --config=configs/quickstart.py --workdir=/tmp/quickstart/sam
  python train.py --config=configs/quickstart.py:opt=sgd \
    --workdir=/tmp/quickstart/sgd
  python -m results.tables --runs_dir=/tmp/quickstart   # both, side by side

No download: the 1,797 real 8x8 digit images ship inside scikit-learn
(fixed split, data/sources.py: 1,500 train / 297 test, the test labels
clean). WRN-10-2 at the native 8x8 resolution, batch 64 in two replicas of
32, 30 epochs, random 1-pixel shifts (reflection-padded crops; no flips:
digits are not mirror-symmetric). Not a paper number; about 1.5 minutes
(SAM) and 45 s (SGD) on 2 CPU cores. With clean labels SGD and SAM both
reach about 0.7% error; with 40% noise SGD memorises the wrong labels by
epoch 30 and SAM resists (README, "The quickstart"). Knobs: opt [sam | sgd
| any sam.methods name], rho [0.05; a method's own where
configs/base.METHOD_RHO has one], epochs_x [1], validation [false], seed
[0], model [wrn10_2], epochs [30], noise [0.4: the fraction of training
labels redrawn uniformly over the ten classes, Table 4's setting in
miniature (data/label_noise.py); 0 for the clean digits].
"""

from configs import base
from configs import knobs

KNOBS = {
    **base.COMMON_KNOBS,
    'model': knobs.Knob(str, 'wrn10_2'),
    'epochs': knobs.Knob(int, 30),
    'noise': knobs.Knob(float, 0.4),
}


def get_config(arg: str | None = None):
  return from_knobs(knobs.parse(arg, KNOBS, 'configs/quickstart.py'))


def from_knobs(k: dict):
  """The quickstart config of parsed KNOBS values (configs/smoke.py starts
  from it with its own defaults)."""
  c = base.base_config()
  c.data.dataset = 'digits'
  c.data.augment = 'crop'
  c.data.crop_padding = 1
  c.data.label_noise = k['noise']
  c.model.name = k['model']
  c.optim.num_epochs = k['epochs']
  c.optim.batch_size = 64
  # Two replicas of 32: the same run on any number of devices.
  c.optim.replica_batch_size = 32
  c.optim.learning_rate = 0.1
  c.optim.weight_decay = 5e-4
  c.eval.batch_size = 128
  c.eval.every_epochs = 5
  c.run.log_every_steps = 50
  c.run.checkpoint_every_steps = 200
  return base.apply_common_knobs(c, k, setting_rho=0.05)
