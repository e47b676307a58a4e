"""edjax.testing.timing: the benchmark scripts' timers (call order and medians, no timing asserts)."""

from __future__ import annotations

import pytest

from edjax.testing import timing


def test_timed_interleaved_alternates_the_calls_and_returns_each_ones_last_output():
  calls = []

  def fn(name):
    def call():
      calls.append(name)
      return f"{name}{len(calls)}"
    return call

  out = timing.timed_interleaved({"a": fn("a"), "b": fn("b")}, rounds=3)
  # First calls (compilation) one after the other, then the rounds in turn.
  assert calls == ["a", "b", "a", "b", "a", "b", "a", "b"]
  assert out["a"][0] == "a7" and out["b"][0] == "b8"
  for _, first, median in out.values():
    assert first >= 0.0 and median >= 0.0


def test_timed_interleaved_medians_are_per_function(monkeypatch):
  clock = iter([0.0, 1.0,    # a first: 1 s
                1.0, 1.5,    # b first: 0.5 s
                2.0, 2.2,    # round 1: a 0.2
                3.0, 3.9,    #          b 0.9
                4.0, 4.4,    # round 2: a 0.4
                5.0, 5.1,    #          b 0.1
                6.0, 6.3,    # round 3: a 0.3
                7.0, 7.5])   #          b 0.5
  monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
  out = timing.timed_interleaved({"a": lambda: 1, "b": lambda: 2}, rounds=3)
  assert out["a"][1:] == (pytest.approx(1.0), pytest.approx(0.3))
  assert out["b"][1:] == (pytest.approx(0.5), pytest.approx(0.5))


def test_timed_interleaved_without_rounds_reports_the_first_call():
  out = timing.timed_interleaved({"a": lambda: 3}, rounds=0)
  assert out["a"][0] == 3 and out["a"][1] == out["a"][2]


def test_timed_is_the_one_function_case(monkeypatch):
  clock = iter([0.0, 2.0, 3.0, 3.5, 4.0, 4.1, 5.0, 5.3])  # first 2 s, then 0.5, 0.1, 0.3
  monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
  out, first, median = timing.timed(lambda: "x", 3)
  assert out == "x" and first == pytest.approx(2.0) and median == pytest.approx(0.3)
