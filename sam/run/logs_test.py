"""The host side of a log: numpy merges equal clu's, to the bit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sam.run import logs
from sam.run import step as step_lib


def _step_collections(count, devices=2, seed=0):
  """`count` eval-step collections as the pmapped step returns them: every
  leaf [devices], the same value on each device."""
  rng = np.random.default_rng(seed)
  collections = []
  for _ in range(count):
    one = step_lib.EvalMetrics.single_from_model_output(
        loss=jnp.asarray(rng.lognormal(size=7), jnp.float32),
        error=jnp.asarray(rng.integers(0, 2, 7), jnp.float32),
        top5_error=jnp.asarray(rng.random(7), jnp.float32),
        mask=jnp.asarray(rng.integers(0, 2, 7), jnp.float32),
    )
    collections.append(jax.tree.map(lambda x: jnp.stack([x] * devices), one))
  return collections


def test_numpy_merge_equals_clu_merge_to_the_bit():
  collections = _step_collections(50)
  merged = None
  for collection in collections:
    first = jax.tree.map(lambda x: x[0], collection)
    merged = first if merged is None else merged.merge(first)
  expected = {k: float(v) for k, v in merged.compute().items()}
  got = logs.compute(logs.merge_steps(jax.device_get(collections)))
  assert got == expected


def test_merging_nothing_gives_none():
  assert logs.merge_steps([]) is None


def test_rate_and_eta():
  assert logs.rate_and_eta(10, 5.0, None, 100) == (None, None)
  rate, eta = logs.rate_and_eta(60, 12.0, (10, 2.0), 110)
  assert rate == pytest.approx(5.0) and eta == pytest.approx(10.0)
  # The last step has no time left to show.
  assert logs.rate_and_eta(110, 12.0, (10, 2.0), 110)[1] is None


@pytest.mark.parametrize(
    'seconds,text',
    [(0.4, '0s'), (45, '45s'), (723, '12m03s'), (7509.6, '2h05m10s')],
)
def test_format_duration(seconds, text):
  assert logs.format_duration(seconds) == text


def test_the_line_carries_the_time_left():
  line = logs.line(50, {'train_loss': 1.234567891, 'epoch': 2}, 723.0)
  assert line == '[50] epoch=2, train_loss=1.23457, eta=12m03s'
  assert logs.line(3, {'test_error': 0.5}, None) == '[3] test_error=0.5'


def test_a_failed_write_is_one_os_error_line(tmp_path):
  class Full:

    def write_scalars(self, step, scalars):
      raise RuntimeError('RESOURCE_EXHAUSTED: no space left\nmore detail')

  output = logs.Output(Full(), tmp_path, lambda: 4)
  with pytest.raises(OSError, match=r'no space left\); the latest .* step 4$'):
    output.write(5, {'train_loss': 1.0})
