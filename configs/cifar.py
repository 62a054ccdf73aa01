"""CIFAR-10/100 from scratch: Table 1 of the paper (hyperparameters: Table 6).

  python train.py --workdir=/tmp/wrn_sam \
    --config=configs/cifar.py:model=wrn28_10,dataset=cifar10,opt=sam,rho=0.05

is Table 1's WRN-28-10, 200 epochs, basic augmentation, SAM row on CIFAR-10
(paper: 2.7% error). Knobs (defaults in brackets):
  model [wrn28_10], dataset [cifar10 | cifar100], opt [sam | sgd],
  rho [Table 6's value for model and dataset], augment [basic],
  epochs [200], epochs_x [1; 2 gives the paper's doubled-epoch SGD baseline],
  validation [false; true holds out 10% of train for the rho search],
  seed [0], m [0: SAM's m-sharpness m (sam.m) is the per-device batch; > 0
  gives m examples per perturbation, Figure 3 middle].
Learning rate and weight decay come from Table 6 for the model and epochs
(batch 256, cosine decay per step, Nesterov momentum 0.9, L2 in the loss,
gradient clipping at global norm 5). Any field can be overridden with
`--config.field=value`.
"""

from configs import base

# Table 6: (model, epochs) -> (learning rate, weight decay, rho CIFAR-10,
# rho CIFAR-100).
TABLE6 = {
    ('wrn28_10', 200): (0.1, 5e-4, 0.05, 0.1),
    ('wrn28_10', 1800): (0.05, 1e-3, 0.05, 0.1),
    ('shake_shake_26_2x96d', None): (0.02, 1e-3, 0.02, 0.05),
    ('pyramidnet_272_200', None): (0.05, 5e-4, 0.05, 0.2),
}
# PyramidNet + ShakeDrop's learning rate differs per dataset in Table 6.
SHAKEDROP = {'cifar10': (0.02, 5e-4, 0.05, None),
             'cifar100': (0.05, 5e-4, None, 0.05)}


def table6(model: str, dataset: str, epochs: int):
  """(learning rate, weight decay, rho) of Table 6, or the WRN-28-10
  200-epoch values for a model the table does not list."""
  if model == 'pyramidnet_272_200_shakedrop':
    lr, wd, rho10, rho100 = SHAKEDROP[dataset]
  else:
    lr, wd, rho10, rho100 = TABLE6.get(
        (model, epochs), TABLE6.get((model, None), TABLE6[('wrn28_10', 200)]))
  return lr, wd, rho10 if dataset == 'cifar10' else rho100


def get_config(arg: str | None = None):
  knobs = base.parse_knobs(arg, {
      'model': 'wrn28_10', 'dataset': 'cifar10', 'opt': 'sam', 'rho': '',
      'augment': 'basic', 'epochs': '200', 'epochs_x': '1',
      'validation': 'false', 'seed': '0', 'm': '0'})
  c = base.base_config()
  c.model = knobs.pop('model')
  c.dataset = knobs.pop('dataset')
  c.augment = knobs.pop('augment')
  c.num_epochs = int(knobs.pop('epochs'))
  c.sam.m = int(knobs.pop('m'))
  if c.dataset not in ('cifar10', 'cifar100'):
    raise ValueError(f'configs/cifar.py: dataset={c.dataset!r}; valid: '
                     "['cifar10', 'cifar100']")
  c.learning_rate, c.weight_decay, c.sam.rho = table6(
      c.model, c.dataset, c.num_epochs)
  if not knobs['rho']:
    del knobs['rho']
  return base.apply_common_knobs(c, knobs)
