"""Tests for results/spectrum_plot.py."""

import numpy as np
import pytest

from results import spectrum_plot
from sam.analysis import hessian


def _record(nodes, weights):
  estimate = hessian.SpectrumEstimate(
      [np.asarray(nodes)], [np.asarray(weights)]
  )
  return {
      'split': 'train',
      'num_examples': 10,
      'bn_mode': 'eval',
      'summary': {'lambda_max': max(nodes), 'lambda_max_over_lambda_5': 2.0},
      'quadrature': hessian.estimate_to_json(estimate),
  }


def test_overlay_of_two_runs_writes_a_png(tmp_path):
  sam_record = _record([0.0, 0.1, 0.2, 0.3, 0.4, 0.5], [0.9] + [0.02] * 5)
  sgd_record = _record([0.0, 0.5, 1.0, 2.0, 3.0, 5.0], [0.9] + [0.02] * 5)
  path = tmp_path / 'spectra.png'
  spectrum_plot.plot_spectra(
      [('SAM', sam_record), ('SGD', sgd_record)], str(path)
  )
  assert path.stat().st_size > 1000
  with pytest.raises(ValueError, match='empty'):
    spectrum_plot.plot_spectra([], str(path))
