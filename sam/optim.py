"""The base optimizer of every run: clipped SGD with Nesterov momentum and a
per-step cosine learning rate (optional linear warmup), all optax."""

import ml_collections
import optax


def learning_rate_schedule(
    config: ml_collections.ConfigDict, steps_per_epoch: int
) -> optax.Schedule:
  """Cosine decay to 0 over the run, evaluated every step.

  Args:
    config: the optim section (learning_rate, warmup_epochs, num_epochs,
      num_steps, epochs_multiplier).
    steps_per_epoch: optimizer steps in one epoch.

  Returns:
    step -> learning rate.
  """
  total_steps = total_train_steps(config, steps_per_epoch)
  warmup_steps = int(config.warmup_epochs * steps_per_epoch)
  if not warmup_steps:
    return optax.cosine_decay_schedule(config.learning_rate, total_steps)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=config.learning_rate,
      warmup_steps=warmup_steps,
      decay_steps=total_steps,
  )


def total_train_steps(
    config: ml_collections.ConfigDict, steps_per_epoch: int
) -> int:
  """num_epochs * epochs_multiplier epochs in steps, or num_steps if set.

  Args:
    config: the optim section.
    steps_per_epoch: optimizer steps in one epoch.

  Returns:
    The number of optimizer steps of the run.
  """
  if config.num_steps:
    return int(round(config.num_steps * config.epochs_multiplier))
  return int(
      round(config.num_epochs * config.epochs_multiplier * steps_per_epoch)
  )


def create_optimizer(
    config: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
  """Global-norm clipping, then SGD with (Nesterov) momentum.

  Weight decay is not here: it is the L2 term of the loss (sam/losses.py),
  so SAM's perturbed pass sees it too.

  Args:
    config: the optim section (grad_clip_norm, momentum, nesterov).
    schedule: the learning rate schedule.

  Returns:
    An optax transformation.
  """
  parts = []
  if config.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
  parts.append(
      optax.sgd(
          schedule, momentum=config.momentum or None, nesterov=config.nesterov
      )
  )
  return optax.chain(*parts)
