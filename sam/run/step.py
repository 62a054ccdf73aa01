"""The per-device train and eval steps, mapped over this host's devices with
`jax.pmap(..., axis_name='batch')`.

These are the only functions that communicate across devices; every
collective below names the 'batch' axis (the data-parallel devices) and says
why it is there. `make_train_step` binds, once, what the step needs from the
config: the loss, the method that `methods.create` built from config.sam, and
a few options.
"""

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

from clu import metrics as clu_metrics
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from data import mixup
from sam import groups
from sam import interface
from sam import losses
from sam import methods
from sam.run import pair_groups
from sam.run import replicas
from sam.run import state as state_lib

AXIS = state_lib.AXIS
# fold_in data for the method's own random stream, apart from the devices'.
_METHOD_STREAM = 2**31 - 1
# fold_in data for the mixup stream.
_MIXUP_STREAM = 2**31 - 2
# fold_in data for the Bernoulli gates of the passes at w (ascent=False) and
# of the ascent passes, when each pass draws its own (fresh_gates_each_pass).
_GATE_STREAMS = (2**31 - 3, 2**31 - 4)


@dataclasses.dataclass(frozen=True)
class StepOptions:
  """What the train step takes from the config besides loss and method.

  Attributes:
    seed: the run seed; keys are functions of (seed, step, replica).
    layout: the groups of a device batch (sam/run/replicas.py).
    group_mode: 'unroll' or 'vmap' (the method's m_groups).
    accumulation_steps: micro-batches per device batch.
    sync_perturbation: one perturbation from the global batch's gradient
      (the method's).
    mixup_alpha: > 0 mixes the batch (Beta(alpha, alpha), one weight).
    num_classes: for mixup's one-hot targets.
    skip_nonfinite: keep the previous state on a non-finite step.
    fresh_gates_each_pass: each pass draws its own Bernoulli gates (models/).
  """

  seed: int
  layout: replicas.Layout
  group_mode: str
  accumulation_steps: int
  sync_perturbation: bool
  mixup_alpha: float
  num_classes: int
  skip_nonfinite: bool
  fresh_gates_each_pass: bool


def _metric_outputs(per_example, grads, scalars) -> dict[str, jax.Array]:
  """Per-example loss and error of the pass at w (against the mixed targets
  with mixup), the update's norm, and the method's own scalars."""
  return {
      'loss': per_example['loss'],
      'error': per_example['error'],
      'grad_norm': optax.global_norm(grads),
      **scalars,
  }


@functools.lru_cache(maxsize=None)
def _train_metrics(extra_names: tuple[str, ...]):
  """The collection a train step returns: loss, error and gradient norm of
  the global batch, plus the method's scalars (sorted names: one class for
  one set of names)."""
  return clu_metrics.Collection.create(
      train_loss=clu_metrics.Average.from_output('loss'),
      train_error=clu_metrics.Average.from_output('error'),
      grad_norm=clu_metrics.Average.from_output('grad_norm'),
      **{name: clu_metrics.Average.from_output(name) for name in extra_names},
  )


EvalMetrics = clu_metrics.Collection.create(
    loss=clu_metrics.Average.from_output('loss'),
    error=clu_metrics.Average.from_output('error'),
    top5_error=clu_metrics.Average.from_output('top5_error'),
)


def _fold(key: jax.Array, index, num_parts: int) -> jax.Array:
  """A key per part; the unsplit batch keeps the step's key."""
  return key if num_parts == 1 else jax.random.fold_in(key, index)


def _identity(tree):
  return tree


def _replica(options: StepOptions, index=0):
  """The global index of this device's group `index`: the same on 1 or 8
  devices for the same examples."""
  layout = options.layout
  device = jax.lax.axis_index(AXIS)
  return device // layout.devices_per_group * layout.groups_per_device + index


