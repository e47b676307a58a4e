"""Atomic file writes: a reader (or a crash) never sees half a file.

Every file edjax writes for a user (exports, configs, predictions, preprocessor configs) goes
through here: the content is written to a temporary name in the same folder, fsynced, then
`os.replace`d into place. New files get the mode the user's umask allows (mkstemp alone would
make them 0600, unreadable by a colleague).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Callable, Mapping


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def _fsync(path: str) -> None:
  with open(path, "rb") as f:
    os.fsync(f.fileno())


def atomic_write(path: str, content: bytes | str | Callable[[str], Any]) -> str:
  """Writes `content` (bytes, text, or a callable that writes the file at the path it is given)
  to `path` atomically; returns the path."""
  path = os.path.abspath(path)
  directory = os.path.dirname(path)
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
  try:
    if callable(content):
      os.close(fd)
      content(tmp)
    else:
      data = content.encode("utf-8") if isinstance(content, str) else content
      with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o666 & ~_umask())
    _fsync(tmp)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path


def atomic_write_dir(out_dir: str, files: Mapping[str, bytes | str | Callable[[str], Any]],
                     last: str = "config.json") -> None:
  """Writes {name: content} into `out_dir` without ever leaving a half-written directory.

  A new directory is built beside it and renamed into place; into an existing directory each file
  is written to a temporary name and replaced, `last` (the file readers look for first) at the end.
  """
  out_dir = os.path.abspath(out_dir)
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  if not os.path.exists(out_dir):
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
    try:
      for name, content in files.items():
        atomic_write(os.path.join(tmp, name), content)
      os.chmod(tmp, 0o777 & ~_umask())
      os.rename(tmp, out_dir)
      return
    finally:
      shutil.rmtree(tmp, ignore_errors=True)
  for name in sorted(files, key=lambda n: n == last):
    atomic_write(os.path.join(out_dir, name), files[name])
