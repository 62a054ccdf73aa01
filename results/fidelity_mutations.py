"""One mutation per row of results/FIDELITY.md: the row's detail switched
to the other choice, as an exact text replacement in one source file.

results/fidelity_test.py applies each to a copy of the repository and
requires the named test (one the row names) to fail there. A mutation is
the departure the row's "was:" describes where it has one, otherwise the
nearest alternative a reimplementation could plausibly have chosen.
"""

from typing import NamedTuple


class Mutation(NamedTuple):
  """The other choice for one row.

  Attributes:
    row: the row's `detail` cell, exactly.
    path: the source file changed (never a test).
    old: text that occurs exactly once in that file.
    new: what replaces it.
    test: the pytest node id that must fail, one the row names.
  """

  row: str
  path: str
  old: str
  new: str
  test: str


MUTATIONS = (
    # Architecture.
    Mutation(
        row='PyramidNet-272, ShakeDrop',
        path='models/pyramidnet.py',
        old='keep_probability=keep_probability(index, total_blocks)',
        new='keep_probability=keep_probability(index - 1, total_blocks)',
        test=(
            'models/pyramidnet_test.py::'
            'test_each_block_draws_its_gate_at_its_own_keep_probability'
        ),
    ),
    Mutation(
        row='ResNet stride-2 3x3 padding',
        path='models/resnet.py',
        old="padding='SAME', name='conv_2'",
        new="padding=[(1, 1), (1, 1)], name='conv_2'",
        test='models/resnet_test.py::test_the_strided_3x3_conv_pads_same',
    ),
    Mutation(
        row='ImageNet ResNet stem',
        path='models/resnet.py',
        old='        stem_relu=False,\n',
        new='        stem_relu=True,\n',
        test='models/resnet_test.py::test_the_sam_stem_has_no_relu',
    ),
    # Randomness.
    Mutation(
        row='Random gates in the two SAM passes',
        path='sam/run/step.py',
        old='_GATE_STREAMS[int(ascent)]',
        new='_GATE_STREAMS[0]',
        test=(
            'sam/run/step_test.py::'
            'test_sam_passes_redraw_the_gates_but_share_the_shake_coefficients'
        ),
    ),
    # Initialisation.
    Mutation(
        row='Finetuning start',
        path='models/tf_efficientnet_convert.py',
        old='tensors: dict[str, np.ndarray], use_ema: bool = True',
        new='tensors: dict[str, np.ndarray], use_ema: bool = False',
        test=(
            'models/tf_efficientnet_convert_test.py::'
            'test_moving_averages_are_preferred_and_slots_skipped'
        ),
    ),
    Mutation(
        row='Documented finetuning checkpoint',
        path='configs/finetune.py',
        old='python -m models.tf_efficientnet_convert --model=efficientnet_b7',
        new=(
            'python -m models.keras_convert --model=efficientnet_b7'
            ' --weights=imagenet'
        ),
        test=(
            'models/tf_efficientnet_convert_test.py::'
            'test_the_b7_randaug_release_converts_and_loads_as_documented'
        ),
    ),
    Mutation(
        row='Weight init across seeds',
        path='sam/run/experiment.py',
        old='      config.seed,\n      setup.sam.method.init,',
        new='      0,\n      setup.sam.method.init,',
        test=(
            'sam/run/experiment_test.py::'
            'test_each_seed_starts_from_its_own_initialisation'
        ),
    ),
    # BatchNorm and replicas.
    Mutation(
        row='Finetuning',
        path='models/batch_norm.py',
        old="_overriding({'use_running_average': True})",
        new="_overriding({'use_running_average': False, 'momentum': 1.0})",
        test=(
            'models/batch_norm_test.py::'
            'test_frozen_normalises_with_the_running_averages_in_train_mode'
        ),
    ),
    # Augmentation and policies.
    Mutation(
        row='ImageNet AutoAugment policy',
        path='data/policies.py',
        old="    (('Rotate', 1.0, 7), ('TranslateY', 0.8, 9)),",
        new="    (('Rotate', 0.8, 8), ('Color', 1.0, 2)),",
        test=(
            'data/autoaugment_test.py::'
            'test_imagenet_policy_is_the_official_release'
        ),
    ),
    Mutation(
        row='ImageNet evaluation crop',
        path='data/imagenet_transforms.py',
        old='  return size / (size + CROP_PADDING)',
        new='  return 0.875',
        test=(
            'data/imagenet_transforms_test.py::'
            'test_eval_crop_is_the_official_padded_fraction'
        ),
    ),
    Mutation(
        row='Finetuning preprocessing, ImageNet',
        path='configs/finetune.py',
        old="c.data.augment = 'basic' if dataset == 'imagenet2012' else 'none'",
        new="c.data.augment = 'none'",
        test=(
            'configs/finetune_test.py::'
            'test_imagenet_trains_on_the_official_crop_and_flip'
        ),
    ),
    # Objective, optimizer and schedule.
    Mutation(
        row='Finetuning clipping and label smoothing',
        path='configs/finetune.py',
        old='GRAD_CLIP_NORM = 1.0\nLABEL_SMOOTHING = 0.1',
        new='GRAD_CLIP_NORM = 5.0\nLABEL_SMOOTHING = 0.0',
        test=(
            'configs/finetune_test.py::'
            'test_clipping_and_label_smoothing_of_the_official_readme'
        ),
    ),
    Mutation(
        row='Epochs of Shake-Shake and PyramidNet',
        path='configs/cifar.py',
        old="    'shake_shake_26_2x96d': 1800,\n",
        new="    'shake_shake_26_2x96d': 200,\n",
        test='configs/cifar_test.py::test_each_model_defaults_to_its_table_1_epochs',
    ),
    # Validation holdouts.
    Mutation(
        row='SVHN holdout',
        path='data/sources.py',
        old='      holdout=(SVHN_TRAIN_PART, SVHN_VALIDATION),\n',
        new='      holdout=None,\n',
        test=(
            'data/in_memory_test.py::'
            'test_svhn_holds_out_the_last_7328_of_train_as_the_official'
        ),
    ),
)
