"""The per-device train and eval steps, mapped over this host's devices with
`jax.pmap(..., axis_name='batch')`.

These are the only functions that communicate across devices; every
collective below names the 'batch' axis (the data-parallel devices) and says
why it is there. `make_train_step` binds, once, what the step needs from the
config: the loss, the method of `config.sam.method` and a few options.
"""

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from clu import metrics as clu_metrics

from data import mixup
from sam import groups
from sam import losses
from sam import methods
from sam.run import state as state_lib

AXIS = state_lib.AXIS
# fold_in data for the method's own random stream, apart from the devices'.
_METHOD_STREAM = 2**31 - 1
# fold_in data for the mixup stream.
_MIXUP_STREAM = 2**31 - 2


@dataclasses.dataclass(frozen=True)
class StepOptions:
  """What the train step takes from the config besides loss and method.

  Attributes:
    seed: the run seed; keys are functions of (seed, step, device, group).
    group_size: examples per perturbation group on a device (sam.m); 0 is
      the whole device batch.
    group_mode: 'unroll' or 'vmap' (sam.m_groups).
    accumulation_steps: micro-batches per device batch.
    sync_perturbation: one perturbation from the global batch's gradient.
    mixup_alpha: > 0 mixes each device batch (Beta(alpha, alpha)).
    num_classes: for mixup's one-hot targets.
    skip_nonfinite: keep the previous state on a non-finite step.
  """

  seed: int
  group_size: int
  group_mode: str
  accumulation_steps: int
  sync_perturbation: bool
  mixup_alpha: float
  num_classes: int
  skip_nonfinite: bool


@functools.lru_cache(maxsize=None)
def train_metrics(extra_names: tuple[str, ...] = ()):
  """The collection a train step returns: loss, error and gradient norm of
  the global batch, plus the method's own scalars."""
  return clu_metrics.Collection.create(
      train_loss=clu_metrics.Average.from_output('loss'),
      train_error=clu_metrics.Average.from_output('error'),
      grad_norm=clu_metrics.Average.from_output('grad_norm'),
      **{name: clu_metrics.Average.from_output(name) for name in extra_names})


EvalMetrics = clu_metrics.Collection.create(
    loss=clu_metrics.Average.from_output('loss'),
    error=clu_metrics.Average.from_output('error'))


def _fold(key: jax.Array, index, num_parts: int) -> jax.Array:
  """A key per part; the unsplit batch keeps the step's key."""
  return key if num_parts == 1 else jax.random.fold_in(key, index)


def _identity(tree):
  return tree


def _micro_batch_loss(loss_fn, batch_stats, key, num_micro, ascent, params,
                      micro_batch, index):
  return loss_fn(params, batch_stats, micro_batch,
                 _fold(key, index, num_micro), ascent)


def _objective(loss_fn, batch_stats, examples, key, num_micro, sync,
               method_key) -> methods.Objective:
  """The loss on `examples`, accumulated over `num_micro` micro-batches."""

  def grad(params, ascent=False):
    loss = functools.partial(_micro_batch_loss, loss_fn, batch_stats, key,
                             num_micro, ascent)
    return groups.accumulated_value_and_grad(loss, examples,
                                             num_micro)(params)

  return methods.Objective(grad, sync, method_key)


def _record_finiteness(old, new, finite, skip: bool):
  """Counts a non-finite step on device; with `skip`, keeps the old state
  (the step counter still advances, so the next step draws new keys)."""
  if skip:
    new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new,
                       old).replace(step=new.step)
  bad = jnp.logical_not(finite)
  first = jnp.where(bad & (old.first_nonfinite_step == 0), new.step,
                    old.first_nonfinite_step)
  return new.replace(nonfinite_steps=old.nonfinite_steps + bad,
                     first_nonfinite_step=first)


