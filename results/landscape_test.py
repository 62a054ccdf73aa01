"""Tests for results/landscape.py: the figures of landscape records."""

import json
import subprocess
import sys

import numpy as np
import pytest

from results import landscape


def test_plots_write_pngs(tmp_path):
  record_1d = {
      'split': 'train',
      'coordinates': [[-1.0, 0.0, 1.0]],
      'loss': [1.0, 0.1, 2.0],
  }
  landscape.plot_surface(
      [('SAM', record_1d), ('SGD', record_1d)], str(tmp_path / 'a.png')
  )
  grid = np.linspace(-1, 1, 4)
  record_2d = {
      'split': 'train',
      'coordinates': [grid.tolist()] * 2,
      'loss': (grid[:, None] ** 2 + grid[None] ** 2).tolist(),
  }
  landscape.plot_surface([('SAM', record_2d)], str(tmp_path / 'b.png'))
  assert (tmp_path / 'a.png').stat().st_size > 1000
  assert (tmp_path / 'b.png').stat().st_size > 1000
  with pytest.raises(ValueError, match='mix'):
    landscape.plot_surface(
        [('a', record_1d), ('b', record_2d)], str(tmp_path / 'c.png')
    )


def test_command_line_draws_records_side_by_side(tmp_path, repo_dir):
  record = {
      'method': 'sam',
      'split': 'train',
      'coordinates': [[-1.0, 0.0, 1.0]],
      'loss': [1.0, 0.1, 2.0],
  }
  path = tmp_path / 'a.json'
  path.write_text(json.dumps(record))
  subprocess.run(
      [
          sys.executable,
          '-m',
          'results.landscape',
          f'--inputs={path},{path}',
          '--labels=SAM,SGD',
          f'--output_dir={tmp_path / "figures"}',
      ],
      cwd=repo_dir,
      check=True,
      capture_output=True,
  )
  assert (tmp_path / 'figures' / 'landscape.png').stat().st_size > 1000
  bad = subprocess.run(
      [
          sys.executable,
          '-m',
          'results.landscape',
          f'--inputs={path}',
          '--labels=SAM,SGD',
          f'--output_dir={tmp_path}',
      ],
      cwd=repo_dir,
      capture_output=True,
      text=True,
  )
  assert bad.returncode != 0 and '--labels needs 1 entries' in bad.stderr
