"""configs/cifar.py gives the paper's Table 1 / Table 6 settings."""

import pytest

from configs import cifar
from configs import quickstart


def test_wrn28_10_cifar10_sam_is_table_1_setting():
  c = cifar.get_config('model=wrn28_10,dataset=cifar10,opt=sam,rho=0.05')
  assert (c.model.name, c.data.dataset, c.sam.method, c.data.augment) == (
      'wrn28_10',
      'cifar10',
      'sam',
      'basic',
  )
  assert (
      c.optim.batch_size,
      c.optim.num_epochs,
      c.optim.epochs_multiplier,
  ) == (256, 200, 1.0)
  assert (c.optim.learning_rate, c.optim.weight_decay, c.sam.rho) == (
      0.1,
      5e-4,
      0.05,
  )
  assert (c.optim.momentum, c.optim.nesterov, c.optim.grad_clip_norm) == (
      0.9,
      True,
      5.0,
  )
  assert c.optim.warmup_epochs == 0 and not c.sam.sync_perturbation
  assert not c.data.validation_split


@pytest.mark.parametrize(
    'knobs, epochs',
    [
        ('model=wrn28_10', 200),
        ('model=shake_shake_26_2x96d', 1800),
        ('model=pyramidnet_272_200', 1800),
        ('model=pyramidnet_272_200_shakedrop,dataset=cifar100', 1800),
        ('model=shake_shake_26_2x96d,epochs=200', 200),
    ],
)
def test_each_model_defaults_to_its_table_1_epochs(knobs, epochs):
  # The official runs of Shake-Shake and PyramidNet are 1800 epochs; a
  # user of the config alone gets them without launch/rows.py.
  assert cifar.get_config(knobs).optim.num_epochs == epochs


@pytest.mark.parametrize(
    'knobs,lr,wd,rho',
    [
        ('dataset=cifar100', 0.1, 5e-4, 0.1),
        ('epochs=1800', 0.05, 1e-3, 0.05),
        ('dataset=cifar100,epochs=1800', 0.05, 1e-3, 0.1),
        ('model=shake_shake_26_2x96d', 0.02, 1e-3, 0.02),
        ('model=pyramidnet_272_200,dataset=cifar100', 0.05, 5e-4, 0.2),
        ('model=pyramidnet_272_200_shakedrop', 0.02, 5e-4, 0.05),
        (
            'model=pyramidnet_272_200_shakedrop,dataset=cifar100',
            0.05,
            5e-4,
            0.05,
        ),
    ],
)
def test_table_6_hyperparameters(knobs, lr, wd, rho):
  c = cifar.get_config(knobs)
  assert (c.optim.learning_rate, c.optim.weight_decay, c.sam.rho) == (
      lr,
      wd,
      rho,
  )


def test_doubled_epoch_sgd_baseline_and_validation_knobs():
  c = cifar.get_config('opt=sgd,epochs_x=2,validation=true,seed=3')
  assert (
      c.sam.method,
      c.optim.epochs_multiplier,
      c.data.validation_split,
      c.seed,
  ) == ('sgd', 2.0, True, 3)


def test_quickstart_uses_the_digits_source():
  c = quickstart.get_config('opt=sgd')
  assert (c.data.dataset, c.sam.method, c.model.name) == (
      'digits',
      'sgd',
      'wrn10_2',
  )
