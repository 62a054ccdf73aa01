"""Tests for models/pretrained.py: checkpoints, head re-initialisation and
frozen BatchNorm statistics."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from models import batch_norm
from models import pretrained
from models import resnet

IMAGES = jnp.asarray(
    np.random.default_rng(0).normal(size=(4, 16, 16, 3)), jnp.float32
)


def cifar_resnet(num_classes=10, depth=8, width=8):
  return resnet.CifarResNet(depth=depth, width=width, num_classes=num_classes)


def assert_trees_equal(a, b):
  jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory, fill_variables):
  """(path, variables) of a saved 10-class mini ResNet."""
  variables = fill_variables(cifar_resnet(), IMAGES, seed=1)
  path = pretrained.save(variables, tmp_path_factory.mktemp('ckpt') / 'c')
  return path, variables


def test_same_classes_loads_everything_including_the_head(
    checkpoint, fill_variables
):
  path, saved = checkpoint
  fresh = fill_variables(cifar_resnet(), IMAGES, seed=2)
  assert_trees_equal(pretrained.load_into(fresh, path), saved)


def test_new_classes_reinitialise_only_the_head(checkpoint, fill_variables):
  path, saved = checkpoint
  fresh = fill_variables(cifar_resnet(num_classes=5), IMAGES, seed=2)
  loaded = pretrained.load_into(fresh, path)
  assert_trees_equal(loaded['params']['head'], fresh['params']['head'])
  del loaded['params']['head'], saved['params']['head']
  assert_trees_equal(loaded, saved)


def test_forced_head_reinitialisation(checkpoint, fill_variables):
  path, saved = checkpoint
  fresh = fill_variables(cifar_resnet(), IMAGES, seed=2)
  loaded = pretrained.load_into(fresh, path, reinit_head=True)
  assert_trees_equal(loaded['params']['head'], fresh['params']['head'])
  assert_trees_equal(loaded['batch_stats'], saved['batch_stats'])


def test_kept_head_of_another_size_is_a_clear_error(checkpoint, fill_variables):
  path, _ = checkpoint
  fresh = fill_variables(cifar_resnet(num_classes=5), IMAGES)
  # Paths are visited in sorted order: the bias comes before the kernel.
  with pytest.raises(
      ValueError,
      match=r'at params/head/bias: shape '
      r'\(10,\) in the checkpoint, \(5,\) in the model',
  ):
    pretrained.load_into(fresh, path, reinit_head=False)


def test_other_width_names_the_first_differing_parameter(
    checkpoint, fill_variables
):
  path, _ = checkpoint
  fresh = fill_variables(cifar_resnet(width=4), IMAGES)
  # The head differs too and is re-initialised; the next path is reported.
  with pytest.raises(
      ValueError,
      match=r'at params/init_bn/bias: shape '
      r'\(8,\) in the checkpoint, \(4,\) in the model',
  ):
    pretrained.load_into(fresh, path)


def test_other_depth_names_missing_and_extra_parameters(
    checkpoint, fill_variables
):
  path, _ = checkpoint
  deeper = fill_variables(cifar_resnet(depth=14), IMAGES)
  with pytest.raises(
      ValueError,
      match=r'has no params/stage0_block1/'
      r'bn_1/bias \(shape \(8,\) in the model\)',
  ):
    pretrained.load_into(deeper, path)
  with pytest.raises(
      ValueError,
      match='has params/stage0_block0/bn_1/bias '
      r'\(shape \(8,\)\), which the model lacks',
  ):
    pretrained.merge(
        fill_variables(cifar_resnet(depth=2), IMAGES),
        fill_variables(cifar_resnet(depth=14), IMAGES),
    )


def test_frozen_batch_stats_normalise_with_running_averages(fill_variables):
  model = cifar_resnet(depth=2)  # conv-BN-ReLU, pooling, head.
  variables = fill_variables(model, IMAGES)
  labels = jnp.arange(4) % 10

  def loss_fn(params, frozen):
    with batch_norm.frozen(frozen):
      logits, state = model.apply(
          {'params': params, 'batch_stats': variables['batch_stats']},
          IMAGES,
          train=True,
          mutable=['batch_stats'],
      )
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.mean(loss), (logits, state['batch_stats'])

  @jax.jit
  def frozen_sgd_step(params):
    grads, aux = jax.grad(loss_fn, has_aux=True)(params, True)
    updates, _ = optax.sgd(0.1).update(grads, optax.sgd(0.1).init(params))
    return optax.apply_updates(params, updates), aux

  @jax.jit
  def eval_and_unfrozen_train(variables):
    with batch_norm.frozen(enabled=False):
      train = model.apply(
          variables, IMAGES, train=True, mutable=['batch_stats']
      )
    return model.apply(variables, IMAGES, train=False), train

  eval_logits, (train_logits, state) = eval_and_unfrozen_train(variables)
  params, (logits, stats) = frozen_sgd_step(variables['params'])
  np.testing.assert_allclose(logits, eval_logits, rtol=1e-5, atol=1e-5)
  assert_trees_equal(stats, variables['batch_stats'])
  assert not np.allclose(
      params['head']['kernel'], variables['params']['head']['kernel']
  )
  # Outside the context training mode uses (and updates) batch statistics.
  assert not np.allclose(train_logits, eval_logits, atol=1e-3)
  assert not np.allclose(
      state['batch_stats']['init_bn']['mean'],
      variables['batch_stats']['init_bn']['mean'],
  )


class DropoutAfterBatchNorm(nn.Module):
  """BN then dropout: enough to see that freezing leaves dropout on."""

  @nn.compact
  def __call__(self, x, train):
    x = nn.BatchNorm(use_running_average=not train)(x)
    return nn.Dropout(0.5, deterministic=not train)(x)


def test_frozen_batch_stats_keep_dropout_on():
  model = DropoutAfterBatchNorm()
  x = jnp.arange(1.0, 9.0).reshape(2, 4)
  variables = {
      'batch_stats': {
          'BatchNorm_0': {'mean': jnp.full(4, 0.5), 'var': jnp.full(4, 4.0)}
      },
      'params': {'BatchNorm_0': {'scale': jnp.ones(4), 'bias': jnp.zeros(4)}},
  }
  with batch_norm.frozen():
    y, state = model.apply(
        variables,
        x,
        train=True,
        mutable=['batch_stats'],
        rngs={'dropout': jax.random.key(0, impl='rbg')},
    )
  normalised = (x - 0.5) / np.sqrt(4.0 + 1e-5)
  # Each unit is either dropped or the running-average output doubled.
  kept = np.asarray(y) != 0
  assert 0 < kept.sum() < kept.size
  np.testing.assert_allclose(
      np.asarray(y)[kept], 2 * normalised[kept], rtol=1e-6
  )
  assert_trees_equal(state['batch_stats'], variables['batch_stats'])
