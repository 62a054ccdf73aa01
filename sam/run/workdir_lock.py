"""One workdir, one run: a lock taken before a run reads or writes its workdir.

Two train.py processes on one workdir (a sweep relaunched while the old one
still runs, a pod job submitted twice) would interleave their metrics and
overwrite each other's checkpoints. The first run holds `workdir/.lock`; a
second one is refused with one line naming the holder and writes nothing.

- Local (or any POSIX) workdir: an `fcntl.flock` on the file, held for the
  life of the process. The kernel releases it when the process dies, even by
  kill -9, so a stale lock cannot outlive its holder. The file also records
  the holder (host, pid, start time), for the refusal's line; a record left
  by a process that died is reported when the next run takes over.
- Cloud Storage (gs://): an object created with the precondition
  ifGenerationMatch=0 (create only if absent), so of two runs exactly one
  creates it. The holder rewrites it every REFRESH_S seconds (each rewrite
  conditional on the generation it last wrote); one not refreshed for
  STALE_S seconds belongs to a run that is gone and is taken over, again
  conditionally, so two runs taking over the same stale lock cannot both win.
  A clean exit deletes it.

Only the primary process (process 0) of a multi-host run holds the lock.
"""

import dataclasses
import fcntl
import json
import os
import socket
import threading
import time
from typing import Any, Protocol

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
# ratio leaves room for a slow write, a busy host and clock skew between
# machines (the age is the object's update time, set by the server, against
# the reader's clock).
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
  """

  host: str
  pid: int
  started: float

  def describe(self) -> str:
    when = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.started))
    return f'pid {self.pid} on {self.host} (since {when})'

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self))


def _this_process() -> Holder:
  return Holder(socket.gethostname(), os.getpid(), time.time())


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
    path = os.fspath(workdir / LOCK_FILE)
    os.makedirs(os.fspath(workdir), exist_ok=True)
    self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _parse(os.pread(self._fd, 4096, 0).decode(errors='replace'))
      os.close(self._fd)
      raise _busy(workdir, holder) from None
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

  def release(self) -> None:
    # An empty file tells the next run that this one ended cleanly.
    os.ftruncate(self._fd, 0)
    fcntl.flock(self._fd, fcntl.LOCK_UN)
    os.close(self._fd)


def _blob(workdir: epath.Path) -> storage.Blob:
  """The lock object of a gs:// workdir (STORAGE_EMULATOR_HOST is honoured
  by the client, for tests)."""
  bucket, _, prefix = str(workdir)[len('gs://') :].partition('/')
  name = f'{prefix.rstrip("/")}/{LOCK_FILE}' if prefix else LOCK_FILE
  return storage.Client().bucket(bucket).blob(name)


def _age_s(blob: storage.Blob) -> float:
  return time.time() - blob.updated.timestamp()


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
    try:
      self._blob.reload()
      holder = _parse(self._blob.download_as_text())
    except google_exceptions.NotFound:
      holder, self._blob.generation = None, 0  # Released meanwhile.
    if self._blob.generation and _age_s(self._blob) < STALE_S:
      raise _busy(workdir, holder)
    try:
      self._blob.upload_from_string(
          self._holder.to_json(), if_generation_match=self._blob.generation
      )
    except google_exceptions.PreconditionFailed:
      raise _busy(workdir, None) from None  # Another run took it first.
    if holder is not None:
      logging.warning(
          'Taking over the lock of workdir %s from %s, not refreshed for '
          'over %.0f s.',
          workdir,
          holder.describe(),
          STALE_S,
      )

  def _refresh(self) -> None:
    while not self._stop.wait(REFRESH_S):
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


def live_holder(workdir: epath.PathLike) -> Any:
  """The holder of `workdir` if a live run holds it, else None; takes no
  lock (for launchers deciding whether to start a run).

  Args:
    workdir: a local path or a gs:// URL.

  Returns:
    A Holder (or True where the holder is not recorded), or None.
  """
  workdir = files.resolve(workdir)
  if str(workdir).startswith('gs://'):
    blob = _blob(workdir)
    try:
      blob.reload()
      text = blob.download_as_text()
    except google_exceptions.NotFound:
      return None
    return (_parse(text) or True) if _age_s(blob) < STALE_S else None
  path = os.fspath(workdir / LOCK_FILE)
  if not os.path.exists(path):
    return None
  fd = os.open(path, os.O_RDONLY)
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
  except BlockingIOError:
    return _parse(os.pread(fd, 4096, 0).decode(errors='replace')) or True
  finally:
    os.close(fd)  # Closing drops the shared lock if it was taken.
  return None
