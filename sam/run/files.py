"""Run state on any filesystem: paths and JSON records through etils.epath.

Every file a run reads or writes (config.json, summary.json, metrics.jsonl,
label_noise.json, checkpoints) goes through these, so a workdir may be a
local folder or a gs:// bucket alike.
"""

import json
from typing import Any

from etils import epath


def resolve(path: str | epath.PathLike) -> epath.Path:
  """An absolute epath.Path: local paths against the working directory,
  URLs (gs://...) as given."""
  path = epath.Path(path)
  return path if is_remote(path) else path.absolute()


def read_json(path: epath.PathLike) -> Any:
  """The JSON value stored at `path`.

  Raises:
    ValueError: naming the file, if it does not hold valid JSON.
  """
  text = epath.Path(path).read_text()
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f'{path} is not valid JSON ({e})') from e


def is_remote(path: epath.PathLike) -> bool:
  """Whether `path` is a URL (gs://...) rather than a local path."""
  return '://' in str(path)


def write_text_atomically(path: epath.PathLike, text: str) -> None:
  """Writes `text` so that a reader sees the old content or the new, never
  half. Locally: a sibling temporary file renamed over `path`. On Cloud
  Storage an upload is already all-or-nothing, and a rename is a copy and a
  delete, so the object is written directly."""
  path = epath.Path(path)
  if is_remote(path):
    path.write_text(text)
    return
  temporary = path.with_name(path.name + '.tmp')
  temporary.write_text(text)
  temporary.replace(path)


def write_json_atomically(path: epath.PathLike, value: Any) -> None:
  """Writes `value` as JSON with `write_text_atomically`."""
  write_text_atomically(path, json.dumps(value, indent=2, sort_keys=True))
