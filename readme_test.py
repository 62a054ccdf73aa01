"""The README's "Adding a SAM variant", done as a user does it.

The three code blocks are pasted, as printed, into a copy of the repository
(the constructor at the end of sam/methods.py, its line at the top of
METHODS, its knob at the top of configs/base.py's sam section), and train.py
trains the smoke run with the new method from the command line.
"""

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap

_SKIPPED = ('.git', '.venv', '.ruff_cache', '__pycache__', '.pytest_cache')


def _insert_after(text: str, anchor: str, line: str, indent: int) -> str:
  """`line` indented by `indent` spaces, after the first line that starts
  with `anchor` (stripped)."""
  lines = text.splitlines(keepends=True)
  at = next(i for i, x in enumerate(lines) if x.strip().startswith(anchor))
  lines.insert(at + 1, textwrap.indent(line, ' ' * indent))
  return ''.join(lines)


def test_the_readme_variant_trains_from_the_command_line(
    tmp_path, repo_dir, readme_sam_variant
):
  constructor, table_line, knob_line = readme_sam_variant
  copy = tmp_path / 'repo'
  shutil.copytree(repo_dir, copy, ignore=shutil.ignore_patterns(*_SKIPPED))
  methods_file = copy / 'sam' / 'methods.py'
  text = methods_file.read_text() + '\n\n' + constructor
  methods_file.write_text(_insert_after(text, 'METHODS: dict[', table_line, 4))
  base_file = copy / 'configs' / 'base.py'
  text = base_file.read_text()
  # The sam section's dict opens two lines below its def.
  at = text.index('def sam_section()')
  head, tail = text[:at], text[at:]
  base_file.write_text(head + _insert_after(tail, '{', knob_line, 10))
  workdir = tmp_path / 'run'
  result = subprocess.run(
      [
          sys.executable,
          'train.py',
          '--config=configs/smoke.py:opt=my_sam',
          '--config.sam.my_knob=0.3',
          f'--workdir={workdir}',
      ],
      cwd=copy,
      capture_output=True,
      text=True,
      timeout=900,
      env={**os.environ, 'PYTHONDONTWRITEBYTECODE': '1'},
  )
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((workdir / 'summary.json').read_text())
  assert summary['config']['sam']['method'] == 'my_sam'
  assert summary['config']['sam']['my_knob'] == 0.3
  # The smoke run's SGD and SAM reach about 20% test error in their one
  # epoch (chance: 90%): a variant that trains lands far below 50%.
  assert summary['finished']
  assert math.isfinite(summary['final']['test_loss'])
  assert summary['final']['test_error'] < 0.5
