"""The published AutoAugment and RandAugment policies, as data.

AutoAugment's sub-policies are pairs of (operation, probability, magnitude)
triples for CIFAR-10, SVHN and ImageNet (Cubuk et al., 2018), as the
official SAM code (autoaugment/policies.py) gives them; RandAugment draws
from a list of operations (Cubuk et al., 2019). data/autoaugment.py
implements the operations and applies a policy.
"""

# (operation, probability, magnitude) pairs.
# The official code's CIFAR policy (autoaugment/policies.py, `policy_cifar`):
# the 95 sub-policies of the AutoAugment release, experiments exp0_0 to
# exp2_7 in order (the AutoAugment paper prints 25 of them).
CIFAR10_POLICY = (
    # exp0_0
    (('Invert', 0.1, 7), ('Contrast', 0.2, 6)),
    (('Rotate', 0.7, 2), ('TranslateX', 0.3, 9)),
    (('Sharpness', 0.8, 1), ('Sharpness', 0.9, 3)),
    (('ShearY', 0.5, 8), ('TranslateY', 0.7, 9)),
    (('AutoContrast', 0.5, 8), ('Equalize', 0.9, 2)),
    # exp0_1
    (('Solarize', 0.4, 5), ('AutoContrast', 0.9, 3)),
    (('TranslateY', 0.9, 9), ('TranslateY', 0.7, 9)),
    (('AutoContrast', 0.9, 2), ('Solarize', 0.8, 3)),
    (('Equalize', 0.8, 8), ('Invert', 0.1, 3)),
    (('TranslateY', 0.7, 9), ('AutoContrast', 0.9, 1)),
    # exp0_2
    (('Solarize', 0.4, 5), ('AutoContrast', 0.0, 2)),
    (('TranslateY', 0.7, 9), ('TranslateY', 0.7, 9)),
    (('AutoContrast', 0.9, 0), ('Solarize', 0.4, 3)),
    (('Equalize', 0.7, 5), ('Invert', 0.1, 3)),
    (('TranslateY', 0.7, 9), ('TranslateY', 0.7, 9)),
    # exp0_3
    (('Solarize', 0.4, 5), ('AutoContrast', 0.9, 1)),
    (('TranslateY', 0.8, 9), ('TranslateY', 0.9, 9)),
    (('AutoContrast', 0.8, 0), ('TranslateY', 0.7, 9)),
    (('TranslateY', 0.2, 7), ('Color', 0.9, 6)),
    (('Equalize', 0.7, 6), ('Color', 0.4, 9)),
    # exp1_0
    (('ShearY', 0.2, 7), ('Posterize', 0.3, 7)),
    (('Color', 0.4, 3), ('Brightness', 0.6, 7)),
    (('Sharpness', 0.3, 9), ('Brightness', 0.7, 9)),
    (('Equalize', 0.6, 5), ('Equalize', 0.5, 1)),
    (('Contrast', 0.6, 7), ('Sharpness', 0.6, 5)),
    # exp1_1
    (('Brightness', 0.3, 7), ('AutoContrast', 0.5, 8)),
    (('AutoContrast', 0.9, 4), ('AutoContrast', 0.5, 6)),
    (('Solarize', 0.3, 5), ('Equalize', 0.6, 5)),
    (('TranslateY', 0.2, 4), ('Sharpness', 0.3, 3)),
    (('Brightness', 0.0, 8), ('Color', 0.8, 8)),
    # exp1_2
    (('Solarize', 0.2, 6), ('Color', 0.8, 6)),
    (('Solarize', 0.2, 6), ('AutoContrast', 0.8, 1)),
    (('Solarize', 0.4, 1), ('Equalize', 0.6, 5)),
    (('Brightness', 0.0, 0), ('Solarize', 0.5, 2)),
    (('AutoContrast', 0.9, 5), ('Brightness', 0.5, 3)),
    # exp1_3
    (('Contrast', 0.7, 5), ('Brightness', 0.0, 2)),
    (('Solarize', 0.2, 8), ('Solarize', 0.1, 5)),
    (('Contrast', 0.5, 1), ('TranslateY', 0.2, 9)),
    (('AutoContrast', 0.6, 5), ('TranslateY', 0.0, 9)),
    (('AutoContrast', 0.9, 4), ('Equalize', 0.8, 4)),
    # exp1_4
    (('Brightness', 0.0, 7), ('Equalize', 0.4, 7)),
    (('Solarize', 0.2, 5), ('Equalize', 0.7, 5)),
    (('Equalize', 0.6, 8), ('Color', 0.6, 2)),
    (('Color', 0.3, 7), ('Color', 0.2, 4)),
    (('AutoContrast', 0.5, 2), ('Solarize', 0.7, 2)),
    # exp1_5
    (('AutoContrast', 0.2, 0), ('Equalize', 0.1, 0)),
    (('ShearY', 0.6, 5), ('Equalize', 0.6, 5)),
    (('Brightness', 0.9, 3), ('AutoContrast', 0.4, 1)),
    (('Equalize', 0.8, 8), ('Equalize', 0.7, 7)),
    (('Equalize', 0.7, 7), ('Solarize', 0.5, 0)),
    # exp1_6
    (('Equalize', 0.8, 4), ('TranslateY', 0.8, 9)),
    (('TranslateY', 0.8, 9), ('TranslateY', 0.6, 9)),
    (('TranslateY', 0.9, 0), ('TranslateY', 0.5, 9)),
    (('AutoContrast', 0.5, 3), ('Solarize', 0.3, 4)),
    (('Solarize', 0.5, 3), ('Equalize', 0.4, 4)),
    # exp2_0
    (('Color', 0.7, 7), ('TranslateX', 0.5, 8)),
    (('Equalize', 0.3, 7), ('AutoContrast', 0.4, 8)),
    (('TranslateY', 0.4, 3), ('Sharpness', 0.2, 6)),
    (('Brightness', 0.9, 6), ('Color', 0.2, 8)),
    (('Solarize', 0.5, 2), ('Invert', 0.0, 3)),
    # exp2_1
    (('AutoContrast', 0.1, 5), ('Brightness', 0.0, 0)),
    (('Cutout', 0.2, 4), ('Equalize', 0.1, 1)),
    (('Equalize', 0.7, 7), ('AutoContrast', 0.6, 4)),
    (('Color', 0.1, 8), ('ShearY', 0.2, 3)),
    (('ShearY', 0.4, 2), ('Rotate', 0.7, 0)),
    # exp2_2
    (('ShearY', 0.1, 3), ('AutoContrast', 0.9, 5)),
    (('TranslateY', 0.3, 6), ('Cutout', 0.3, 3)),
    (('Equalize', 0.5, 0), ('Solarize', 0.6, 6)),
    (('AutoContrast', 0.3, 5), ('Rotate', 0.2, 7)),
    (('Equalize', 0.8, 2), ('Invert', 0.4, 0)),
    # exp2_3
    (('Equalize', 0.9, 5), ('Color', 0.7, 0)),
    (('Equalize', 0.1, 1), ('ShearY', 0.1, 3)),
    (('AutoContrast', 0.7, 3), ('Equalize', 0.7, 0)),
    (('Brightness', 0.5, 1), ('Contrast', 0.1, 7)),
    (('Contrast', 0.1, 4), ('Solarize', 0.6, 5)),
    # exp2_4
    (('Solarize', 0.2, 3), ('ShearX', 0.0, 0)),
    (('TranslateX', 0.3, 0), ('TranslateX', 0.6, 0)),
    (('Equalize', 0.5, 9), ('TranslateY', 0.6, 7)),
    (('ShearX', 0.1, 0), ('Sharpness', 0.5, 1)),
    (('Equalize', 0.8, 6), ('Invert', 0.3, 6)),
    # exp2_5
    (('AutoContrast', 0.3, 9), ('Cutout', 0.5, 3)),
    (('ShearX', 0.4, 4), ('AutoContrast', 0.9, 2)),
    (('ShearX', 0.0, 3), ('Posterize', 0.0, 3)),
    (('Solarize', 0.4, 3), ('Color', 0.2, 4)),
    (('Equalize', 0.1, 4), ('Equalize', 0.7, 6)),
    # exp2_6
    (('Equalize', 0.3, 8), ('AutoContrast', 0.4, 3)),
    (('Solarize', 0.6, 4), ('AutoContrast', 0.7, 6)),
    (('AutoContrast', 0.2, 9), ('Brightness', 0.4, 8)),
    (('Equalize', 0.1, 0), ('Equalize', 0.0, 6)),
    (('Equalize', 0.8, 4), ('Equalize', 0.0, 4)),
    # exp2_7
    (('Equalize', 0.5, 5), ('AutoContrast', 0.1, 2)),
    (('Solarize', 0.5, 5), ('AutoContrast', 0.9, 5)),
    (('AutoContrast', 0.6, 1), ('AutoContrast', 0.7, 8)),
    (('Equalize', 0.2, 0), ('AutoContrast', 0.1, 2)),
    (('Equalize', 0.6, 9), ('Equalize', 0.4, 4)),
)

