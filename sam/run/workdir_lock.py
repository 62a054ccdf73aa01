"""One workdir, one run: a lock taken before a run reads or writes its workdir.

Two train.py processes on one workdir (a sweep relaunched while the old one
still runs, a pod job submitted twice) would interleave their metrics and
overwrite each other's checkpoints. The first run holds `workdir/.lock`; a
second one is refused with one line naming the holder and writes nothing.

- Local (or any POSIX) workdir: an `fcntl.flock` on the file, held for the
  life of the process. The kernel releases it when the process dies, even by
  kill -9, so a stale lock cannot outlive its holder. The file also records
  the holder (host, pid, start time), for the refusal's line; a clean end
  removes it, and one left by a process that died is reported when the next
  run takes over. A run refused or failing before it writes anything leaves
  the workdir as it found it.
- Cloud Storage (gs://): an object created with the precondition
  ifGenerationMatch=0 (create only if absent), so of two runs exactly one
  creates it. The holder rewrites it every REFRESH_S seconds (each rewrite
  conditional on the generation it last wrote, with the time of the rewrite
  in the record). One not refreshed for STALE_S seconds belongs to a run that
  is gone, and so does one whose holder ran on this host under a pid that no
  longer exists (a rerun after kill -9 need not wait). Such a lock is taken
  over, again conditionally, so two runs taking over the same stale lock
  cannot both win. A clean exit deletes it.

Only the primary process (process 0) of a multi-host run holds the lock.
"""

import dataclasses
import fcntl
import json
import os
import socket
import threading
import time
from typing import Protocol

from absl import logging
from etils import epath
from google.api_core import exceptions as google_exceptions
from google.cloud import storage

from sam.run import files

LOCK_FILE = '.lock'
# The exit status of a train.py refused because its workdir is in use
# (EX_TEMPFAIL: try again once the holder has finished); launch.sweep reports
# such a run as live elsewhere, not as failed.
BUSY_EXIT_CODE = 75
# Cloud Storage: how often the holder rewrites its lock object, and how long
# an object may go without a rewrite before its holder counts as gone. The
# ratio leaves room for slow writes, a busy host and clock skew between the
# holder's machine (which stamps each rewrite) and the reader's.
REFRESH_S = 30.0
STALE_S = 300.0


class WorkdirBusyError(RuntimeError):
  """Another live run holds the workdir."""


@dataclasses.dataclass(frozen=True)
class Holder:
  """Who holds (or last held) a workdir.

  Attributes:
    host: the holder's host name.
    pid: its process id.
    started: when it took the lock (seconds since the epoch).
    refreshed: when it last rewrote a Cloud Storage lock.
  """

  host: str
  pid: int
  started: float
  refreshed: float = 0.0

  def describe(self) -> str:
    when = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.started))
    return f'pid {self.pid} on {self.host} (since {when})'

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self))


def _this_process() -> Holder:
  now = time.time()
  return Holder(socket.gethostname(), os.getpid(), now, now)


def _parse(text: str) -> Holder | None:
  try:
    return Holder(**json.loads(text))
  except (ValueError, TypeError):
    return None  # Empty (released cleanly) or not ours.


class Lock(Protocol):
  """A held workdir lock."""

  def release(self) -> None:
    ...


def _busy(workdir, holder: Holder | None) -> WorkdirBusyError:
  who = holder.describe() if holder else 'another process'
  return WorkdirBusyError(
      f'workdir {str(workdir)!r} is in use by a live run: {who}; wait for it '
      'to finish, stop it, or use another workdir'
  )


class LocalLock:
  """An flock on `workdir/.lock` (see the module doc)."""

  def __init__(self, workdir: epath.Path):
    self._workdir = os.fspath(workdir)
    self._path = os.path.join(self._workdir, LOCK_FILE)
    self._created_workdir = not os.path.exists(self._workdir)
    os.makedirs(self._workdir, exist_ok=True)
    while True:
      self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = _parse(os.pread(self._fd, 4096, 0).decode(errors='replace'))
        os.close(self._fd)
        self._remove_created_workdir()
        raise _busy(workdir, holder) from None
      # A holder that released between our open and our flock removed the
      # file we locked; lock the one now at the path instead.
      if _same_file(self._fd, self._path):
        break
      os.close(self._fd)
    previous = _parse(os.pread(self._fd, 4096, 0).decode(errors='replace'))
    if previous is not None:
      logging.warning(
          'Taking over the lock of workdir %s from %s, which ended without '
          'releasing it.',
          workdir,
          previous.describe(),
      )
    os.ftruncate(self._fd, 0)
    os.pwrite(self._fd, _this_process().to_json().encode(), 0)
    os.fsync(self._fd)

  def _remove_created_workdir(self) -> None:
    """A run that ends having written nothing leaves no folder behind."""
    if self._created_workdir:
      try:
        os.rmdir(self._workdir)
      except OSError:
        pass  # Not empty: another process wrote there meanwhile.

  def release(self) -> None:
    # Removed while still held, so that no other run can lock this file
    # after us and then lose it (the check in __init__ covers the reverse).
    os.unlink(self._path)
    os.close(self._fd)
    self._remove_created_workdir()