def train_step(state, batch, *, loss_fn, method: methods.Method,
               options: StepOptions):
  """One update of Algorithm 1 on this device's share of the global batch.

  The device batch is cut into groups of options.group_size examples with a
  perturbation each (m-sharpness) and into accumulation micro-batches
  (sam/groups.py); the method computes each group's direction.

  Args:
    state: this device's replica of the TrainState.
    batch: {'image': [b, H, W, C], 'label': [b]} for this device.
    loss_fn: from `losses.make_loss_fn`.
    method: the SAM-family member (sam/methods.py).
    options: the rest of what the step needs.

  Returns:
    (new state, train metrics gathered over devices).
  """
  step_key = jax.random.fold_in(jax.random.key(options.seed), state.step)
  device = jax.lax.axis_index(AXIS)
  # One random key per (step, device); both SAM passes reuse it.
  dropout_key = jax.random.fold_in(step_key, device)
  method_key = jax.random.fold_in(step_key, _METHOD_STREAM)
  sync = _identity
  if options.sync_perturbation:
    # batch: one perturbation from the gradient of the global batch.
    sync = functools.partial(jax.lax.pmean, axis_name=AXIS)
  else:
    method_key = jax.random.fold_in(method_key, device)
  labels = batch['label']
  if options.mixup_alpha:
    # Both passes see the same mixed batch (the key is the step's).
    batch = dict(zip(('image', 'label'), mixup.mixup(
        jax.random.fold_in(dropout_key, _MIXUP_STREAM), batch['image'],
        jax.nn.one_hot(labels, options.num_classes), options.mixup_alpha)))

  def group_gradient(examples, index, num_groups, num_micro):
    objective = _objective(
        loss_fn, state.batch_stats, examples,
        _fold(dropout_key, index, num_groups), num_micro,
        sync if num_groups == 1 else _identity,
        _fold(method_key, index, num_groups))
    return method.gradient(objective, state.params, state.method_state)

  gradient = groups.grouped_gradient(
      group_gradient, batch, options.group_size or labels.shape[0],
      options.accumulation_steps, options.group_mode)
  # batch: the update is the mean of every device's direction; the method's
  # state and extras are averaged with it, so replicas stay identical.
  grads, method_state, extras = jax.lax.pmean(
      (gradient.grads, gradient.state, gradient.extras), axis_name=AXIS)
  # batch: keep the replicas' running statistics identical.
  batch_stats = jax.lax.pmean(gradient.aux[0], axis_name=AXIS)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats,
                                    method_state=method_state)
  logits, scalars = gradient.aux[1], method.metrics(grads, extras)
  grad_norm = optax.global_norm(grads)
  # batch: metrics over the global batch (all_gather inside clu).
  step_metrics = train_metrics(tuple(sorted(scalars))).gather_from_model_output(
      axis_name=AXIS, loss=losses.cross_entropy(logits, labels),
      error=losses.top1_error(logits, labels), grad_norm=grad_norm, **scalars)
  # The same decision on every device: both values are global already.
  finite = jnp.isfinite(grad_norm + jnp.sum(step_metrics.train_loss.total))
  return (_record_finiteness(state, new_state, finite,
                             options.skip_nonfinite), step_metrics)


def eval_step(state, batch, *, model: nn.Module):
  """Masked loss and error on this device's share of an eval batch.

  Args:
    state: this device's replica of the TrainState.
    batch: {'image', 'label', 'mask'} for this device; mask 0 is padding.

  Returns:
    EvalMetrics gathered over devices; padding does not count.
  """
  logits = model.apply({'params': state.params,
                        'batch_stats': state.batch_stats},
                       batch['image'], train=False)
  # batch: metrics over the global eval batch (all_gather inside clu).
  return EvalMetrics.gather_from_model_output(
      axis_name=AXIS,
      loss=losses.cross_entropy(logits, batch['label']),
      error=losses.top1_error(logits, batch['label']),
      mask=batch['mask'])


def step_options(config: ml_collections.ConfigDict,
                 num_classes: int) -> StepOptions:
  """The StepOptions of a run config."""
  # m-sharpness groups are groups of one perturbation: SGD has none.
  perturbs = config.sam.method != 'sgd'
  return StepOptions(
      seed=config.seed, group_size=config.sam.m if perturbs else 0,
      group_mode=config.sam.m_groups,
      accumulation_steps=config.optim.accumulation_steps,
      sync_perturbation=config.sam.sync_perturbation and perturbs,
      mixup_alpha=config.data.mixup_alpha, num_classes=num_classes,
      skip_nonfinite=config.optim.skip_nonfinite_steps)


def make_train_step(config: ml_collections.ConfigDict, model: nn.Module,
                    num_classes: int) -> Callable[..., Any]:
  """The train step of a run, with everything it needs from config bound.

  Args:
    config: the run config.
    model: the linen module.
    num_classes: the dataset's classes.

  Returns:
    (state, batch) -> (state, metrics), to be pmapped over AXIS.
  """
  loss_fn = losses.make_loss_fn(
      model, weight_decay=config.optim.weight_decay,
      exclude_bn_bias=config.optim.weight_decay_exclude_bn_bias,
      label_smoothing=config.optim.label_smoothing,
      freeze_batch_stats=config.model.freeze_batch_stats)
  return functools.partial(train_step, loss_fn=loss_fn,
                           method=methods.create(config.sam),
                           options=step_options(config, num_classes))


def pmap_steps(config: ml_collections.ConfigDict, model: nn.Module,
               num_classes: int, devices=None):
  """(pmapped train step donating its state, pmapped eval step)."""
  train = jax.pmap(make_train_step(config, model, num_classes),
                   axis_name=AXIS, devices=devices, donate_argnums=(0,))
  evaluate = jax.pmap(functools.partial(eval_step, model=model),
                      axis_name=AXIS, devices=devices)
  return train, evaluate
