"""The training objective and the metrics that summarise it."""

import flax
import jax
import jax.numpy as jnp
import optax
from clu import metrics


def cross_entropy(logits: jax.Array, labels: jax.Array,
                  label_smoothing: float = 0.0) -> jax.Array:
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
  targets = (labels if labels.ndim == logits.ndim else
             jax.nn.one_hot(labels, num_classes, dtype=logits.dtype))
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
  total = sum(jnp.sum(jnp.square(w)) for path, w in leaves
              if not (exclude_bn_bias and _is_bn_or_bias(path)))
  return 0.5 * weight_decay * total


def top1_error(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example 0/1 error; soft labels are scored by their argmax."""
  if labels.ndim == logits.ndim:
    labels = jnp.argmax(labels, -1)
  return (jnp.argmax(logits, -1) != labels).astype(jnp.float32)


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
  train_loss: metrics.Average.from_output('loss')
  train_error: metrics.Average.from_output('error')
  grad_norm: metrics.Average.from_output('grad_norm')


@flax.struct.dataclass
class EvalMetrics(metrics.Collection):
  loss: metrics.Average.from_output('loss')
  error: metrics.Average.from_output('error')
