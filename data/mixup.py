"""Mixup (Zhang et al., 2018), the Table 4 baseline for noisy labels.

Batch-level: one weight lam ~ Beta(alpha, alpha) per batch (the official
code's choice), and every example is mixed with the example a random
permutation of the batch puts beside it, images and labels alike. It runs on normalised float images and one-hot (or
already soft) labels, inside or outside jit, and is a pure function of its
key, so a run's mixing is reproducible like the rest of its randomness.
"""

import jax
import jax.numpy as jnp


def mixup_params(key, batch_size: int, alpha: float):
  """Draws the mixing weight and partner permutation for one batch.

  Args:
    key: a jax PRNG key.
    batch_size: examples in the batch.
    alpha: Beta concentration, > 0.

  Returns:
    (lam float32 scalar in [0, 1], permutation int32 [batch_size]).
  """
  lam_key, perm_key = jax.random.split(key)
  lam = jax.random.beta(lam_key, alpha, alpha)
  return lam, jax.random.permutation(perm_key, batch_size)


def mix(lam, partners, images, labels):
  """lam * x + (1 - lam) * x[partners], for images and labels alike.

  Args:
    lam: the mixing weight, a scalar in [0, 1].
    partners: int [B], the example each example is mixed with.
    images: float [B, ...].
    labels: float [B, K] one-hot or soft labels.

  Returns:
    (mixed images, mixed labels), of the input dtypes.
  """

  def blend(x):
    return (lam * x + (1.0 - lam) * x[partners]).astype(x.dtype)

  return blend(jnp.asarray(images)), blend(jnp.asarray(labels))


def mixup(key, images, labels, alpha: float):
  """Mixes a batch with a permutation of itself.

  Args:
    key: a jax PRNG key; the same key gives the same mixing.
    images: float [B, ...] (numpy or jax).
    labels: float [B, K] one-hot or soft labels (numpy or jax).
    alpha: Beta(alpha, alpha) concentration; 0 returns the batch unchanged.

  Returns:
    (mixed images [B, ...], soft labels [B, K]), as jax arrays of the input
    dtypes; each label row still sums to 1.
  """
  if alpha < 0:
    raise ValueError(f'mixup alpha must be >= 0, got {alpha}')
  images, labels = jnp.asarray(images), jnp.asarray(labels)
  if labels.ndim != 2 or labels.shape[0] != images.shape[0]:
    raise ValueError(
        f'mixup labels must be [batch, classes] matching images '
        f'{images.shape}, got {labels.shape}'
    )
  if alpha == 0:
    return images, labels
  lam, perm = mixup_params(key, images.shape[0], alpha)
  return mix(lam, perm, images, labels)
