"""The training objective: cross-entropy plus L2, and the one loss builder
that the train step, the sharpness probe and the analyses all use."""

from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from models import batch_norm
from sam.interface import Outputs

BN_MODES = ('train', 'eval')
# (params, batch_stats, batch, key, ascent=False, bn_sync=None,
# gate_key=None) -> (loss, Outputs).
LossFn = Callable[..., tuple[jax.Array, Outputs]]


class BatchNormSync(NamedTuple):
  """BatchNorm statistics computed over several devices of a mapped axis.

  Attributes:
    axis_name: the mapped axis.
    groups: the axis indices whose examples share statistics, per group.
  """

  axis_name: str
  groups: tuple[tuple[int, ...], ...]


def cross_entropy(
    logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0
) -> jax.Array:
  """Per-example softmax cross-entropy.

  Args:
    logits: [B, K].
    labels: int [B] class indices, or float [B, K] target distributions
      (mixup).
    label_smoothing: mass spread uniformly over the K classes.

  Returns:
    [B] losses.
  """
  num_classes = logits.shape[-1]
  targets = (
      labels
      if labels.ndim == logits.ndim
      else jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
  )
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def _is_bn_or_bias(path) -> bool:
  names = [getattr(k, 'key', str(k)) for k in path]
  return names[-1] in ('bias', 'scale')


def l2_penalty(params, weight_decay: float, exclude_bn_bias: bool = False):
  """0.5 * wd * sum ||w||^2 over the parameters.

  Args:
    params: the model parameters.
    weight_decay: the coefficient wd.
    exclude_bn_bias: leave out BatchNorm scales and all biases.

  Returns:
    A scalar.
  """
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  total = sum(
      jnp.sum(jnp.square(w))
      for path, w in leaves
      if not (exclude_bn_bias and _is_bn_or_bias(path))
  )
  return 0.5 * weight_decay * total


def top1_error(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example 0/1 error; soft labels are scored by their argmax."""
  if labels.ndim == logits.ndim:
    labels = jnp.argmax(labels, -1)
  return (jnp.argmax(logits, -1) != labels).astype(jnp.float32)


def top_k_error(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """Per-example 0/1 error: the label is not among the k largest logits
  (all of them when there are fewer than k classes)."""
  if labels.ndim == logits.ndim:
    labels = jnp.argmax(labels, -1)
  k = min(k, logits.shape[-1])
  _, top = jax.lax.top_k(logits, k)
  return 1.0 - jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def per_example_outputs(
    logits: jax.Array, labels: jax.Array
) -> dict[str, jax.Array]:
  """What a pass reports per example: logits, cross-entropy (without label
  smoothing) and 0/1 error against the batch's targets."""
  return {
      'logits': logits,
      'loss': cross_entropy(logits, labels),
      'error': top1_error(logits, labels),
  }


def make_loss_fn(
    model: nn.Module,
    *,
    weight_decay: float = 0.0,
    exclude_bn_bias: bool = False,
    label_smoothing: float = 0.0,
    bn_mode: str = 'train',
    freeze_batch_stats: bool = False,
) -> LossFn:
  """The loss of `model` on a batch: cross-entropy + 0.5 * wd * ||w||^2.

  Args:
    model: the linen module.
    weight_decay: the L2 coefficient (0: the data loss alone).
    exclude_bn_bias: leave BatchNorm scales and biases out of the L2 term.
    label_smoothing: as in `cross_entropy`.
    bn_mode: 'train' normalises with each batch's statistics (the function
      the optimiser sees) and returns the updated running statistics;
      'eval' normalises with the stored ones (the function the test error
      is measured with) and returns them unchanged.
    freeze_batch_stats: in 'train' mode, normalise with the running
      statistics and keep them (finetuning, paper C.2).

  Returns:
    loss_fn(params, batch_stats, batch, key, ascent=False, bn_sync=None,
    gate_key=None) -> (loss, Outputs) for batch {'image', 'label'}, the
    per-example outputs as `per_example_outputs`; `key` feeds the random
    regularisers (the same key gives the same network) and `gate_key`, when
    given, replaces it for the Bernoulli gates alone (the `dropout`
    collection: dropout, drop-connect, ShakeDrop's gate), so that two passes
    can share the shake coefficients but not the gates (models/__init__.py);
    `ascent` marks SAM's ascent pass and `bn_sync`, in 'train' mode, computes
    the batch statistics over several devices (a replica that spans them).
  """
  if bn_mode not in BN_MODES:
    raise ValueError(f'bn_mode must be one of {BN_MODES}, got {bn_mode!r}')

  def loss_fn(
      params,
      batch_stats,
      batch,
      key,
      ascent=False,
      bn_sync=None,
      gate_key=None,
  ):
    variables = {'params': params, 'batch_stats': batch_stats}
    if bn_mode == 'train':
      axis, groups = bn_sync or (None, None)
      with batch_norm.frozen(freeze_batch_stats), batch_norm.synced(
          axis, groups
      ):
        logits, new_state = model.apply(
            variables,
            batch['image'],
            train=True,
            ascent=ascent,
            rngs={
                'dropout': key if gate_key is None else gate_key,
                'shake': key,
            },
            mutable=['batch_stats'],
        )
      batch_stats = new_state.get('batch_stats', {})
    else:
      logits = model.apply(variables, batch['image'], train=False)
    loss = jnp.mean(cross_entropy(logits, batch['label'], label_smoothing))
    if weight_decay:
      loss += l2_penalty(params, weight_decay, exclude_bn_bias)
    return loss, Outputs(
        batch_stats, per_example_outputs(logits, batch['label'])
    )

  return loss_fn


def training_loss(
    model: nn.Module,
    config: ml_collections.ConfigDict,
    *,
    bn_mode: str = 'train',
    weight_decay: bool = True,
    freeze_batch_stats: bool = False,
) -> LossFn:
  """The run's training objective: the one place where the config's fields
  reach `make_loss_fn`.

  Args:
    model: the run's linen module.
    config: the run config (its optim section).
    bn_mode: as in `make_loss_fn`.
    weight_decay: include the L2 term (False: the data loss alone).
    freeze_batch_stats: as in `make_loss_fn` (the train step passes
      config.model.freeze_batch_stats).

  Returns:
    The LossFn.
  """
  return make_loss_fn(
      model,
      weight_decay=config.optim.weight_decay if weight_decay else 0.0,
      exclude_bn_bias=config.optim.weight_decay_exclude_bn_bias,
      label_smoothing=config.optim.label_smoothing,
      bn_mode=bn_mode,
      freeze_batch_stats=freeze_batch_stats,
  )