def _same_file(fd: int, path: str) -> bool:
  try:
    return os.path.samestat(os.fstat(fd), os.stat(path))
  except FileNotFoundError:
    return False


def _blob(workdir: epath.Path) -> storage.Blob:
  """The lock object of a gs:// workdir (STORAGE_EMULATOR_HOST is honoured
  by the client, for tests)."""
  bucket, _, prefix = str(workdir)[len('gs://') :].partition('/')
  name = f'{prefix.rstrip("/")}/{LOCK_FILE}' if prefix else LOCK_FILE
  return storage.Client().bucket(bucket).blob(name)


def _holder_is_gone(blob: storage.Blob, holder: Holder | None) -> bool:
  """Whether a lock object's holder has ended: not refreshed for STALE_S
  (by its record, or by the object's update time for a record that is not
  ours), or a process of this host that no longer exists."""
  refreshed = holder.refreshed if holder else blob.updated.timestamp()
  if time.time() - refreshed > STALE_S:
    return True
  if holder is None or holder.host != socket.gethostname():
    return False
  try:
    os.kill(holder.pid, 0)  # Signal 0: only asks whether the pid exists.
  except ProcessLookupError:
    return True
  except PermissionError:
    pass  # It exists, under another user.
  return False


class CloudLock:
  """A lock object on Cloud Storage (see the module doc)."""

  def __init__(self, workdir: epath.Path):
    self._blob = _blob(workdir)
    self._holder = _this_process()
    try:
      self._blob.upload_from_string(
          self._holder.to_json(), if_generation_match=0
      )
    except google_exceptions.PreconditionFailed:
      self._take_over_if_stale(workdir)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._refresh, daemon=True)
    self._thread.start()

  def _take_over_if_stale(self, workdir) -> None:
    """Replaces a lock object whose holder is gone, or raises."""
    try:
      self._blob.reload()
      generation = self._blob.generation
      holder = _parse(
          self._blob.download_as_text(if_generation_match=generation)
      )
    except (google_exceptions.NotFound, google_exceptions.PreconditionFailed):
      # Released (or replaced) in the meantime: the conditional write below
      # settles which run gets it.
      holder, generation = None, 0
    if generation and not _holder_is_gone(self._blob, holder):
      raise _busy(workdir, holder)
    try:
      self._blob.upload_from_string(
          self._holder.to_json(), if_generation_match=generation
      )
    except google_exceptions.PreconditionFailed:
      raise _busy(workdir, None) from None  # Another run took it first.
    if holder is not None:
      logging.warning(
          'Taking over the lock of workdir %s from %s, which is gone.',
          workdir,
          holder.describe(),
      )

  def _refresh(self) -> None:
    while not self._stop.wait(REFRESH_S):
      self._holder = dataclasses.replace(self._holder, refreshed=time.time())
      try:
        self._blob.upload_from_string(
            self._holder.to_json(), if_generation_match=self._blob.generation
        )
      except google_exceptions.PreconditionFailed:
        logging.error(
            'The lock object %s was taken over by another run.',
            self._blob.name,
        )
        return
      except Exception as e:  # pylint: disable=broad-except
        # A transient network error: the next refresh tries again.
        logging.warning('Refreshing the workdir lock failed: %s', e)

  def release(self) -> None:
    self._stop.set()
    self._thread.join()
    try:
      self._blob.delete(if_generation_match=self._blob.generation)
    except google_exceptions.GoogleAPICallError as e:
      logging.warning('Could not delete the workdir lock: %s', e)


def acquire(workdir: epath.PathLike) -> Lock:
  """Takes the lock of `workdir`, or raises naming its live holder.

  Args:
    workdir: a local path or a gs:// URL (created if missing).

  Returns:
    The held lock; `release()` it when the run ends.

  Raises:
    WorkdirBusyError: a live run holds the workdir.
  """
  workdir = files.resolve(workdir)
  if str(workdir).startswith('gs://'):
    return CloudLock(workdir)
  return LocalLock(workdir)


def live_holder(workdir: epath.PathLike) -> str | None:
  """Who holds `workdir`, if a live run does; takes no lock (for launchers
  deciding whether to start a run).

  Args:
    workdir: a local path or a gs:// URL.

  Returns:
    'pid P on HOST (since T)' ('another process' for a record that is not
    ours), or None when no live run holds it.
  """
  workdir = files.resolve(workdir)
  if str(workdir).startswith('gs://'):
    blob = _blob(workdir)
    try:
      blob.reload()
      holder = _parse(blob.download_as_text())
    except google_exceptions.NotFound:
      return None
    if _holder_is_gone(blob, holder):
      return None
  else:
    try:
      fd = os.open(os.fspath(workdir / LOCK_FILE), os.O_RDONLY)
    except FileNotFoundError:
      return None  # Never run, or ended cleanly.
    try:
      fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
      return None  # Closing the file below drops this shared lock.
    except BlockingIOError:
      holder = _parse(os.pread(fd, 4096, 0).decode(errors='replace'))
    finally:
      os.close(fd)
  return holder.describe() if holder else 'another process'
