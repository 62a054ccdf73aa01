"""CIFAR-10/100 from scratch: Table 1 of the paper (hyperparameters: Table 6).

  python train.py --workdir=/tmp/wrn_sam \
    --config=configs/cifar.py:model=wrn28_10,dataset=cifar10,opt=sam,rho=0.05

is Table 1's WRN-28-10, 200 epochs, basic augmentation, SAM row on CIFAR-10
(paper: 2.7% error). Knobs (defaults in brackets):
  model [wrn28_10], dataset [cifar10 | cifar100], opt [sam | sgd],
  rho [Table 6's value for model and dataset], augment [basic],
  epochs [Table 1's for the model: 1800 for Shake-Shake and PyramidNet
  (MODEL_EPOCHS), 200 otherwise], epochs_x [1; 2 gives the paper's
  doubled-epoch SGD baseline],
  validation [false; true holds out 10% of train for the rho search],
  seed [0], m [0: SAM's m-sharpness m (sam.m) is the per-device batch; > 0
  gives m examples per perturbation, Figure 3 middle].
Learning rate and weight decay come from Table 6 for the model and epochs
(batch 256, cosine decay per step, Nesterov momentum 0.9, L2 in the loss,
gradient clipping at global norm 5). Any field can be overridden with
`--config.section.field=value`.
"""

from configs import base
from configs import knobs

# Table 6: (model, epochs) -> (learning rate, weight decay, rho CIFAR-10,
# rho CIFAR-100).
TABLE6 = {
    ('wrn28_10', 200): (0.1, 5e-4, 0.05, 0.1),
    ('wrn28_10', 1800): (0.05, 1e-3, 0.05, 0.1),
    ('shake_shake_26_2x96d', None): (0.02, 1e-3, 0.02, 0.05),
    ('pyramidnet_272_200', None): (0.05, 5e-4, 0.05, 0.2),
}
# Table 1 trains these models for 1800 epochs only (the official runs,
# launch/rows.py); the others default to 200.
MODEL_EPOCHS = {
    'shake_shake_26_2x96d': 1800,
    'pyramidnet_272_200': 1800,
    'pyramidnet_272_200_shakedrop': 1800,
}
DEFAULT_EPOCHS = 200
# PyramidNet + ShakeDrop's learning rate differs per dataset in Table 6.
SHAKEDROP = {
    'cifar10': (0.02, 5e-4, 0.05, None),
    'cifar100': (0.05, 5e-4, None, 0.05),
}

KNOBS = {
    **base.COMMON_KNOBS,
    'model': knobs.Knob(str, 'wrn28_10'),
    'dataset': knobs.Knob(str, 'cifar10', ('cifar10', 'cifar100')),
    'augment': knobs.Knob(str, 'basic'),
    'epochs': knobs.Knob(int, None),
    'm': knobs.Knob(int, 0),
}


def table6(model: str, dataset: str, epochs: int):
  """(learning rate, weight decay, rho) of Table 6, or the WRN-28-10
  200-epoch values for a model the table does not list."""
  if model == 'pyramidnet_272_200_shakedrop':
    lr, wd, rho10, rho100 = SHAKEDROP[dataset]
  else:
    lr, wd, rho10, rho100 = TABLE6.get(
        (model, epochs), TABLE6.get((model, None), TABLE6[('wrn28_10', 200)])
    )
  return lr, wd, rho10 if dataset == 'cifar10' else rho100


def get_config(arg: str | None = None):
  k = knobs.parse(arg, KNOBS, 'configs/cifar.py')
  c = base.base_config()
  c.model.name = k['model']
  c.data.dataset = k['dataset']
  c.data.augment = k['augment']
  epochs = k['epochs'] or MODEL_EPOCHS.get(k['model'], DEFAULT_EPOCHS)
  c.optim.num_epochs = epochs
  c.sam.m = k['m']
  c.optim.learning_rate, c.optim.weight_decay, rho = table6(
      k['model'], k['dataset'], epochs
  )
  c.optim.replica_batch_size = 32  # The paper's 8 GPUs at batch 256.
  return base.apply_common_knobs(c, k, setting_rho=rho)
