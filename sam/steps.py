"""The per-device train and eval steps, to be mapped over devices with
`jax.pmap(..., axis_name='batch')`.

These are the only functions that communicate across devices; every
collective below names the 'batch' axis (the data-parallel devices) and says
why it is there.
"""

import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from clu import metrics
from flax.training import train_state

from data import mixup
from models import pretrained
from sam import losses
from sam import microbatch
from sam import sam as sam_lib


class TrainState(train_state.TrainState):
  """Parameters, optimizer state and BatchNorm running statistics."""
  batch_stats: Any


def create_train_state(model: nn.Module, image_shape, tx, seed: int):
  """Initialises the model on a dummy batch.

  Args:
    model: the linen module.
    image_shape: (H, W, C) of one example.
    tx: the optax optimizer.
    seed: initialisation seed.

  Returns:
    A TrainState at step 0.
  """
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(seed), jnp.zeros((1,) + tuple(image_shape)))
  state = TrainState.create(apply_fn=model.apply, params=variables['params'],
                            batch_stats=variables.get('batch_stats', {}),
                            tx=tx)
  # A strongly typed step counter: flax's weakly typed 0 would make the
  # second call of the jitted step compile it again.
  return state.replace(step=jnp.zeros((), jnp.int32))


def make_loss_fn(model: nn.Module, config: ml_collections.ConfigDict,
                 batch_stats, batch, dropout_key, ascent: bool):
  """params -> (loss, (new_batch_stats, logits)) on one device's batch.

  The loss is the cross-entropy plus 0.5 * wd * ||w||^2. BatchNorm runs in
  training mode from `batch_stats`; the same `dropout_key` gives the same
  random network on every call.
  """

  def loss_fn(params):
    # Finetuning (paper C.2) normalises with the frozen running statistics.
    with pretrained.frozen_batch_stats(config.freeze_batch_stats):
      logits, new_state = model.apply(
          {'params': params, 'batch_stats': batch_stats}, batch['image'],
          train=True, ascent=ascent, rngs={'dropout': dropout_key},
          mutable=['batch_stats'])
    loss = jnp.mean(losses.cross_entropy(logits, batch['label'],
                                         config.label_smoothing))
    loss += losses.l2_penalty(params, config.weight_decay,
                              config.weight_decay_exclude_bn_bias)
    return loss, (new_state.get('batch_stats', {}), logits)

  return loss_fn


# fold_in data for the random-perturbation stream, apart from the devices'.
_NOISE_STREAM = 2**31 - 1
# fold_in data for the mixup stream.
_MIXUP_STREAM = 2**31 - 2


@flax.struct.dataclass
class SecondOrderTrainMetrics(metrics.Collection):
  """TrainMetrics plus the cosine of the second- and first-order updates."""
  train_loss: metrics.Average.from_output('loss')
  train_error: metrics.Average.from_output('error')
  grad_norm: metrics.Average.from_output('grad_norm')
  second_order_cosine: metrics.Average.from_output('second_order_cosine')


def _fold(key: jax.Array, index, num_parts: int) -> jax.Array:
  """A key per part; the unsplit batch keeps the step's key."""
  return key if num_parts == 1 else jax.random.fold_in(key, index)


def sam_variant_gradient(config: ml_collections.ConfigDict, grad_fn,
                         ascent_grad_fn, params, *, first_grad_transform,
                         noise_key):
  """The SAM-family gradient that config.sam.* selects.

  Returns:
    ((loss, aux), grads, first_order_grads): first_order_grads is the
    first-order SAM gradient with `second_order`, else None.
  """
  s = config.sam
  if s.perturbation == 'random':
    out, grads, _ = sam_lib.random_sam_gradient(
        grad_fn, params, s.rho, key=noise_key, ascent_grad_fn=ascent_grad_fn)
    return out, grads, None
  options = dict(ascent_grad_fn=ascent_grad_fn,
                 first_grad_transform=first_grad_transform, p=s.p,
                 adaptive=s.adaptive, adaptive_eta=s.adaptive_eta)
  if s.second_order:
    out, grads, _, first_order = sam_lib.second_order_sam_gradient(
        grad_fn, params, s.rho, **options)
    return out, grads, first_order
  if s.ascent_steps > 1:
    out, grads, _ = sam_lib.multistep_sam_gradient(
        grad_fn, params, s.rho, num_steps=s.ascent_steps, **options)
  else:
    out, grads, _ = sam_lib.sam_gradient(grad_fn, params, s.rho, **options)
  return out, grads, None


