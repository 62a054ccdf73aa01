"""results/FIDELITY.md stays true: every row names a test that exists."""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE = os.path.join(ROOT, 'results', 'FIDELITY.md')


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
  assert len(_rows()) >= 40


@pytest.mark.parametrize('row', _rows(), ids=lambda r: r.split('|')[1].strip())
def test_every_row_names_existing_tests(row):
  references = _references(row)
  assert references, f'no test named in: {row[:80]}'
  for path, test in references:
    assert path is not None, f'a ::test before any file in: {row[:80]}'
    with open(os.path.join(ROOT, path)) as f:
      source = f.read()
    if test:
      assert re.search(rf'^def {test}\(', source, re.M), f'{path}::{test}'
