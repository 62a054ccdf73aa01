"""One mutation per row of results/FIDELITY.md: the row's detail switched
to the other choice, as an exact text replacement in one source file. This
file holds the rows about models, randomness, initialisation, BatchNorm,
the objective and evaluation; results/fidelity_mutations_data.py the rows
about the data pipeline.

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
    Mutation(
        row='PyramidNet-272, ShakeDrop',
        path='models/pyramidnet.py',
        old='keep_probability=keep_probability(index, total_blocks)',
        new='keep_probability=keep_probability(index - 1, total_blocks)',
        test='models/pyramidnet_test.py::test_each_block_draws_its_gate_at_its_own_keep_probability',
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
    Mutation(
        row='Random gates in the two SAM passes',
        path='sam/run/step.py',
        old='_GATE_STREAMS[int(ascent)]',
        new='_GATE_STREAMS[0]',
        test='sam/run/step_test.py::test_sam_passes_redraw_the_gates_but_share_the_shake_coefficients',
    ),
    Mutation(
        row='Finetuning start',
        path='models/tf_efficientnet_convert.py',
        old='tensors: dict[str, np.ndarray], use_ema: bool = True',
        new='tensors: dict[str, np.ndarray], use_ema: bool = False',
        test='models/tf_efficientnet_convert_test.py::test_moving_averages_are_preferred_and_slots_skipped',
    ),
    Mutation(
        row='Documented finetuning checkpoint',
        path='configs/finetune.py',
        old='python -m models.tf_efficientnet_convert --model=efficientnet_b7',
        new='python -m models.keras_convert --model=efficientnet_b7 --weights=imagenet',
        test='models/tf_efficientnet_convert_test.py::test_the_b7_randaug_release_converts_and_loads_as_documented',
    ),
    Mutation(
        row='Weight init across seeds',
        path='sam/run/experiment.py',
        old='      config.seed,\n      setup.sam.method.init,',
        new='      0,\n      setup.sam.method.init,',
        test='sam/run/experiment_test.py::test_each_seed_starts_from_its_own_initialisation',
    ),
    Mutation(
        row='Finetuning',
        path='models/batch_norm.py',
        old="_overriding({'use_running_average': True})",
        new="_overriding({'use_running_average': False, 'momentum': 1.0})",
        test='models/batch_norm_test.py::test_frozen_normalises_with_the_running_averages_in_train_mode',
    ),
    Mutation(
        row='Finetuning preprocessing, ImageNet',
        path='configs/finetune.py',
        old="c.data.augment = 'basic' if dataset == 'imagenet2012' else 'none'",
        new="c.data.augment = 'none'",
        test='configs/finetune_test.py::test_imagenet_trains_on_the_official_crop_and_flip',
    ),
    Mutation(
        row='Finetuning clipping and label smoothing',
        path='configs/finetune.py',
        old='GRAD_CLIP_NORM = 1.0\nLABEL_SMOOTHING = 0.1',
        new='GRAD_CLIP_NORM = 5.0\nLABEL_SMOOTHING = 0.0',
        test='configs/finetune_test.py::test_clipping_and_label_smoothing_of_the_official_readme',
    ),
    Mutation(
        row='Epochs of Shake-Shake and PyramidNet',
        path='configs/cifar.py',
        old="    'shake_shake_26_2x96d': 1800,\n",
        new="    'shake_shake_26_2x96d': 200,\n",
        test='configs/cifar_test.py::test_each_model_defaults_to_its_table_1_epochs',
    ),
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
