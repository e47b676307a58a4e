"""scripts/plan_memory.py compiles one train step on fake devices and prints per-device bytes."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import REPO


def test_plan_memory_prints_per_device_bytes_on_8_fake_devices():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  out = subprocess.run(
      [sys.executable, "-m", "scripts.plan_memory", "--config=configs/bert2bert.py:smoke",
       "--devices=8", "--mesh=data=2,fsdp=4,tensor=1", "--config.batch_size=8", "--hbm_gb=0.001"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "8 fake CPU devices, mesh {'data': 2, 'fsdp': 4, 'tensor': 1}" in out.stdout
  mem = re.search(r"arguments ([\d.]+)\s+outputs ([\d.]+)\s+temporaries ([\d.]+)", out.stdout)
  params = re.search(r"params: ([\d.]+) M", out.stdout)
  assert mem and params, out.stdout
  assert float(params.group(1)) > 1.0  # the smoke model has ~2 M params
  # 0.001 GiB is less than the smoke model's 2 M fp32 params + AdamW moments over 8 devices
  assert "does NOT fit" in out.stdout


def test_plan_memory_rejects_a_bad_mesh():
  out = subprocess.run(
      [sys.executable, "-m", "scripts.plan_memory", "--config=configs/bert2bert.py:smoke",
       "--devices=8", "--mesh=data=2,pipeline=4"],
      cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
      timeout=300)
  assert out.returncode != 0
  assert "--mesh='data=2,pipeline=4'" in out.stderr
