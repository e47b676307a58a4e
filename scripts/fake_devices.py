"""XLA_FLAGS for compiling on fake CPU devices as a plan of accelerator memory (set before jax
is imported): scripts/plan_memory.py and scripts/compile_report.py.

`--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED`: jaxlib 0.10's CPU compiler
schedules for concurrency by default, which keeps many independent buffers live at once (a
pod-shaped Donut step: 30.4 GiB of temporaries per 2560 x 1920 image, remat or not); the
memory-minimising scheduler is what TPU / GPU compilers approximate (24.5 GiB without remat,
21.2 with: README, Memory plan). An XLA_FLAGS that already names a CPU scheduler is kept.
"""

from __future__ import annotations

import os

MEMORY_SCHEDULER_FLAG = "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"


def use_fake_cpu_devices(count: int) -> None:
  """Before jax is imported: `count` fake CPU devices (unless XLA_FLAGS already sets a count),
  compiled with the memory scheduler."""
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_force_host_platform_device_count" not in flags:
    flags += f" --xla_force_host_platform_device_count={count}"
  if ("xla_cpu_scheduler_type" not in flags
      and "xla_cpu_enable_concurrency_optimized_scheduler" not in flags):
    flags += " " + MEMORY_SCHEDULER_FLAG
  os.environ["XLA_FLAGS"] = flags.strip()
