"""The paper's replica sizes and per-dataset augmentation in every setting."""

import pytest

from configs import cifar
from configs import fashion_mnist
from configs import finetune
from configs import imagenet
from configs import noisy_labels
from configs import svhn
from data import catalog


@pytest.mark.parametrize(
    'get_config, arg, replica_batch, batch',
    [
        # 8 V100s at batch 256: 32 examples per accelerator.
        (cifar.get_config, '', 32, 256),
        (svhn.get_config, '', 32, 256),
        (fashion_mnist.get_config, '', 32, 256),
        (noisy_labels.get_config, '', 32, 256),
        # 32 TPUv3 cores at batch 4096.
        (imagenet.get_config, '', 128, 4096),
        # B7: 1024 on 64 cores; L2: 512 on 128 cores.
        (finetune.get_config, 'dataset=cifar10', 16, 1024),
        (finetune.get_config, 'model=efficientnet_l2,dataset=cifar10', 4, 512),
    ],
)
def test_replica_batch_is_the_papers_per_accelerator_batch(
    get_config, arg, replica_batch, batch
):
  c = get_config(arg)
  assert (c.optim.replica_batch_size, c.optim.batch_size) == (
      replica_batch,
      batch,
  )


@pytest.mark.parametrize(
    'get_config, arg',
    [
        (cifar.get_config, 'model=pyramidnet_272_200_shakedrop'),
        (finetune.get_config, 'dataset=oxford_flowers102'),
        (finetune.get_config, 'dataset=imagenet2012'),
        (imagenet.get_config, ''),
    ],
)
def test_paper_settings_redraw_the_gates_in_each_sam_pass(get_config, arg):
  # The official code's hardware Bernoulli ignores its key (train.py,
  # hardware_bernoulli): ShakeDrop, dropout and drop-connect gates differ
  # between SAM's two passes in every number of the paper.
  assert get_config(arg).model.fresh_gates_each_pass


def test_svhn_autoaugment_line_runs_the_policy_without_flip_or_crop():
  assert svhn.get_config('augment=basic').data.augment == 'basic'
  c = svhn.get_config('augment=autoaugment_cutout')
  assert c.data.augment == 'aa_only_cutout'


def test_fashion_mnist_stays_at_its_own_resolution():
  c = fashion_mnist.get_config('augment=cutout')
  assert (c.data.image_size, c.data.augment) == (0, 'cutout')


def test_svhn_validation_runs_take_the_official_fraction():
  # The SVHN holdout is the official fixed one (data/sources.py), which the
  # pipeline only accepts at the paper's 10%.
  c = svhn.get_config('validation=true')
  assert c.data.validation_split and c.data.svhn_extra
  assert c.data.validation_fraction == catalog.HOLDOUT_FRACTION
