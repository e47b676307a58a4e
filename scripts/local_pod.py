r"""Run a multi-process JAX job on this machine, as on a pod: N processes, fake CPU devices each.

  python scripts/local_pod.py --processes=2 --devices_per_process=4 -- \
      python -m experiments.train --config=configs/bert2bert.py:smoke --workdir=/tmp/pod

Every process runs the command after `--` with the environment `edjax.train.distributed` reads
(JAX_COORDINATOR_ADDRESS=127.0.0.1:<free port>, JAX_NUM_PROCESSES, JAX_PROCESS_ID) and
XLA_FLAGS=--xla_force_host_platform_device_count=<devices_per_process>, JAX_PLATFORMS=cpu: one
global mesh of processes x devices_per_process devices, gloo collectives between processes, each
process feeding its own rows of every batch, orbax saving from all, process 0 writing metrics and
the export. That is the command shape of a real pod (README: "Run on a TPU pod / multi-GPU").

Each output line is prefixed `[p0] `, `[p1] `, ...; the pids are printed first. When a process
exits non-zero the others are stopped (SIGTERM, then SIGKILL after --grace_s) and the script exits
with that process's code (128 + N for a process killed by signal N). SIGTERM / SIGINT sent to this
script are forwarded to every process (a simulated pod preemption).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time


def free_port() -> int:
  """A TCP port on 127.0.0.1 nobody listens on right now."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def process_env(index: int, processes: int, devices: int, address: str, base=None) -> dict:
  """The environment of process `index`: coordinator variables and its fake CPU devices (any
  other XLA flags in `base` kept)."""
  env = dict(os.environ if base is None else base)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  env.update(JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES=str(processes),
             JAX_PROCESS_ID=str(index), PYTHONUNBUFFERED="1",
             XLA_FLAGS=" ".join(flags + [f"--xla_force_host_platform_device_count={devices}"]))
  env.setdefault("JAX_PLATFORMS", "cpu")
  return env


def _pump(proc: subprocess.Popen, prefix: str, lock: threading.Lock) -> None:
  for line in iter(proc.stdout.readline, b""):
    with lock:
      sys.stdout.write(prefix + line.decode("utf-8", "replace"))
      sys.stdout.flush()


def exit_code(returncode: int) -> int:
  """A child's return code as a shell reports it: 128 + N when signal N killed it."""
  return 128 - returncode if returncode < 0 else returncode


def run_pod(command: list[str], processes: int, devices_per_process: int, grace_s: float = 10.0,
            port: int = 0) -> int:
  """Starts the processes, streams their output, returns the job's exit code (0 when all
  succeed, else the first failing process's)."""
  address = f"127.0.0.1:{port or free_port()}"
  lock = threading.Lock()
  procs, pumps = [], []
  for i in range(processes):
    proc = subprocess.Popen(command, env=process_env(i, processes, devices_per_process, address),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    procs.append(proc)
    pumps.append(threading.Thread(target=_pump, args=(proc, f"[p{i}] ", lock), daemon=True))
    pumps[-1].start()
    print(f"[pod] p{i}: pid {proc.pid}, coordinator {address}", flush=True)

  def forward(signum, frame):  # a preemption of the pod reaches every process
    del frame
    for p in procs:
      if p.poll() is None:
        p.send_signal(signum)
  previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}

  failed = None
  try:
    while any(p.poll() is None for p in procs):
      failed = next((i for i, p in enumerate(procs) if p.poll() not in (None, 0)), None)
      if failed is not None:
        break
      time.sleep(0.1)
    if failed is None:
      failed = next((i for i, p in enumerate(procs) if p.returncode), None)
    if failed is not None:
      code = exit_code(procs[failed].returncode)
      print(f"[pod] p{failed} exited with {code}: stopping the others", flush=True)
      stop_all(procs, grace_s)
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
    for t in pumps:
      t.join(timeout=5)
  if failed is None:
    return 0
  # a preempted job is preempted as a whole: the failing process's code, not the others'
  return exit_code(procs[failed].returncode)


def stop_all(procs: list[subprocess.Popen], grace_s: float) -> None:
  """SIGTERM to the running processes, SIGKILL to those still running after `grace_s`."""
  for p in procs:
    if p.poll() is None:
      p.terminate()
  deadline = time.monotonic() + grace_s
  for p in procs:
    try:
      p.wait(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
      p.kill()
      p.wait()


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if "--" not in argv:
    print("usage: local_pod.py --processes=N --devices_per_process=K -- COMMAND ...",
          file=sys.stderr)
    return 2
  split = argv.index("--")
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--processes", type=int, default=2)
  parser.add_argument("--devices_per_process", type=int, default=4)
  parser.add_argument("--grace_s", type=float, default=10.0,
                      help="seconds between SIGTERM and SIGKILL when stopping the others")
  parser.add_argument("--port", type=int, default=0, help="coordinator port (0: a free one)")
  args = parser.parse_args(argv[:split])
  command = argv[split + 1:]
  if args.processes < 1 or args.devices_per_process < 1 or not command:
    parser.error("--processes and --devices_per_process must be >= 1, and a command follow --")
  return run_pod(command, args.processes, args.devices_per_process, args.grace_s, args.port)


if __name__ == "__main__":
  sys.exit(main())