def train_step(state: TrainState, batch, *, model: nn.Module,
               config: ml_collections.ConfigDict):
  """One SAM (or SGD) update on this device's share of the global batch.

  The device batch b is cut into config.accumulation_steps micro-batches run
  one after another, and (SAM with 0 < config.sam.m < b) into groups of m
  examples with one perturbation each, run side by side.

  Args:
    state: this device's replica of the train state.
    batch: {'image': [b, H, W, C], 'label': [b]} for this device.
    model: the linen module.
    config: the run config (optimizer, sam.*, accumulation_steps, loss).

  Returns:
    (new_state, train metrics gathered over devices).
  """
  step_key = jax.random.fold_in(jax.random.key(config.seed), state.step)
  # One random key per (step, device); both SAM passes reuse it.
  dropout_key = jax.random.fold_in(step_key, jax.lax.axis_index('batch'))
  sync = None
  noise_key = jax.random.fold_in(step_key, _NOISE_STREAM)
  if config.optimizer == 'sam' and config.sam.sync_perturbation:
    # batch: one perturbation from the gradient of the global batch.
    sync = lambda g: jax.lax.pmean(g, axis_name='batch')
  else:
    # batch: each device draws its own random perturbation.
    noise_key = jax.random.fold_in(noise_key, jax.lax.axis_index('batch'))

  labels = batch['label']
  if config.mixup_alpha:
    # Both SAM passes see the same mixed batch (the key is the step's).
    batch = dict(zip(('image', 'label'), mixup.mixup(
        jax.random.fold_in(dropout_key, _MIXUP_STREAM), batch['image'],
        jax.nn.one_hot(labels, model.num_classes), config.mixup_alpha)))

  num_micro = config.accumulation_steps
  device_batch = jax.tree.leaves(batch)[0].shape[0]
  group = config.sam.m or device_batch

  def grad_fns(part, key, num_parts):
    """(grad_fn, ascent_grad_fn) on `part`, accumulated over num_parts."""
    def make(ascent):
      def make_micro(micro, index):
        return jax.value_and_grad(make_loss_fn(
            model, config, state.batch_stats, micro,
            _fold(key, index, num_parts), ascent), has_aux=True)
      return microbatch.accumulated_grad_fn(make_micro, part, num_parts)
    return make(False), make(True)

  first_order = None
  if config.optimizer != 'sam':
    grad_fn, _ = grad_fns(batch, dropout_key, num_micro)
    (_, (batch_stats, logits)), grads = grad_fn(state.params)
  elif group == device_batch:
    grad_fn, ascent_grad_fn = grad_fns(batch, dropout_key, num_micro)
    (_, (batch_stats, logits)), grads, first_order = sam_variant_gradient(
        config, grad_fn, ascent_grad_fn, state.params,
        first_grad_transform=sync, noise_key=noise_key)
  else:
    num_groups = device_batch // group
    groups_per_micro = num_groups // num_micro

    def group_gradient(part, index):
      grad_fn, ascent_grad_fn = grad_fns(
          part, _fold(dropout_key, index, num_groups), 1)
      (_, (part_stats, part_logits)), part_grads, part_first = (
          sam_variant_gradient(
              config, grad_fn, ascent_grad_fn, state.params,
              first_grad_transform=None,
              noise_key=_fold(noise_key, index, num_groups)))
      return (part_stats, part_grads, part_first), part_logits

    over_groups = (microbatch.unrolled_mean
                   if config.sam.m_groups == 'unroll' else
                   microbatch.vmap_mean)

    def micro_gradient(micro, micro_index):
      return over_groups(
          lambda part, index: group_gradient(
              part, micro_index * groups_per_micro + index), micro, group)

    if num_micro == 1:
      averaged, logits = micro_gradient(batch, 0)
    else:
      averaged, logits = microbatch.scan_mean(micro_gradient, batch,
                                              num_micro)
    batch_stats, grads, first_order = averaged

  # batch: the update is the average of the per-device gradients.
  grads = jax.lax.pmean(grads, axis_name='batch')
  # batch: keep the replicas' running statistics identical.
  batch_stats = jax.lax.pmean(batch_stats, axis_name='batch')
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  if config.skip_nonfinite_steps:
    # The same decision on every device: grads are already averaged.
    finite = jnp.isfinite(optax.global_norm(grads))
    # The step counter still advances, so the next step draws new keys.
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                             new_state, state).replace(step=new_state.step)

  outputs = dict(loss=losses.cross_entropy(logits, labels),
                 error=losses.top1_error(logits, labels),
                 grad_norm=optax.global_norm(grads))
  collection = losses.TrainMetrics
  if first_order is not None:
    # batch: the cosine of the updates, i.e. of the device-averaged gradients.
    first_order = jax.lax.pmean(first_order, axis_name='batch')
    outputs['second_order_cosine'] = sam_lib.cosine_similarity(grads,
                                                               first_order)
    collection = SecondOrderTrainMetrics
  # batch: metrics over the global batch (all_gather inside clu).
  step_metrics = collection.gather_from_model_output(axis_name='batch',
                                                     **outputs)
  return new_state, step_metrics


def eval_step(state: TrainState, batch, *, model: nn.Module):
  """Masked loss and error on this device's share of an eval batch.

  Returns:
    EvalMetrics gathered over devices; padding (mask 0) does not count.
  """
  logits = model.apply({'params': state.params,
                        'batch_stats': state.batch_stats},
                       batch['image'], train=False)
  # batch: metrics over the global eval batch (all_gather inside clu).
  return losses.EvalMetrics.gather_from_model_output(
      axis_name='batch',
      loss=losses.cross_entropy(logits, batch['label']),
      error=losses.top1_error(logits, batch['label']),
      mask=batch['mask'])
