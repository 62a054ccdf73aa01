"""Synthetic label noise for the noisy-label experiments (Section 3.3, Table 4).

Training labels are corrupted once, before training; validation and test
labels are never passed through here, so the rho search on the validation
split sees clean labels.

The paper says only that "a fraction of the training set's labels are
randomly flipped", following Jiang et al. (2019). Two conventions exist:

* 'uniform' (the default): each label independently, with probability r,
  is redrawn uniformly over all K classes, so about r / K of the labels
  keep their class and r (K - 1) / K change. This is the rule of Zhang et
  al. (2017), which MentorNet and MentorMix follow (Jiang et al. 2018, 2020,
  whose Table 4 numbers the paper quotes; their released data is generated
  this way), and of Arazo et al. (2019), the first line of Table 4.
* 'different': exactly round(r N) labels, chosen at random, each moved to a
  uniformly drawn other class (Co-teaching's symmetric flipping draws the
  other class too, per example).
"""

import numpy as np

MODES = ('uniform', 'different')


def corrupt_labels(
    labels,
    num_classes: int,
    fraction: float,
    seed: int,
    mode: str = 'uniform',
):
  """Corrupts the labels at rate `fraction`, deterministically for a seed.

  Args:
    labels: int array [N] with values in [0, num_classes).
    num_classes: number of classes K.
    fraction: the noise rate r, in [0, 1).
    seed: integer seed; the same seed gives the same corruption.
    mode: 'uniform' (each label, with probability r, is redrawn uniformly
      over all K classes) or 'different' (exactly round(r N) labels, each
      moved to a uniformly drawn other class).

  Returns:
    (noisy_labels int32 [N], changed_mask bool [N]); changed_mask marks the
    examples whose label differs from the original.
  """
  labels = np.asarray(labels)
  _check(labels, num_classes, fraction, mode)
  rng = np.random.default_rng(seed)
  noisy = labels.astype(np.int32).copy()
  if mode == 'uniform':
    redrawn = rng.random(labels.size) < fraction
    noisy[redrawn] = rng.integers(0, num_classes, size=int(redrawn.sum()))
  else:
    num_corrupted = int(round(fraction * labels.size))
    chosen = rng.choice(labels.size, size=num_corrupted, replace=False)
    # An offset in 1..K-1 added modulo K is uniform over the K-1 other
    # classes and can never return the original class.
    offsets = rng.integers(1, num_classes, size=num_corrupted)
    noisy[chosen] = (noisy[chosen] + offsets) % num_classes
  return noisy, noisy != labels


def _check(labels, num_classes, fraction, mode):
  if labels.ndim != 1:
    raise ValueError(f'labels must be 1-D, got shape {labels.shape}')
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f'label_noise fraction must be in [0, 1), got {fraction}')
  if mode not in MODES:
    raise ValueError(f'label noise mode must be one of {MODES}, got {mode!r}')
  if num_classes < 2:
    raise ValueError(
        f'num_classes must be >= 2 for label noise, got {num_classes}'
    )
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(
        f'labels must lie in [0, {num_classes}), got range '
        f'[{labels.min()}, {labels.max()}]'
    )


def noise_statistics(labels, noisy_labels, num_classes: int) -> dict:
  """Summarises a corruption: overall and per-class flipped fractions.

  Args:
    labels: original int labels [N].
    noisy_labels: corrupted int labels [N].
    num_classes: number of classes K.

  Returns:
    {'flipped_fraction': float, 'per_class_flipped_fraction': list of K
    floats (share of each original class that was changed),
    'per_class_noisy_share': list of K floats (among changed examples, share
    that landed in each class)}.
  """
  labels = np.asarray(labels)
  noisy_labels = np.asarray(noisy_labels)
  changed = labels != noisy_labels
  per_class_total = np.bincount(labels, minlength=num_classes)
  per_class_changed = np.bincount(labels[changed], minlength=num_classes)
  landed = np.bincount(noisy_labels[changed], minlength=num_classes)
  return {
      'flipped_fraction': float(changed.mean()) if labels.size else 0.0,
      'per_class_flipped_fraction': (
          per_class_changed / np.maximum(per_class_total, 1)
      ).tolist(),
      'per_class_noisy_share': (landed / max(changed.sum(), 1)).tolist(),
  }


def main():
  """Prints the statistics of 20/40/60/80% noise on 50,000 uniform labels
  (what tfds's mock CIFAR-10 data holds)."""
  labels = np.random.default_rng(0).integers(0, 10, 50_000)
  # 'changed of r N': under the default 'uniform' rule about r / K of the
  # redrawn labels keep their class, so the first number is near
  # (K - 1) / K of the second.
  print(
      f'{"noise":>6} {"flipped":>8} {"per class min-max":>18} '
      f'{"landed min-max":>15} {"changed of r N":>17}'
  )
  for fraction in (0.2, 0.4, 0.6, 0.8):
    noisy, changed = corrupt_labels(labels, 10, fraction, seed=0)
    stats = noise_statistics(labels, noisy, 10)
    per_class, landed = (
        stats['per_class_flipped_fraction'],
        stats['per_class_noisy_share'],
    )
    print(
        f'{fraction:>6.1f} {stats["flipped_fraction"]:>8.4f} '
        f'{min(per_class):>8.4f}-{max(per_class):.4f} '
        f'{min(landed):>7.4f}-{max(landed):.4f} '
        f'{f"{changed.sum()} of {round(fraction * labels.size)}":>17}'
    )


if __name__ == '__main__':
  main()
