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
    # Augmentation, normalisation, label noise, holdouts (data/).
    Mutation(
        row='Order (CIFAR)',
        path='data/augment.py',
        old='  images = per_image(policy)(images, policy_seed)\n  return crop(images, crop_seed) if crop else images',
        new='  images = crop(images, crop_seed) if crop else images\n  return per_image(policy)(images, policy_seed)',
        test='data/augment_test.py::test_the_policy_comes_before_flip_and_crop',
    ),
    Mutation(
        row='Crop',
        path='data/augment.py',
        old="mode='REFLECT'",
        new="mode='CONSTANT'",
        test='data/augment_test.py::test_flip_and_crop_is_a_reflection_padded_crop_per_image',
    ),
    Mutation(
        row='Cutout',
        path='data/cutout.py',
        old='  centre = (\n      tf.random.stateless_uniform([2], seed, 0, tf.int32.max, tf.int32)\n      % shape[1:3]\n  )\n  start = centre - size // 2\n  rows = tf.range(shape[1])\n  columns = tf.range(shape[2])\n  inside_rows = (rows >= start[0]) & (rows < start[0] + size)\n  inside_columns = (columns >= start[1]) & (columns < start[1] + size)\n  patch = inside_rows[:, None, None] & inside_columns[None, :, None]\n  return tf.where(patch[None], tf.cast(fill, images.dtype), images)',
        new='  centre = (\n      tf.random.stateless_uniform([shape[0], 2], seed, 0, tf.int32.max, tf.int32)\n      % shape[1:3]\n  )\n  start = centre - size // 2\n  rows = tf.range(shape[1])[None]\n  columns = tf.range(shape[2])[None]\n  inside_rows = (rows >= start[:, :1]) & (rows < start[:, :1] + size)\n  inside_columns = (columns >= start[:, 1:]) & (columns < start[:, 1:] + size)\n  patch = inside_rows[:, :, None, None] & inside_columns[:, None, :, None]\n  return tf.where(patch, tf.cast(fill, images.dtype), images)',
        test='data/cutout_test.py::test_batch_cutout_is_one_patch_for_the_whole_batch',
    ),
    Mutation(
        row='CIFAR AutoAugment policy',
        path='data/policies.py',
        old="    'cifar10': CIFAR10_POLICY,",
        new="    'cifar10': CIFAR10_POLICY[:25],",
        test='data/autoaugment_test.py::test_cifar_policy_is_the_official_release',
    ),
    Mutation(
        row='AutoAugment op constants',
        path='data/autoaugment.py',
        old='Hparams(translate_const=250.0, cutout_const=100.0)',
        new='Hparams(translate_const=100.0, cutout_const=40.0)',
        test='data/autoaugment_test.py::test_official_constants_blank_a_cifar_image_from_magnitude_two',
    ),
    Mutation(
        row='Contrast',
        path='data/autoaugment.py',
        old='  grey = tf.minimum(tf.cast(shape[0] * shape[1], tf.float32) / 256.0, 255.0)',
        new='  grey = tf.reduce_mean(tf.cast(tf.image.rgb_to_grayscale(image) if image.shape[-1] == 3 else image, tf.float32))',
        test='data/autoaugment_test.py::test_contrast_blends_with_the_official_grey',
    ),
    Mutation(
        row='Solarize, posterize',
        path='data/autoaugment.py',
        old='  threshold = tf.cast(level / MAX_LEVEL * 256.0, tf.int32)',
        new='  threshold = tf.cast(256.0 - level / MAX_LEVEL * 256.0, tf.int32)',
        test='data/autoaugment_test.py::test_solarize_inverts_at_or_above_the_official_threshold',
    ),
    Mutation(
        row='SVHN augmentation',
        path='configs/svhn.py',
        old="{'basic': 'basic', 'autoaugment_cutout': 'aa_only_cutout'}",
        new="{'basic': 'basic', 'autoaugment_cutout': 'autoaugment_cutout'}",
        test='configs/recipe_test.py::test_svhn_autoaugment_line_runs_the_policy_without_flip_or_crop',
    ),
    Mutation(
        row='Fashion-MNIST resolution',
        path='configs/fashion_mnist.py',
        old="  c.data.augment = k['augment']\n",
        new="  c.data.augment = k['augment']\n  c.data.image_size = 32\n",
        test='configs/recipe_test.py::test_fashion_mnist_stays_at_its_own_resolution',
    ),
    Mutation(
        row='CIFAR finetuning (C.2)',
        path='data/in_memory.py',
        old='  return tf.compat.v1.image.resize_bicubic(images, [size, size])',
        new='  return tf.compat.v1.image.resize_bilinear(images, [size, size])',
        test='data/in_memory_test.py::test_image_size_augments_at_32_then_resizes_the_whole_image',
    ),
    Mutation(
        row='Mixup',
        path='data/mixup.py',
        old='  lam, perm = mixup_params(key, images.shape[0], alpha)\n  return mix(lam, perm, images, labels)',
        new='  lam, perm = mixup_params(key, images.shape[0], alpha)\n  lam = jax.random.beta(jax.random.split(key)[0], alpha, alpha, (images.shape[0],))\n  w = lambda x: lam.reshape((-1,) + (1,) * (x.ndim - 1))\n  blend = lambda x: (w(x) * x + (1.0 - w(x)) * x[perm]).astype(x.dtype)\n  return blend(images), blend(labels)',
        test='data/mixup_test.py::test_matches_independent_numpy_mixing',
    ),
    Mutation(
        row='CIFAR-10/100, SVHN means and stds',
        path='data/catalog.py',
        old='_scaled(0.24703223, 0.24348513, 0.26158784)',
        new='_scaled(0.2023, 0.1994, 0.2010)',
        test='data/sources_test.py::test_statistics_are_the_official_codes',
    ),
    Mutation(
        row='Fashion-MNIST statistics',
        path='data/catalog.py',
        old='Statistics(10, _scaled(0.1307), _scaled(0.3081))',
        new='Statistics(10, _scaled(0.2860), _scaled(0.3530))',
        test='data/sources_test.py::test_fashion_mnist_stays_28x28_with_the_official_statistics',
    ),
    Mutation(
        row='Corruption rule',
        path='data/label_noise.py',
        old='    noisy[redrawn] = rng.integers(0, num_classes, size=int(redrawn.sum()))',
        new='    noisy[redrawn] = (noisy[redrawn] + rng.integers(1, num_classes, size=int(redrawn.sum()))) % num_classes',
        test='data/label_noise_test.py::test_uniform_mode_is_the_default_and_keeps_about_one_in_k',
    ),
    Mutation(
        row='Validation holdout, CIFAR and the rest',
        path='data/in_memory.py',
        old='  order = np.random.default_rng(0).permutation(num_examples)',
        new='  order = np.arange(num_examples)[::-1]',
        test='data/in_memory_test.py::test_validation_holdout_is_a_fixed_random_ten_percent',
    ),
    Mutation(
        row='Mixup weight and partners',
        path='data/mixup.py',
        old='  lam = jax.random.beta(lam_key, alpha, alpha)\n',
        new='  lam = jax.random.beta(lam_key, alpha, alpha)\n  lam = jnp.maximum(lam, 1.0 - lam)\n',
        test='data/mixup_test.py::test_lambda_follows_beta_moments',
    ),
    Mutation(
        row='RandAugment',
        path='data/autoaugment.py',
        old='Hparams(translate_const=100.0, cutout_const=40.0)',
        new='Hparams(translate_const=250.0, cutout_const=100.0)',
        test='data/autoaugment_test.py::test_randaugment_constants_are_smaller',
    ),
    Mutation(
        row='ImageNet pixels after the bicubic resize',
        path='data/imagenet_transforms.py',
        old='  return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)',
        new='  return resized',
        test='data/imagenet_transforms_test.py::test_the_bicubic_resize_is_rounded_to_uint8',
    ),
    Mutation(
        row='ImageNet training crop',
        path='data/imagenet_transforms.py',
        old='AREA_RANGE = (0.08, 1.0)',
        new='AREA_RANGE = (0.25, 1.0)',
        test=(
            'data/imagenet_transforms_test.py::'
            'test_train_crops_cover_area_and_aspect_ranges'
        ),
    ),
    # Models, BatchNorm and replicas, objective and optimizer, evaluation.
    Mutation(
        row='WRN-28-10',
        path='models/wrn.py',
        old='    return residual + _shortcut(x, self.channels, self.stride)',
        new="    return residual + (x if x.shape[-1] == self.channels else conv(self.channels, kernel_size=(1, 1), strides=(self.stride, self.stride), name='shortcut_conv')(x))",
        test='models/wrn_test.py::test_wrn28_10_has_the_official_parameter_count',
    ),
    Mutation(
        row='Shake-Shake 26 2x96d',
        path='models/shake_shake.py',
        old='  shape = (a.shape[0],) + (1,) * (a.ndim - 1)',
        new='  shape = (1,) * a.ndim',
        test='models/shake_shake_test.py::test_shake_shake_forward_is_a_per_example_convex_combination',
    ),
    Mutation(
        row='ImageNet ResNet block',
        path='models/resnet.py',
        old='        stride_in_1x1=False,',
        new='        stride_in_1x1=True,',
        test='models/resnet_test.py::test_the_sam_layout_is_the_official_codes',
    ),
    Mutation(
        row='EfficientNet B7 / L2',
        path='models/efficientnet.py',
        old='int(self.in_channels * SE_RATIO)',
        new='int(channels * SE_RATIO)',
        test='models/efficientnet_test.py::test_parameter_counts',
    ),
    Mutation(
        row='CIFAR head',
        path='models/layers.py',
        old='bound = 1.0 / jnp.sqrt(shape[1])',
        new='bound = 1.0 / jnp.sqrt(shape[0])',
        test='models/wrn_test.py::test_cifar_heads_draw_from_the_official_uniform',
    ),
    Mutation(
        row='CIFAR convs',
        path='models/layers.py',
        old="variance_scaling(2.0, 'fan_out', 'normal')",
        new="variance_scaling(2.0, 'fan_in', 'normal')",
        test='models/wrn_test.py::test_conv_kernels_are_he_normal_over_the_fan_out',
    ),
    Mutation(
        row='PyramidNet last BN scale',
        path='models/pyramidnet.py',
        old="y = bn(name='bn_4')(y)",
        new="y = bn(scale_init=nn.initializers.zeros, name='bn_4')(y)",
        test='models/wrn_test.py::test_pyramidnet_last_block_bn_starts_at_one',
    ),
    Mutation(
        row='ImageNet ResNet last BN of a block',
        path='models/resnet.py',
        old='        zero_init_last_bn=True,',
        new='        zero_init_last_bn=False,',
        test='models/resnet_test.py::test_zero_init_last_bn_scale',
    ),
    Mutation(
        row='Examples per replica',
        path='configs/cifar.py',
        old="  c.optim.replica_batch_size = 32  # The paper's 8 GPUs at batch 256.",
        new="  c.optim.replica_batch_size = 0  # The paper's 8 GPUs at batch 256.",
        test='configs/recipe_test.py::test_replica_batch_is_the_papers_per_accelerator_batch',
    ),
    Mutation(
        row='BN statistics',
        path='sam/methods.py',
        old='  return Gradient(g2, loss, outputs, extras=perturbed_pass(perturbed))',
        new='  return Gradient(g2, loss, outputs._replace(batch_stats=perturbed.batch_stats), extras=perturbed_pass(perturbed))',
        test='sam/run/step_test.py::test_batchnorm_statistics_come_from_the_unperturbed_pass',
    ),
    Mutation(
        row='SAM perturbation',
        path='sam/run/step.py',
        old='  sync, bn_sync = _identity, None',
        new='  sync, bn_sync = functools.partial(jax.lax.pmean, axis_name=AXIS), None',
        test='sam/run/step_test.py::test_each_device_perturbs_with_its_own_half_of_the_batch',
    ),
    Mutation(
        row='Running averages',
        path='sam/run/step.py',
        old='  batch_stats = jax.lax.pmean(gradient.outputs.batch_stats, axis_name=AXIS)',
        new='  batch_stats = gradient.outputs.batch_stats',
        test='sam/run/step_test.py::test_batchnorm_statistics_come_from_the_unperturbed_pass',
    ),
    Mutation(
        row='Hosts',
        path='data/in_memory.py',
        old='augment.SliceSeed(image_seed, columns.start, global_batch)',
        new='augment.SliceSeed(image_seed)',
        test='data/in_memory_test.py::test_hosts_take_disjoint_slices_of_each_global_batch',
    ),
    Mutation(
        row='BN settings, CIFAR models',
        path='models/layers.py',
        old='momentum: float = 0.9,',
        new='momentum: float = 0.99,',
        test='models/wrn_test.py::test_cifar_batch_norm_is_the_officials',
    ),
    Mutation(
        row='Loss',
        path='configs/base.py',
        old="'label_smoothing': 0.0,",
        new="'label_smoothing': 0.1,",
        test='sam/run/step_test.py::test_sgd_step_is_the_plain_averaged_gradient',
    ),
    Mutation(
        row='Weight decay',
        path='configs/base.py',
        old="'weight_decay_exclude_bn_bias': False,",
        new="'weight_decay_exclude_bn_bias': True,",
        test='sam/run/step_test.py::test_each_device_perturbs_with_its_own_half_of_the_batch',
    ),
    Mutation(
        row='SAM step',
        path='sam/perturbation.py',
        old='nonzero, rho * jax.lax.rsqrt(jnp.where(nonzero, squared_norm, 1.0)), 0.0',
        new='nonzero, rho * jnp.ones_like(squared_norm), 0.0',
        test='sam/methods_test.py::test_quadratic_closed_form',
    ),
    Mutation(
        row='Optimizer',
        path='configs/base.py',
        old="'nesterov': True,",
        new="'nesterov': False,",
        test='sam/optim_test.py::test_clipped_nesterov_sgd',
    ),
    Mutation(
        row='Gradient clipping',
        path='sam/run/step.py',
        old='      (gradient.grads, gradient.state, gradient.extras), axis_name=AXIS',
        new='      (optax.clip_by_global_norm(5.0).update(gradient.grads, optax.EmptyState())[0], gradient.state, gradient.extras), axis_name=AXIS',
        test='sam/run/step_test.py::test_the_update_clips_the_mean_gradient_not_each_devices',
    ),
    Mutation(
        row='Schedule',
        path='sam/optim.py',
        old='    return optax.cosine_decay_schedule(config.learning_rate, total_steps)',
        new='    return lambda step: optax.cosine_decay_schedule(config.learning_rate, total_steps)(step // steps_per_epoch * steps_per_epoch)',
        test='sam/optim_test.py::test_cosine_decay_per_step_over_the_whole_run',
    ),
    Mutation(
        row='Coverage',
        path='data/sharding.py',
        old='max(1, math.ceil(largest_share / host_batch))',
        new='max(1, largest_share // host_batch)',
        test='data/in_memory_test.py::test_eval_sees_every_example_exactly_once',
    ),
    Mutation(
        row='Top-5 error',
        path='sam/run/step.py',
        old="top5_error=losses.top_k_error(logits, batch['label'], 5),",
        new="top5_error=losses.top1_error(logits, batch['label']),",
        test='sam/run/step_test.py::test_eval_step_counts_top5_errors_and_ignores_padding',
    ),
    Mutation(
        row='Logged training loss/error',
        path='sam/methods.py',
        old='  return Gradient(g2, loss, outputs, extras=perturbed_pass(perturbed))',
        new='  return Gradient(g2, loss, outputs._replace(per_example=perturbed.per_example), extras=perturbed_pass(perturbed))',
        test='sam/run/step_test.py::test_sam_logs_the_loss_and_error_of_both_passes',
    ),
)