def _group_keys(step_key, options: StepOptions, index):
  """(regulariser key, method key) of a group: every pass of the step
  starts from the regulariser key (the gates may fold in the pass, `loss` in
  group_objective); the method's own draws are shared by a replica's
  devices, or by the whole batch with one perturbation."""
  replica = _replica(options, index)
  dropout_key = jax.random.fold_in(step_key, replica)
  if options.layout.devices_per_group > 1:
    # A replica spread over devices: each device's examples draw their own.
    dropout_key = jax.random.fold_in(dropout_key, jax.lax.axis_index(AXIS))
  method_key = jax.random.fold_in(step_key, _METHOD_STREAM)
  if not options.sync_perturbation:
    method_key = jax.random.fold_in(method_key, replica)
  return dropout_key, method_key


class StepInputs(NamedTuple):
  """What every group's objective shares within one step.

  Attributes:
    loss_fn: the training loss (`losses.training_loss`).
    batch_stats: BatchNorm's running statistics at the step's start: both
      SAM passes start from them.
    step_key: the step's random key.
    step: the optimizer steps taken before this one.
    sync: the ascent directions' mean over the devices that share a
      perturbation (the identity when none do).
    bn_sync: BatchNorm statistics over the devices of a replica that spans
      several, or None.
    options: the StepOptions.
    descend: grads -> where the optimizer's step from the state's weights
      would go with them (`interface.Objective.descend`).
    second_pass: the host's choice for this program
      (`interface.Objective.second_pass`), or None.
  """

  loss_fn: losses.LossFn
  batch_stats: Any
  step_key: jax.Array
  step: jax.Array
  sync: Callable[[Any], Any]
  bn_sync: losses.BatchNormSync | None
  options: StepOptions
  descend: Callable[[Any], Any]
  second_pass: bool | None


def group_objective(
    group: groups.Group, inputs: StepInputs
) -> interface.Objective:
  """The Objective of one group: its own keys, and the loss accumulated over
  its micro-batches; only a lone group shares its ascent (`inputs.sync`).

  Args:
    group: the group's examples and place.
    inputs: what the step's groups share.

  Returns:
    The Objective the method queries.
  """
  dropout_key, method_key = _group_keys(
      inputs.step_key, inputs.options, group.index
  )

  def loss(params, examples, index, ascent=False, key=None):
    if key is None:  # The group's own (grad_pair passes its partner's).
      key = _fold(dropout_key, index, group.micro_batches)
    gate = None
    if inputs.options.fresh_gates_each_pass:
      gate = jax.random.fold_in(key, _GATE_STREAMS[int(ascent)])
    stats, bn_sync = inputs.batch_stats, inputs.bn_sync
    return inputs.loss_fn(params, stats, examples, key, ascent, bn_sync, gate)

  def grad(params, ascent=False):
    return groups.accumulated_value_and_grad(
        lambda p, examples, index: loss(p, examples, index, ascent),
        group.examples,
        group.micro_batches,
    )(params)

  losses_at = subset = None
  if group.micro_batches == 1:

    def losses_at(params):
      return loss(params, group.examples, 0)[1].per_example['loss']

    def subset(indices):
      chosen = jax.tree.map(lambda x: x[indices], group.examples)
      return group_objective(group._replace(examples=chosen), inputs)

  return interface.Objective(
      grad,
      inputs.sync if group.count == 1 else _identity,
      method_key,
      inputs.step,
      losses_at,
      subset,
      inputs.descend,
      second_pass=inputs.second_pass,
      # Two passes on two device groups where the layout allows (SAMPa).
      grad_pair=pair_groups.grad_pair(inputs.options, group, loss, dropout_key),
  )


