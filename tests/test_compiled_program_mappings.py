"""The suite's guard against the kernel's memory-mapping cap (see conftest.release_compiled_programs).

A worker segfaulted inside XLA once it held vm.max_map_count mappings; the guard relies on
jax.clear_caches() unmapping compiled programs. This checks that it does, on this jax/XLA.
"""

import gc
import sys

import jax
import jax.numpy as jnp
import pytest

from conftest import MAP_COUNT_CLEAR_AT, max_map_count, memory_map_count


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_clear_caches_unmaps_compiled_programs():
  jax.clear_caches()
  gc.collect()
  base = memory_map_count()
  functions = []
  for width in range(1, 41):  # 40 distinct programs, each kept alive by its jitted function
    f = jax.jit(lambda x, width=width: jnp.tanh(x @ x.T).sum() * width)
    f(jnp.ones((3, width))).block_until_ready()
    functions.append(f)
  compiled = memory_map_count()
  assert compiled - base > 40 * 3, (base, compiled)  # several mappings per program
  jax.clear_caches()
  gc.collect()
  released = memory_map_count()
  assert released - base < (compiled - base) / 4, (base, compiled, released)
  assert float(functions[0](jnp.ones((3, 1)))) > 0  # a cleared function still runs (recompiles)


def test_guard_threshold_leaves_room_under_the_cap():
  assert 0 < MAP_COUNT_CLEAR_AT <= max_map_count() // 2
