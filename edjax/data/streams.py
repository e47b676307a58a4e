"""The contracts between datasets and the trainer, their array-backed implementations, and the
helpers every dataset module shares.

Two kinds of training stream, told apart by `random_access` (the trainer reads it, e.g. to know
whether a resumed run may ask for any step):

* random access (`random_access = True`, `IndexedStream`): `batch(step)` is a pure function of
  (seed, step), any step in any order; resuming at step k costs nothing. Every text dataset and
  rendered_ocr: their examples are indexed in host memory (tokens, or images rendered on demand).
* forward only (`random_access = False`, e.g. `coco_captions.CocoTrainStream` over tf.data):
  steps must come in ascending order; a repeated step returns the same batch, a jump ahead seeks
  by reading forward, a step below the last raises ValueError. The batches still depend on
  (seed, step) only, so a resumed run sees what an uninterrupted one would.

Either way `batch(step)` returns this host's rows [p*G/P, (p+1)*G/P) of global batch `step`, a
dict of numpy arrays of static shapes (one compiled train step), and every host gets the same
number of rows. The eval side is one `EvalSet`: a fixed, ordered list of examples and their padded
`batches`, the same on every host.
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class Rows(Protocol):
  """N examples addressable by index: the data behind an `IndexedStream` / `EvalSet`."""

  def __len__(self) -> int: ...

  def rows(self, idx: np.ndarray) -> dict[str, np.ndarray]:
    """The model batch of examples idx [n]: a dict of arrays with leading dimension n."""


@runtime_checkable
class TrainStream(Protocol):
  """This host's slice of each global training batch (see the module docstring).

  random_access: True when `batch` takes any step in any order, False for a forward-only stream.
  steps_per_epoch: global batches per epoch (a float for `IndexedStream`, whose batches cross epoch
  ends; an int for streams that drop the incomplete last batch).
  """
  random_access: bool
  global_batch_size: int
  local_batch_size: int
  seed: int
  process_index: int
  process_count: int

  @property
  def steps_per_epoch(self) -> float: ...

  def epoch(self, step: int) -> float:
    """Epochs completed at the start of global batch `step`."""

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """This host's rows of global batch `step` (local_batch_size of them)."""


# ----------------------------------------------------------------------------- shared helpers


def config_value(cfg, key: str, default):
  """cfg[key] (a ConfigDict, dict or object), with missing / None / "" meaning `default`."""
  value = cfg.get(key, None) if hasattr(cfg, "get") else getattr(cfg, key, None)
  if value is None or (isinstance(value, str) and value == ""):
    return default
  return value


def positive_int(cfg, key: str, default: int, minimum: int = 1) -> int:
  """config_value(cfg, key, default) checked to be an integer >= minimum (ValueError otherwise)."""
  value = config_value(cfg, key, default)
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"data.{key} must be an integer >= {minimum}, got {value!r}")
  return int(value)


def base_name(name: str) -> str:
  """A dataset name without its tfds config / version: 'cnn_dailymail:3.4.0' -> 'cnn_dailymail'."""
  return name.split(":")[0].split("/")[0]


def check_sharding(batch_size: int, process_index: int, process_count: int,
                   what: str = "global_batch_size") -> None:
  """Raises ValueError unless each of process_count hosts gets batch_size / process_count rows."""
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is not in [0, process_count={process_count})")
  if batch_size < 1:
    raise ValueError(f"{what} must be >= 1, got {batch_size}")
  if batch_size % process_count:
    raise ValueError(f"{what} {batch_size} is not divisible by process_count {process_count}: "
                     "every host must get the same number of rows")


def check_seed(seed) -> None:
  """Raises ValueError unless `seed` is a non-negative integer."""
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


# ----------------------------------------------------------------------------- random access


