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
  return path if '://' in str(path) else path.absolute()


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


def write_json_atomically(path: epath.PathLike, value: Any) -> None:
  """Writes `value` as JSON to a sibling temporary file, then renames it
  over `path`: a reader sees the old record or the new one, never half."""
  path = epath.Path(path)
  temporary = path.with_name(path.name + '.tmp')
  temporary.write_text(json.dumps(value, indent=2, sort_keys=True))
  temporary.replace(path)