SVHN_POLICY = (
    (('ShearX', 0.9, 4), ('Invert', 0.2, 3)),
    (('ShearY', 0.9, 8), ('Invert', 0.7, 5)),
    (('Equalize', 0.6, 5), ('Solarize', 0.6, 6)),
    (('Invert', 0.9, 3), ('Equalize', 0.6, 3)),
    (('Equalize', 0.6, 1), ('Rotate', 0.9, 3)),
    (('ShearX', 0.9, 4), ('AutoContrast', 0.8, 3)),
    (('ShearY', 0.9, 8), ('Invert', 0.4, 5)),
    (('ShearY', 0.9, 5), ('Solarize', 0.2, 6)),
    (('Invert', 0.9, 6), ('AutoContrast', 0.8, 1)),
    (('Equalize', 0.6, 3), ('Rotate', 0.9, 3)),
    (('ShearX', 0.9, 4), ('Solarize', 0.3, 3)),
    (('ShearY', 0.8, 8), ('Invert', 0.7, 4)),
    (('Equalize', 0.9, 5), ('TranslateY', 0.6, 6)),
    (('Invert', 0.9, 4), ('Equalize', 0.6, 7)),
    (('Contrast', 0.3, 3), ('Rotate', 0.8, 4)),
    (('Invert', 0.8, 5), ('TranslateY', 0.0, 2)),
    (('ShearY', 0.7, 6), ('Solarize', 0.4, 8)),
    (('Invert', 0.6, 4), ('Rotate', 0.8, 4)),
    (('ShearY', 0.3, 7), ('TranslateX', 0.9, 3)),
    (('ShearX', 0.1, 6), ('Invert', 0.6, 5)),
    (('Solarize', 0.7, 2), ('TranslateY', 0.6, 7)),
    (('ShearY', 0.8, 4), ('Invert', 0.8, 8)),
    (('ShearX', 0.7, 9), ('TranslateY', 0.8, 3)),
    (('ShearY', 0.8, 5), ('AutoContrast', 0.7, 3)),
    (('ShearX', 0.7, 2), ('Invert', 0.1, 5)),
)