def _record_finiteness(old, new, step_metrics, skip: bool):
  """Decides on device whether the step was finite, and counts it if not.

  The decision is the same on every device: the metrics are global already.
  A non-finite step's metrics are zeroed (it adds nothing to the logged
  averages); with `skip` the old state is kept (the step counter still
  advances, so the next step draws new keys).

  Returns:
    (new state, metrics).
  """
  finite = jnp.isfinite(
      step_metrics.grad_norm.total + jnp.sum(step_metrics.train_loss.total)
  )
  step_metrics = jax.tree.map(
      lambda x: jnp.where(finite, x, jnp.zeros_like(x)), step_metrics
  )
  if skip:
    new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new = new.replace(step=old.step + 1)
  bad = jnp.logical_not(finite)
  first = jnp.where(
      bad & (old.first_nonfinite_step == 0), new.step, old.first_nonfinite_step
  )
  new = new.replace(
      nonfinite_steps=old.nonfinite_steps + bad, first_nonfinite_step=first
  )
  return new, step_metrics


def _mixed(batch, step_key, options: StepOptions):
  """The batch with mixup applied, if it is on: one weight for the whole
  global batch (as the official code), partners drawn within each group."""
  if not options.mixup_alpha:
    return batch
  key = jax.random.fold_in(step_key, _MIXUP_STREAM)
  lam = jax.random.beta(key, options.mixup_alpha, options.mixup_alpha)
  size = min(options.layout.group_size, batch['label'].shape[0])
  count = batch['label'].shape[0] // size
  keys = [jax.random.fold_in(key, _replica(options, i)) for i in range(count)]
  partners = jnp.concatenate(
      [i * size + jax.random.permutation(k, size) for i, k in enumerate(keys)]
  )
  one_hot = jax.nn.one_hot(batch['label'], options.num_classes)
  images, targets = mixup.mix(lam, partners, batch['image'], one_hot)
  return {'image': images, 'label': targets}


def train_step(
    state,
    batch,
    *,
    loss_fn,
    method: interface.Method,
    options: StepOptions,
    second_pass: bool | None = None,
):
  """One update of Algorithm 1 on this device's share of the global batch.

  Args:
    state: this device's replica of the TrainState.
    batch: {'image': [b, H, W, C], 'label': [b]} for this device.
    loss_fn: from `losses.training_loss`.
    method: the SAM-family member (sam/methods.py), run per group of
      options.layout.group_size examples over the micro-batches.
    options: the rest of what the step needs.
    second_pass: the host's choice of SAM's second pass for a method with a
      `Method.schedule` (one program per value), or None.

  Returns:
    (new state, train metrics gathered over devices).
  """
  step_key = jax.random.fold_in(jax.random.key(options.seed), state.step)
  layout = options.layout
  sync, bn_sync = _identity, None
  if options.sync_perturbation:
    # batch: one perturbation from the gradient of the global batch.
    sync = functools.partial(jax.lax.pmean, axis_name=AXIS)
  elif layout.device_groups:
    # batch: a replica spanning devices shares its perturbation ...
    sync = functools.partial(
        jax.lax.pmean, axis_name=AXIS, axis_index_groups=layout.device_groups
    )
  if layout.device_groups:
    # batch: ... and its BatchNorm statistics, over all of its examples.
    bn_sync = losses.BatchNormSync(AXIS, layout.device_groups)

  def descend(grads):
    # The optimizer's step from this state, not taken (SAMPa's y).
    updates, _ = state.tx.update(grads, state.opt_state, state.params)
    return optax.apply_updates(state.params, updates)

  inputs = StepInputs(
      loss_fn,
      state.batch_stats,
      step_key,
      state.step,
      sync,
      bn_sync,
      options,
      descend,
      second_pass,
  )

  def method_gradient(group: groups.Group) -> interface.Gradient:
    # g1 -> eps -> g2 on the group's examples (methods.sam_gradient for SAM).
    objective = group_objective(group, inputs)
    return method.gradient(objective, state.params, state.method_state)

  # Each replica group (a replica, or m examples of one) runs the method on
  # its own examples; both passes see the same mixed batch.
  mixed = _mixed(batch, step_key, options)
  size = min(layout.group_size, batch['label'].shape[0])
  gradient = groups.grouped_gradient(
      method_gradient,
      mixed,
      size,
      options.accumulation_steps,
      options.group_mode,
  )
  # batch: the update is the mean of every device's direction; the method's
  # state and extras are averaged with it, so replicas stay identical.
  grads, method_state, extras = jax.lax.pmean(
      (gradient.grads, gradient.state, gradient.extras), axis_name=AXIS
  )
  # A rule on the applied gradient (LookSAM's), the same on every replica.
  grads, method_state = method.combine(grads, method_state, extras, state.step)
  # batch: the running statistics of the unperturbed pass, identical on
  # every replica.
  batch_stats = jax.lax.pmean(gradient.outputs.batch_stats, axis_name=AXIS)
  new_state = state.apply_gradients(
      grads=grads, batch_stats=batch_stats, method_state=method_state
  )
  scalars = method.metrics(grads, extras)
  outputs = _metric_outputs(gradient.outputs.per_example, grads, scalars)
  # batch: metrics over the global batch (all_gather inside clu).
  step_metrics = _train_metrics(
      tuple(sorted(scalars))
  ).gather_from_model_output(axis_name=AXIS, **outputs)
  return _record_finiteness(
      state, new_state, step_metrics, options.skip_nonfinite
  )


