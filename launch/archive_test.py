"""Tests for launch/archive.py on a scratch git repository."""

import subprocess
import tarfile

import pytest

from launch import archive


@pytest.fixture
def repo(tmp_path):
  def git(*args):
    subprocess.run(
        ['git', *args], cwd=tmp_path, check=True, capture_output=True
    )

  git('init', '-q')
  git('config', 'user.email', 'test@example.com')
  git('config', 'user.name', 'test')
  (tmp_path / '.gitignore').write_text('runs/\n*.pyc\n')
  (tmp_path / 'train.py').write_text('print("committed")\n')
  git('add', '.')
  git('commit', '-qm', 'first')
  return tmp_path


def _names(path):
  with tarfile.open(path) as tar:
    return sorted(tar.getnames())


def test_a_clean_tree_passes_and_archives_the_committed_files(repo, tmp_path):
  assert archive.check_committed(str(repo), allow_dirty=False) == []
  (repo / 'runs').mkdir()
  (repo / 'runs' / 'big.ckpt').write_text('ignored')
  out = tmp_path / 'project.tar.gz'
  assert archive.write_archive(str(repo), str(out)) == 2
  assert _names(out) == ['.gitignore', 'train.py']


def test_uncommitted_changes_are_refused_in_one_line(repo):
  (repo / 'train.py').write_text('print("edited")\n')
  (repo / 'new_module.py').write_text('x = 1\n')
  with pytest.raises(ValueError) as error:
    archive.check_committed(str(repo), allow_dirty=False)
  message = str(error.value)
  assert message.startswith('2 uncommitted changes (')
  assert 'train.py' in message and 'new_module.py' in message
  assert '--allow_dirty' in message and '\n' not in message


def test_allow_dirty_ships_the_working_tree_as_it_is(repo, tmp_path):
  (repo / 'train.py').write_text('print("edited")\n')
  (repo / 'new_module.py').write_text('x = 1\n')
  (repo / 'cache.pyc').write_text('ignored')
  changes = archive.check_committed(str(repo), allow_dirty=True)
  assert sorted(changes) == ['new_module.py', 'train.py']
  out = tmp_path / 'project.tar.gz'
  archive.write_archive(str(repo), str(out))
  assert _names(out) == ['.gitignore', 'new_module.py', 'train.py']
  with tarfile.open(out) as tar:
    edited = tar.extractfile('train.py').read().decode()
  assert edited == 'print("edited")\n'