class IndexedStream:
  """Random-access training stream over `Rows`: `batch(step)` depends on (seed, step) only.

  Epoch e is the permutation `np.random.default_rng((seed, e))` of the N examples; global batch k
  is examples [k*G, (k+1)*G) of the concatenated epoch permutations (a batch that crosses an epoch
  end continues in the next epoch), and host p of P takes rows [p*G/P, (p+1)*G/P) of it: O(G/P)
  random access, no iterator state, every example once per epoch. Attributes: data, num_examples,
  global_batch_size, local_batch_size, seed, process_index, process_count, steps_per_epoch
  (num_examples / global_batch_size, a float).
  """

  random_access = True

  def __init__(self, data: Rows, *, global_batch_size: int, seed: int,
               process_index: int = 0, process_count: int = 1):
    check_sharding(global_batch_size, process_index, process_count)
    if len(data) == 0:
      raise ValueError("the training set is empty")
    check_seed(seed)
    self.data = data
    self.num_examples = len(data)
    self.global_batch_size = int(global_batch_size)
    self.local_batch_size = self.global_batch_size // process_count
    self.seed = int(seed)
    self.process_index = int(process_index)
    self.process_count = int(process_count)
    self.steps_per_epoch = self.num_examples / self.global_batch_size
    self._perms: dict[int, np.ndarray] = {}

  def permutation(self, epoch: int) -> np.ndarray:
    """The example order of `epoch`: `default_rng((seed, epoch)).permutation(num_examples)`."""
    perm = self._perms.get(epoch)
    if perm is None:
      if len(self._perms) >= 4:  # a batch spans at most a few epochs; keep memory flat
        self._perms.pop(next(iter(self._perms)))
      perm = np.random.default_rng((self.seed, epoch)).permutation(self.num_examples)
      self._perms[epoch] = perm
    return perm

  def indices(self, step: int) -> np.ndarray:
    """Example indices of this host's rows of global batch `step` [local_batch_size]."""
    if int(step) < 0:
      raise ValueError(f"step must be >= 0, got {step}")
    first = int(step) * self.global_batch_size + self.process_index * self.local_batch_size
    flat = first + np.arange(self.local_batch_size, dtype=np.int64)
    epochs, positions = np.divmod(flat, self.num_examples)
    out = np.empty(self.local_batch_size, np.int64)
    for epoch in np.unique(epochs):
      sel = epochs == epoch
      out[sel] = self.permutation(int(epoch))[positions[sel]]
    return out

  def epoch(self, step: int) -> float:
    """Epochs completed at the start of global batch `step` (fractional)."""
    return int(step) * self.global_batch_size / self.num_examples

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """This host's rows of global batch `step`: `data.rows(indices(step))`."""
    return self.data.rows(self.indices(step))

  def __repr__(self) -> str:
    return (f"IndexedStream(num_examples={self.num_examples}, global_batch_size="
            f"{self.global_batch_size}, local_batch_size={self.local_batch_size}, seed={self.seed}, "
            f"process {self.process_index}/{self.process_count})")


# ----------------------------------------------------------------------------- eval


class EvalSet:
  """The fixed eval subset: raw `examples` and their padded `batches`, the same on every host.

  examples: list of (source, target) pairs (a source is a text, or an image's id for image
  datasets); references: what predictions are scored against, one string per example (the
  targets, by default) or a list of strings per example (multi-reference sets override it).
  """

  def __init__(self, examples: Sequence[tuple[str, str]], data: Rows, *,
               references: Sequence[Any] | None = None, process_index: int = 0,
               process_count: int = 1):
    if len(examples) != len(data):
      raise ValueError(f"{len(examples)} examples but {len(data)} rows of data")
    if references is not None and len(references) != len(examples):
      raise ValueError(f"{len(references)} references for {len(examples)} examples")
    self.examples = list(examples)
    self.data = data
    self._references = None if references is None else list(references)
    self.process_index = process_index
    self.process_count = process_count

  def __len__(self) -> int:
    return len(self.examples)

  @property
  def references(self) -> list:
    """One reference per example: the target text, or the list given at construction."""
    if self._references is None:
      return [t for _, t in self.examples]
    return [list(r) if isinstance(r, (list, tuple)) else r for r in self._references]

  def num_batches(self, batch_size: int) -> int:
    """How many batches `batches(batch_size)` yields."""
    return -(-len(self.examples) // batch_size)

  def rows(self, idx: np.ndarray) -> dict[str, np.ndarray]:
    """The model inputs / labels of examples idx (`data.rows`)."""
    return self.data.rows(idx)

  def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Batches of `batch_size` rows over `examples` in order, the last one padded.

    Keys: those of the training batches plus `valid` [b] int32 (1 = real row, 0 = padding; padding
    rows repeat the batch's first example so that no row is degenerate) and `index` [b] int32
    (position in `examples`). Every host gets the whole batch.
    """
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(self.examples)
    for start in range(0, n, batch_size):
      idx = np.arange(start, min(start + batch_size, n))
      valid = np.ones(batch_size, np.int32)
      valid[len(idx):] = 0
      idx = np.concatenate([idx, np.full(batch_size - len(idx), start)])  # [batch_size]
      batch = self.rows(idx)
      batch["valid"] = valid
      batch["index"] = idx.astype(np.int32)
      yield batch
