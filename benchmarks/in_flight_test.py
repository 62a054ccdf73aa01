"""benchmarks/in_flight.py: its table counts what its runs did, and a bounded
child finishes on the fake devices. No timing is asserted."""

import os
import subprocess
import sys

from benchmarks import in_flight
from sam.run import distributed


def test_summary_counts_hangs_and_times_finished_runs_only():
  runs = [
      {'limit': 0, 'outcome': 'hung', 'wall_s': 61.0},
      {'limit': 0, 'outcome': 'finished', 'wall_s': 7.0},
      {'limit': 8, 'outcome': 'finished', 'wall_s': 6.0},
      {'limit': 8, 'outcome': 'timed out', 'wall_s': 300.0},
      {'limit': 8, 'outcome': 'finished', 'wall_s': 8.0},
  ]
  assert in_flight.summarize(runs) == {
      0: {'runs': 2, 'hung': 1, 'median_finished_s': 7.0},
      8: {'runs': 3, 'hung': 1, 'median_finished_s': 7.0},
  }


def test_a_bounded_child_finishes(repo_dir):
  env = {
      **os.environ,
      'XLA_FLAGS': distributed.cpu_devices_xla_flags(in_flight.DEVICES),
  }
  done = subprocess.run(
      [
          sys.executable,
          '-m',
          'benchmarks.in_flight',
          '--child_limit=8',
          '--calls=300',
          '--read_every=50',
      ],
      cwd=repo_dir,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  assert done.returncode == 0, done.stderr[-2000:]
