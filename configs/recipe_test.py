"""The paper's replica sizes and per-dataset augmentation in every setting."""

import pytest

from configs import cifar
from configs import fashion_mnist
from configs import finetune
from configs import imagenet
from configs import noisy_labels
from configs import svhn


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


def test_svhn_autoaugment_line_runs_the_policy_without_flip_or_crop():
  assert svhn.get_config('augment=basic').data.augment == 'basic'
  c = svhn.get_config('augment=autoaugment_cutout')
  assert c.data.augment == 'aa_only_cutout'


def test_fashion_mnist_stays_at_its_own_resolution():
  c = fashion_mnist.get_config('augment=cutout')
  assert (c.data.image_size, c.data.augment) == (0, 'cutout')