# The official code's ImageNet policy (autoaugment/policies.py,
# `policy_imagenet`, the one `distort_image_with_autoaugment(image,
# 'imagenet')` applies): the TPU EfficientNet code's policy v0, not the
# table printed in the AutoAugment paper; it uses SolarizeAdd.
IMAGENET_POLICY = (
    (('Equalize', 0.8, 1), ('ShearY', 0.8, 4)),
    (('Color', 0.4, 9), ('Equalize', 0.6, 3)),
    (('Color', 0.4, 1), ('Rotate', 0.6, 8)),
    (('Solarize', 0.8, 3), ('Equalize', 0.4, 7)),
    (('Solarize', 0.4, 2), ('Solarize', 0.6, 2)),
    (('Color', 0.2, 0), ('Equalize', 0.8, 8)),
    (('Equalize', 0.4, 8), ('SolarizeAdd', 0.8, 3)),
    (('ShearX', 0.2, 9), ('Rotate', 0.6, 8)),
    (('Color', 0.6, 1), ('Equalize', 1.0, 2)),
    (('Invert', 0.4, 9), ('Rotate', 0.6, 0)),
    (('Equalize', 1.0, 9), ('ShearY', 0.6, 3)),
    (('Color', 0.4, 7), ('Equalize', 0.6, 0)),
    (('Posterize', 0.4, 6), ('AutoContrast', 0.4, 7)),
    (('Solarize', 0.6, 8), ('Color', 0.6, 9)),
    (('Solarize', 0.2, 4), ('Rotate', 0.8, 9)),
    (('Rotate', 1.0, 7), ('TranslateY', 0.8, 9)),
    (('ShearX', 0.0, 0), ('Solarize', 0.8, 4)),
    (('ShearY', 0.8, 0), ('Color', 0.6, 4)),
    (('Color', 1.0, 0), ('Rotate', 0.6, 2)),
    (('Equalize', 0.8, 4), ('Equalize', 0.0, 8)),
    (('Equalize', 1.0, 4), ('AutoContrast', 0.6, 2)),
    (('ShearY', 0.4, 7), ('SolarizeAdd', 0.6, 7)),
    (('Posterize', 0.8, 2), ('Solarize', 0.6, 10)),
    (('Solarize', 0.6, 8), ('Equalize', 0.6, 1)),
    (('Color', 0.8, 6), ('Rotate', 0.4, 5)),
)

POLICIES = {
    'cifar10': CIFAR10_POLICY,
    'svhn': SVHN_POLICY,
    'imagenet': IMAGENET_POLICY,
}

# The policy searched on each dataset; any other dataset of small images
# takes the CIFAR-10 policy, any dataset of large images the ImageNet one.
DATASET_POLICIES = {
    'cifar10': 'cifar10',
    'cifar100': 'cifar10',
    'svhn_cropped': 'svhn',
    'imagenet2012': 'imagenet',
}
LARGE_IMAGE_SIDE = 64


def policy_for_dataset(dataset: str, image_side: int | None = None) -> str:
  """The POLICIES key for `dataset` (config.dataset); `image_side` decides
  for datasets AutoAugment was not searched on (> 64 pixels: ImageNet)."""
  if dataset in DATASET_POLICIES:
    return DATASET_POLICIES[dataset]
  large = image_side is not None and image_side > LARGE_IMAGE_SIDE
  return 'imagenet' if large else 'cifar10'


# The RandAugment paper's 14 operations.
RANDAUGMENT_OPS = (
    'Identity',
    'AutoContrast',
    'Equalize',
    'Rotate',
    'Solarize',
    'Color',
    'Posterize',
    'Contrast',
    'Brightness',
    'Sharpness',
    'ShearX',
    'ShearY',
    'TranslateX',
    'TranslateY',
)
