"""results/FIDELITY.md stays true: every row names tests that exist, cites
the official file and commit it quotes, and is pinned: switching the row's
detail to the other choice (its mutation, results/fidelity_mutations*.py)
makes a named test fail.

Each mutation is one exact text replacement in a source file, applied to a
copy of the repository; the row's test then runs there in a fresh pytest
process and must fail (exit code 1; a collection error, exit code 2, does
not count). The mutations run two at a time, the machine's two cores.
"""

import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
from typing import NamedTuple

import pytest

from results import fidelity_mutations
from results import fidelity_mutations_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE = os.path.join(ROOT, 'results', 'FIDELITY.md')
# A mutated test that still passes after this long is reported as surviving;
# the slowest named test takes about a minute on 2 cores.
TIMEOUT_S = 600
MUTATIONS = fidelity_mutations.MUTATIONS + fidelity_mutations_data.MUTATIONS
# The official code quoted at a commit, or the paper.
CITATION = re.compile(r'@ [0-9a-f]{7}\b|\bpaper\b')


def _rows() -> list[str]:
  with open(TABLE) as f:
    lines = [line.strip() for line in f]
  rows = [line for line in lines if line.startswith('|')]
  # Drop each table's header and separator lines.
  return [
      row
      for row in rows
      if not re.fullmatch(r'\|[\s|:-]+\|', row)
      and not row.startswith('| detail |')
  ]


def _cells(row: str) -> list[str]:
  # `\|` is a literal bar inside a cell (norms: \|\|g\|\|).
  return [cell.strip() for cell in re.split(r'(?<!\\)\|', row)[1:-1]]


def _detail(row: str) -> str:
  return _cells(row)[0]


def _references(row: str) -> list[tuple[str, str]]:
  """(file, test) pairs of a row; `::test` continues the last file."""
  found, last_file = [], None
  for match in re.finditer(r'`([\w/]+_test\.py)?(?:::(\w+))?`', row):
    path, test = match.groups()
    if path is None and test is None:
      continue
    last_file = path or last_file
    found.append((last_file, test or ''))
  return found


def test_the_table_has_a_row_per_recipe_area():
  assert len(_rows()) >= 50


@pytest.mark.parametrize('row', _rows(), ids=_detail)
def test_every_row_names_existing_tests_and_cites_its_source(row):
  references = _references(row)
  assert references, f'no test named in: {row[:80]}'
  for path, test in references:
    assert path is not None, f'a ::test before any file in: {row[:80]}'
    with open(os.path.join(ROOT, path)) as f:
      source = f.read()
    if test:
      assert re.search(rf'^def {test}\(', source, re.M), f'{path}::{test}'
  official = _cells(row)[1]
  assert CITATION.search(official), f'no commit or paper cited: {row[:80]}'


def test_every_row_has_one_mutation():
  details = [_detail(row) for row in _rows()]
  assert len(set(details)) == len(details), 'two rows share a detail'
  mutated = [m.row for m in MUTATIONS]
  assert sorted(mutated) == sorted(details)


@pytest.mark.parametrize('mutation', MUTATIONS, ids=lambda m: m.row)
def test_each_mutation_applies_once_and_targets_a_named_test(mutation):
  with open(os.path.join(ROOT, mutation.path)) as f:
    assert f.read().count(mutation.old) == 1, mutation.path
  assert not mutation.path.endswith('_test.py'), 'mutate the code, not a test'
  (row,) = [r for r in _rows() if _detail(r) == mutation.row]
  path, _, name = mutation.test.partition('::')
  name = name.split('[')[0]
  assert (path, name) in _references(row) or (path, '') in _references(row)


class Outcome(NamedTuple):
  row: str
  returncode: int
  tail: str


def _copy_of_the_repository(destination: str) -> None:
  shutil.copytree(
      ROOT,
      destination,
      ignore=shutil.ignore_patterns(
          '.venv', '.git', '__pycache__', '*.png', '*.pdf'
      ),
  )


def _run_mutated(mutation, workspace: str) -> Outcome:
  """Runs the mutation's test on a mutated copy of the repository."""
  copy = os.path.join(workspace, re.sub(r'\W+', '_', mutation.row))
  _copy_of_the_repository(copy)
  target = os.path.join(copy, mutation.path)
  with open(target) as f:
    source = f.read()
  with open(target, 'w') as f:
    f.write(source.replace(mutation.old, mutation.new))
  try:
    result = subprocess.run(
        [sys.executable, '-m', 'pytest', '-x', '-q', mutation.test],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
  except subprocess.TimeoutExpired:
    return Outcome(mutation.row, -1, 'timed out')
  finally:
    shutil.rmtree(copy, ignore_errors=True)
  return Outcome(mutation.row, result.returncode, result.stdout[-400:])


def test_every_mutation_makes_its_test_fail(tmp_path):
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    outcomes = list(
        pool.map(
            lambda m: _run_mutated(m, str(tmp_path)),
            MUTATIONS,
        )
    )
  survivors = [o for o in outcomes if o.returncode != 1]
  assert not survivors, '\n\n'.join(
      f'{o.row}: exit code {o.returncode}\n{o.tail}' for o in survivors
  )
