"""Wall-clock timing for the benchmark scripts (`scripts/bench_*.py`): no framework imports."""

from __future__ import annotations

import statistics
import time


def timed(fn, repeats: int):
  """(fn's last output, first-call seconds, median seconds of `repeats` further calls). The
  first call includes tracing and compilation for jitted code; `fn` must block until its result
  is ready (e.g. return a numpy array)."""
  t0 = time.perf_counter()
  out = fn()
  first = time.perf_counter() - t0
  warm = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = fn()
    warm.append(time.perf_counter() - t0)
  return out, first, statistics.median(warm) if warm else first
