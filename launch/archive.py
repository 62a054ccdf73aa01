"""The project as it is on disk, packed for remote workers (launch/tpu.py).

The archive holds every file git tracks or would add (untracked files that
.gitignore does not exclude), as they are in the working tree, so what
runs remotely is what the researcher sees. Uncommitted changes are refused
unless asked for, because a run shipped from an edited tree cannot be
traced back to a commit.
"""

import os
import subprocess
import tarfile


def _git(repo: str, *args: str) -> bytes:
  return subprocess.run(
      ['git', *args], cwd=repo, capture_output=True, check=True
  ).stdout


def uncommitted_changes(repo: str) -> list[str]:
  """Paths with changes not in HEAD (modified, added, deleted, untracked)."""
  entries = _git(repo, 'status', '--porcelain', '-z').split(b'\0')
  return [entry[3:].decode() for entry in entries if entry]


def project_files(repo: str) -> list[str]:
  """Tracked and addable files of the working tree, relative to `repo`."""
  listed = _git(
      repo, 'ls-files', '-z', '--cached', '--others', '--exclude-standard'
  ).split(b'\0')
  names = sorted({name.decode() for name in listed if name})
  return [n for n in names if os.path.isfile(os.path.join(repo, n))]


def check_committed(repo: str, allow_dirty: bool) -> list[str]:
  """The uncommitted changes, if allowed.

  Args:
    repo: the project's root.
    allow_dirty: ship uncommitted changes instead of refusing.

  Returns:
    The changed paths (empty for a clean tree).

  Raises:
    ValueError: one line naming the changes, when they are not allowed.
  """
  changes = uncommitted_changes(repo)
  if changes and not allow_dirty:
    shown = ', '.join(changes[:5]) + (', ...' if len(changes) > 5 else '')
    raise ValueError(
        f'{len(changes)} uncommitted changes ({shown}): commit them, or '
        'pass --allow_dirty to ship the working tree as it is'
    )
  return changes


def write_archive(repo: str, path: str) -> int:
  """Writes the project files of `repo` to a .tar.gz at `path`.

  Returns:
    The number of files archived.
  """
  names = project_files(repo)
  with tarfile.open(path, 'w:gz') as archive:
    for name in names:
      archive.add(os.path.join(repo, name), arcname=name, recursive=False)
  return len(names)