def eval_step(state, batch, *, model: nn.Module):
  """Masked loss, error and top-5 error on this device's share of an eval
  batch.

  Args:
    state: this device's replica of the TrainState.
    batch: {'image', 'label', 'mask'} for this device; mask 0 is padding.

  Returns:
    EvalMetrics gathered over devices; padding does not count.
  """
  logits = model.apply(
      {'params': state.params, 'batch_stats': state.batch_stats},
      batch['image'],
      train=False,
  )
  # batch: metrics over the global eval batch (all_gather inside clu).
  return EvalMetrics.gather_from_model_output(
      axis_name=AXIS,
      loss=losses.cross_entropy(logits, batch['label']),
      error=losses.top1_error(logits, batch['label']),
      top5_error=losses.top_k_error(logits, batch['label'], 5),
      mask=batch['mask'],
  )


def step_options(
    config: ml_collections.ConfigDict,
    sam: methods.Configured,
    num_classes: int,
    num_devices: int,
) -> StepOptions:
  """The StepOptions of a run config and its method on `num_devices`
  devices."""
  return StepOptions(
      seed=config.seed,
      layout=replicas.layout(config.optim, sam.m, num_devices),
      group_mode=sam.m_groups,
      accumulation_steps=config.optim.accumulation_steps,
      sync_perturbation=sam.sync_perturbation,
      mixup_alpha=config.data.mixup_alpha,
      num_classes=num_classes,
      skip_nonfinite=config.optim.skip_nonfinite_steps,
      fresh_gates_each_pass=config.model.fresh_gates_each_pass,
  )


def make_train_step(
    config: ml_collections.ConfigDict,
    model: nn.Module,
    num_classes: int,
    num_devices: int,
    sam: methods.Configured,
    second_pass: bool | None = None,
) -> Callable[..., Any]:
  """The train step of a run, with everything it needs from config bound.

  Args:
    config: the run config.
    model: the linen module.
    num_classes: the dataset's classes.
    num_devices: the devices the step is mapped over (all hosts).
    sam: the SAM-family member, from `methods.create(config.sam, ...)`.
    second_pass: the host's choice of SAM's second pass, for a method with
      a `Method.schedule`; None lets the method decide on device.

  Returns:
    (state, batch) -> (state, metrics), to be pmapped over AXIS.
  """
  loss_fn = losses.training_loss(
      model, config, freeze_batch_stats=config.model.freeze_batch_stats
  )
  return functools.partial(
      train_step,
      loss_fn=loss_fn,
      method=sam.method,
      options=step_options(config, sam, num_classes, num_devices),
      second_pass=second_pass,
  )
