"""benchmarks/cond_conv.py: its programs agree and its HLO reader finds the
convolutions where they are. No timing is asserted."""

import numpy as np
import pytest

from benchmarks import cond_conv


@pytest.fixture(scope='module')
def inputs():
  return cond_conv.make_inputs(batch=2, size=6, channels=4, window=3)


@pytest.mark.parametrize('op', sorted(cond_conv.OPS))
def test_every_program_computes_the_op_on_the_first_inputs(inputs, op):
  a, b, p = inputs
  want = np.asarray(cond_conv.OPS[op](*a))
  for variant in cond_conv.VARIANTS:
    got = np.asarray(cond_conv.program(variant, op)(a, b, p))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=variant)


@pytest.mark.parametrize('window', [2, 3])
def test_the_kernel_grad_by_hand_is_the_kernel_grad(window):
  a, _, _ = cond_conv.make_inputs(batch=2, size=5, channels=3, window=window)
  np.testing.assert_allclose(
      cond_conv.kernel_grad_by_hand(*a),
      cond_conv.kernel_grad(*a),
      rtol=1e-5,
      atol=1e-5,
  )


def test_the_hlo_reader_places_each_convolution(inputs):
  a, b, p = inputs

  def sites(variant):
    exe = cond_conv.program(variant, 'kernel_grad').lower(a, b, p).compile()
    return cond_conv.conv_sites(exe.as_text())

  plain, cond, loop, select = (
      sites(v) for v in ('plain', 'cond', 'while', 'select')
  )
  assert [s.where for s in plain] == ['entry']
  assert [s.where for s in select] == ['entry', 'entry']
  assert [s.where for s in cond] == ['conditional branch < entry'] * 2
  assert [s.where for s in loop] == ['while body < entry']
  for site in plain + cond + loop + select:
    assert 'convolution(' in site.line and site.dim_labels, site
    assert 'metadata=' not in site.line
