"""Pretrained weights for the finetuning of the paper (appendix C.2).

Two pure pieces the training loop composes:

* `save(variables, path)` writes a model's variables ({'params': ...,
  'batch_stats': ...}) as an orbax checkpoint, e.g. weights converted from
  Keras by models/keras_convert.py.
* `load_into(variables, path, reinit_head)` returns freshly initialised
  `variables` with every entry replaced by the checkpoint's. The
  classification head (the 'head' module of every model here) is kept from
  the checkpoint or left at its fresh initialisation: `reinit_head=None`
  re-initialises it exactly when its shape differs (a new number of classes),
  as in the paper, which keeps the head only for ImageNet. Any other
  difference between checkpoint and model is a ValueError that names the
  first differing path and both shapes.

The finetuning mode itself, BatchNorm with frozen statistics, is
`models.batch_norm.frozen()`.
"""

from typing import Any, Mapping, Optional

from etils import epath
import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

import models

HEAD = 'head'


def _absolute(path) -> epath.Path:
  """Orbax wants absolute paths: local ones against the working directory,
  URLs (gs://...) as given."""
  path = epath.Path(path)
  return path if '://' in str(path) else path.absolute()


def save(variables: Mapping[str, Any], path: epath.PathLike) -> str:
  """Writes `variables` as an orbax checkpoint directory at `path`.

  Args:
    variables: model variables, e.g. {'params': ..., 'batch_stats': ...}.
    path: checkpoint directory to create (must not exist).

  Returns:
    The absolute checkpoint path (a local path or a gs:// URL).
  """
  path = _absolute(path)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(path, jax.tree_util.tree_map(np.asarray, dict(variables)))
  checkpointer.wait_until_finished()
  return str(path)


def model_shapes(model) -> dict[str, Any]:
  """The variables' shapes (jax.ShapeDtypeStruct) of a model, uncomputed.

  Args:
    model: an unbound module of models.MODELS.

  Returns:
    {'params': ..., 'batch_stats': ...} of shape structs.
  """
  # Parameter shapes do not depend on the resolution; 64 px keeps it cheap.
  return jax.eval_shape(
      lambda: model.init(
          jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False
      )
  )


def save_converted(
    variables: Mapping[str, Any], model_name: str, source: str, path: str
) -> str:
  """Checks converted weights against a model's structure and saves them.

  Args:
    variables: {'params': ..., 'batch_stats': ...} converted from elsewhere.
    model_name: the models.MODELS entry they are for.
    source: how error messages call the weights.
    path: checkpoint directory to create.

  Returns:
    The checkpoint path.

  Raises:
    ValueError: from `merge`, naming a missing, extra or misshapen entry.
  """
  num_classes = np.shape(variables['params'][HEAD]['bias'])[0]
  shapes = model_shapes(models.create_model(model_name, num_classes))
  checked = merge(shapes, variables, reinit_head=False, source=source)
  return save(checked, path)


def restore(path: str) -> dict[str, Any]:
  """Reads a checkpoint written by `save` as a nested dict of numpy arrays."""
  restored = ocp.StandardCheckpointer().restore(_absolute(path))
  return jax.tree_util.tree_map(np.asarray, restored)


def _path_name(key: tuple[str, ...]) -> str:
  return '/'.join(key)


def merge(
    variables: Mapping[str, Any],
    loaded: Mapping[str, Any],
    reinit_head: Optional[bool] = None,
    source: str = 'checkpoint',
) -> dict[str, Any]:
  """Returns `variables` with every entry taken from `loaded`.

  Args:
    variables: freshly initialised model variables (the target structure).
    loaded: variables of the same architecture, e.g. from `restore`.
    reinit_head: True keeps the fresh head, False takes the head from
      `loaded`, None (default) keeps the fresh head only if its shapes differ.
    source: how error messages call `loaded`.

  Returns:
    A new nested dict of variables, each with the dtype of `variables`.

  Raises:
    ValueError: naming the first path that is missing on either side or
      whose shapes differ (outside a re-initialised head).
  """
  target = flax.traverse_util.flatten_dict(
      flax.core.unfreeze(variables), keep_empty_nodes=False
  )
  given = flax.traverse_util.flatten_dict(
      flax.core.unfreeze(loaded), keep_empty_nodes=False
  )
  is_head = lambda key: key[0] == 'params' and key[1] == HEAD
  if reinit_head is None:
    reinit_head = any(
        key in given and np.shape(given[key]) != value.shape
        for key, value in target.items()
        if is_head(key)
    )
  merged = {}
  # Report parameters before other collections (e.g. batch_stats).
  for key in sorted(target, key=lambda key: key[0] != 'params'):
    value = target[key]
    if reinit_head and is_head(key):
      merged[key] = value
      continue
    if key not in given:
      raise ValueError(
          f'{source} has no {_path_name(key)} (shape '
          f'{tuple(value.shape)} in the model)'
      )
    if np.shape(given[key]) != tuple(value.shape):
      raise ValueError(
          f'{source} does not match the model at {_path_name(key)}: shape '
          f'{tuple(np.shape(given[key]))} in the checkpoint, '
          f'{tuple(value.shape)} in the model'
      )
    merged[key] = np.asarray(given[key]).astype(value.dtype)
  for key in sorted(given, key=lambda key: key[0] != 'params'):
    value = given[key]
    if key not in target and not (reinit_head and is_head(key)):
      raise ValueError(
          f'{source} has {_path_name(key)} (shape '
          f'{tuple(np.shape(value))}), which the model lacks'
      )
  return flax.traverse_util.unflatten_dict(merged)


def load_into(
    variables: Mapping[str, Any],
    checkpoint_path: str,
    reinit_head: Optional[bool] = None,
) -> dict[str, Any]:
  """Initialises a model from a pretrained checkpoint (see `merge`).

  Args:
    variables: freshly initialised variables of the model to finetune.
    checkpoint_path: a checkpoint written by `save`.
    reinit_head: True/False forces re-initialising/keeping the head; None
      re-initialises it when the number of classes differs.

  Returns:
    The variables to start finetuning from.
  """
  return merge(
      variables,
      restore(checkpoint_path),
      reinit_head,
      source=f'checkpoint {checkpoint_path}',
  )
