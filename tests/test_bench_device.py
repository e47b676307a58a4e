"""scripts/bench_device.sh --cpu: the accelerator benchmark runs end to end on tiny CPU shapes."""

from __future__ import annotations

import os
import re
import subprocess

from conftest import REPO


def test_bench_device_cpu_prints_the_train_and_generate_tables():
  out = subprocess.run(["bash", "scripts/bench_device.sh", "--cpu"], cwd=REPO,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  train = re.search(r"^\| bert2bert tiny 2x64 \| 4 \| 64 -> 32 \| ([\d.]+) \| ([\d.]+) \| ([\d,]+) "
                    r"\| [\d.]+ \| n/a \(no peak for this device\) \|$", out.stdout, re.M)
  assert train and float(train.group(2)) > 0, out.stdout
  beam = re.search(r"^\| batch 2 x 4 beams, 32 -> 8 \| [\d.]+ \| ([\d.]+) \| ([\d.]+) \| "
                   r"([\d.]+)x \| (True|False) \|$", out.stdout, re.M)
  assert beam, out.stdout
  # Same random-init weights in both frameworks: on the CPU in fp32 the beams agree.
  assert beam.group(4) == "True", out.stdout
