"""Wall-clock timing for the benchmark scripts (`scripts/bench_*.py`): no framework imports."""

from __future__ import annotations

import statistics
import time


def timed(fn, repeats: int):
  """(fn's last output, first-call seconds, median seconds of `repeats` further calls). The
  first call includes tracing and compilation for jitted code; `fn` must block until its result
  is ready (e.g. return a numpy array)."""
  return timed_interleaved({"fn": fn}, repeats)["fn"]


def timed_interleaved(fns: dict, rounds: int) -> dict:
  """{name: (last output, first-call seconds, median seconds)} for callables timed in turns.

  Each fn is called once (the first call, with its compilation), then `rounds` rounds call every
  fn once in the dict's order, so a drift in the machine's speed during the run (other load,
  clock changes) reaches all of them alike; timing one fn's calls and then the next's does not
  (README, Benchmarks: same-run ratios moved by 10-20 % between back-to-back runs). Each fn must
  block until its result is ready.
  """
  outs, firsts, warm = {}, {}, {name: [] for name in fns}
  for name, fn in fns.items():
    t0 = time.perf_counter()
    outs[name] = fn()
    firsts[name] = time.perf_counter() - t0
  for _ in range(rounds):
    for name, fn in fns.items():
      t0 = time.perf_counter()
      outs[name] = fn()
      warm[name].append(time.perf_counter() - t0)
  return {name: (outs[name], firsts[name], statistics.median(warm[name]) if warm[name]
                 else firsts[name]) for name in fns}
