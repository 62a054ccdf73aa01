"""The per-device train and eval steps, to be mapped over devices with
`jax.pmap(..., axis_name='batch')`.

These are the only functions that communicate across devices; every
collective below names the 'batch' axis (the data-parallel devices) and says
why it is there.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from sam import losses
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
  return TrainState.create(apply_fn=model.apply, params=variables['params'],
                           batch_stats=variables.get('batch_stats', {}),
                           tx=tx)


def make_loss_fn(model: nn.Module, config: ml_collections.ConfigDict,
                 batch_stats, batch, dropout_key, ascent: bool):
  """params -> (loss, (new_batch_stats, logits)) on one device's batch.

  The loss is the cross-entropy plus 0.5 * wd * ||w||^2. BatchNorm runs in
  training mode from `batch_stats`; the same `dropout_key` gives the same
  random network on every call.
  """

  def loss_fn(params):
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


def train_step(state: TrainState, batch, *, model: nn.Module,
               config: ml_collections.ConfigDict):
  """One SAM (or SGD) update on this device's share of the global batch.

  Args:
    state: this device's replica of the train state.
    batch: {'image': [b, H, W, C], 'label': [b]} for this device.
    model: the linen module.
    config: the run config (optimizer, sam.*, loss fields).

  Returns:
    (new_state, TrainMetrics gathered over devices).
  """
  # One random key per (step, device); both SAM passes reuse it.
  dropout_key = jax.random.fold_in(
      jax.random.fold_in(jax.random.key(config.seed), state.step),
      jax.lax.axis_index('batch'))
  make = functools.partial(make_loss_fn, model, config, state.batch_stats,
                           batch, dropout_key)
  grad_fn = jax.value_and_grad(make(ascent=False), has_aux=True)

  if config.optimizer == 'sam':
    sync = None
    if config.sam.sync_perturbation:
      # batch: one perturbation from the gradient of the global batch.
      sync = lambda g: jax.lax.pmean(g, axis_name='batch')
    (_, (batch_stats, logits)), grads, _ = sam_lib.sam_gradient(
        grad_fn, state.params, config.sam.rho,
        ascent_grad_fn=jax.value_and_grad(make(ascent=True), has_aux=True),
        first_grad_transform=sync)
  else:
    (_, (batch_stats, logits)), grads = grad_fn(state.params)

  # batch: the update is the average of the per-device gradients.
  grads = jax.lax.pmean(grads, axis_name='batch')
  # batch: keep the replicas' running statistics identical.
  batch_stats = jax.lax.pmean(batch_stats, axis_name='batch')
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)

  # batch: metrics over the global batch (all_gather inside clu).
  step_metrics = losses.TrainMetrics.gather_from_model_output(
      axis_name='batch',
      loss=losses.cross_entropy(logits, batch['label']),
      error=losses.top1_error(logits, batch['label']),
      grad_norm=optax.global_norm(grads))
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
