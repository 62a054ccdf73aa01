"""Tests for configs/finetune.py: C.2 and Table 8 values."""

import pytest

from configs import finetune
from data import catalog
from models import efficientnet
from sam.run import checks


@pytest.mark.parametrize(
    'dataset,rho',
    [
        ('fgvc_aircraft', 0.1),
        ('oxford_flowers102', 0.2),
        ('oxford_iiit_pet', 0.1),
        ('cars196', 0.2),
        ('cifar10', 0.05),
        ('cifar100', 0.02),
        ('birdsnap', 0.05),
        ('food101', 0.02),
    ],
)
def test_b7_recipe_and_table8_rho(dataset, rho):
  c = finetune.get_config(f'dataset={dataset},checkpoint=/ckpt/b7')
  assert c.sam.rho == rho
  assert (
      c.model.name,
      c.optim.batch_size,
      c.optim.learning_rate,
      c.optim.num_steps,
  ) == ('efficientnet_b7', 1024, 0.016, 5000)
  assert c.optim.num_epochs * finetune.TRAIN_EXAMPLES[dataset] == (
      pytest.approx(5000 * 1024, rel=0.01)
  )
  assert (c.optim.weight_decay, c.optim.momentum, c.data.image_size) == (
      1e-5,
      0.9,
      600,
  )
  assert c.model.freeze_batch_stats
  assert c.model.init_checkpoint == '/ckpt/b7'
  # The official README's finetuning flags.
  assert (c.optim.grad_clip_norm, c.optim.label_smoothing) == (1.0, 0.1)
  if dataset.startswith('cifar'):
    # The official code: AutoAugment at 32 px, CIFAR's statistics, in memory.
    assert (c.data.augment, c.data.streaming) == ('autoaugment', False)
    assert c.data.input_mean == ()
  else:
    # ImageNet statistics on the 0-255 scale: 255 * (0.485, 0.456, 0.406).
    assert c.data.input_mean == pytest.approx((123.675, 116.28, 103.53))
    assert c.data.input_std == pytest.approx((58.395, 57.12, 57.375))
    # The official code leaves these datasets' preprocessing unknown.
    assert (c.data.augment, c.data.streaming) == ('none', True)


def test_facts_repeated_in_the_config_match_their_sources():
  # The config holds them as data so that loading it imports no TF or jax.
  assert finetune.IMAGENET_MEAN == catalog.IMAGENET_MEAN
  assert finetune.IMAGENET_STD == catalog.IMAGENET_STD
  for model, (*_, resolution) in finetune.SCHEDULES.items():
    variant = model.split('_')[1]
    assert resolution == efficientnet.FINETUNE_RESOLUTION[variant]


def test_l2_recipe():
  c = finetune.get_config('model=efficientnet_l2,dataset=cifar100')
  assert (
      c.optim.batch_size,
      c.optim.learning_rate,
      c.optim.num_steps,
      c.data.image_size,
  ) == (512, 0.008, 10000, 475)


def test_imagenet_recipe_and_knob_overrides():
  c = finetune.get_config('dataset=imagenet2012,opt=sgd')
  assert (
      c.optim.num_epochs,
      c.optim.num_steps,
      c.optim.learning_rate,
      c.sam.rho,
  ) == (10, 0, 0.1, 0.05)
  assert c.sam.method == 'sgd'
  assert finetune.get_config('rho=0.07').sam.rho == 0.07


@pytest.mark.parametrize('model', ['efficientnet_b7', 'efficientnet_l2'])
def test_imagenet_trains_on_the_official_crop_and_flip(model):
  # dataset_source_imagenet.py applies preprocess_for_train (Inception crop
  # of 8-100% of the area, then flip) to every training example; streamed,
  # that is 'basic' ('none' would train on the evaluation crop).
  c = finetune.get_config(f'model={model},dataset=imagenet2012')
  assert (c.data.augment, c.data.streaming) == ('basic', True)
  assert catalog.AUGMENTATIONS['basic'].streamed == (
      'random-resized (Inception) crop and flip'
  )


@pytest.mark.parametrize('dataset', ['imagenet2012', 'cifar10', 'cars196'])
def test_clipping_and_label_smoothing_of_the_official_readme(dataset):
  # README.md, "Finetuning EfficientNet": --gradient_clipping 1.0
  # --label_smoothing 0.1 (the training defaults: 5.0 and 0).
  c = finetune.get_config(f'model=efficientnet_l2,dataset={dataset}')
  assert c.optim.grad_clip_norm == 1.0
  assert c.optim.label_smoothing == 0.1


def test_bad_knobs_are_clear_errors():
  with pytest.raises(ValueError, match="dataset='mnist'; valid"):
    finetune.get_config('dataset=mnist')
  with pytest.raises(ValueError, match="model='resnet50'; valid"):
    finetune.get_config('model=resnet50')


@pytest.mark.parametrize(
    'dataset',
    [
        'oxford_flowers102',
        'oxford_iiit_pet',
        'cars196',
        'food101',
        'cifar10',
        'imagenet2012',
    ],
)
def test_configs_of_tfds_datasets_validate(dataset):
  c = finetune.get_config(f'dataset={dataset}')
  checks.validate(c, 8)
  assert c.data.streaming == (not dataset.startswith('cifar'))
