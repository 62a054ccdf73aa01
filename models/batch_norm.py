"""How every BatchNorm of a model behaves for one call, from outside it.

The models build their BatchNorm layers with the settings of a single device
and a single pass. Two contexts change those layers for the calls made
inside them, without the models knowing (flax method interception):

* `frozen()`: normalise with the running averages even in training mode, and
  keep them (the paper's finetuning, C.2; dropout stays on).
* `synced(axis_name, groups)`: compute the batch statistics over the devices
  of a mapped axis, in groups (a replica of examples that spans several
  devices normalises over all of them).

Wrap the `model.apply` of a traced function:

  with batch_norm.frozen(freeze), batch_norm.synced('batch', groups):
    logits, state = model.apply(variables, x, train=True, mutable=[...])
"""

import contextlib
from typing import Any, Sequence

import flax.linen as nn


def _overriding(fields: dict[str, Any]):
  """A method interceptor that sets `fields` on BatchNorm for its call."""

  def intercept(next_fun, args, kwargs, context):
    module = context.module
    if not isinstance(module, nn.BatchNorm) or context.method_name != (
        '__call__'
    ):
      return next_fun(*args, **kwargs)
    kwargs = {k: v for k, v in kwargs.items() if k not in fields}
    if 'use_running_average' in fields:
      args = args[:1]  # x; a positional use_running_average is overridden.
    previous = {name: getattr(module, name) for name in fields}
    # Modules fix these at construction; the bound instance lives for this
    # call only, so they are switched for the call.
    for name, value in fields.items():
      object.__setattr__(module, name, value)
    try:
      return next_fun(*args, **kwargs)
    finally:
      for name, value in previous.items():
        object.__setattr__(module, name, value)

  return intercept


@contextlib.contextmanager
def frozen(enabled: bool = True):
  """Within the context, BatchNorm uses (and keeps) its running statistics.

  Args:
    enabled: False makes the context a no-op, so callers need no branch.

  Yields:
    None.
  """
  if not enabled:
    yield
    return
  with nn.intercept_methods(_overriding({'use_running_average': True})):
    yield


@contextlib.contextmanager
def synced(
    axis_name: str | None, groups: Sequence[Sequence[int]] | None = None
):
  """Within the context, BatchNorm averages its batch statistics over
  `axis_name` (a pmapped axis), within each group of axis indices.

  Args:
    axis_name: the mapped axis; None makes the context a no-op.
    groups: lists of axis indices that share statistics (all of them if
      None).

  Yields:
    None.
  """
  if axis_name is None:
    yield
    return
  fields = {
      'axis_name': axis_name,
      'axis_index_groups': None
      if groups is None
      else [list(g) for g in groups],
  }
  with nn.intercept_methods(_overriding(fields)):
    yield
