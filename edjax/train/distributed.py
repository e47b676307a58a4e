"""Multi-process setup: `jax.distributed.initialize` from the config or the environment.

A job of N processes (a TPU pod's hosts, GPU hosts, or `scripts/local_pod.py` on one machine)
calls `initialize(config)` before anything touches a JAX backend. Where the coordinator comes from:

- the environment: JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and
  JAX_PROCESS_ID, as `scripts/local_pod.py` and a multi-host GPU launch set them. Setting them
  alone turns distributed mode on;
- else `config.distributed=True` with nothing set: JAX's own cluster detection (TPU pods, SLURM,
  Open MPI, GKE), i.e. `jax.distributed.initialize()` without arguments.

On CPU the cross-process collectives are gloo (`jax_cpu_collectives_implementation`). A process
other than 0 first checks that it can open a TCP connection to the coordinator within
`EDJAX_COORDINATOR_TIMEOUT` seconds (default 60): JAX itself aborts the whole process (SIGABRT,
a C++ stack trace) when the coordinator does not answer, so the check turns that into one
DistributedError naming the address.
"""

from __future__ import annotations

import logging
import os
import socket
import time

import jax

from edjax.train.workdir import TrainingError

log = logging.getLogger("edjax")

ADDRESS_ENV, NUM_PROCESSES_ENV, PROCESS_ID_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
                                                  "JAX_PROCESS_ID")
TIMEOUT_ENV = "EDJAX_COORDINATOR_TIMEOUT"


class DistributedError(TrainingError):
  """The multi-process job cannot start: a bad environment or an unreachable coordinator."""


def env_settings(environ=None) -> dict | None:
  """{coordinator_address, num_processes, process_id} from the environment, or None when
  JAX_COORDINATOR_ADDRESS is unset. DistributedError for a partial or malformed setting."""
  environ = os.environ if environ is None else environ
  address = environ.get(ADDRESS_ENV, "")
  if not address:
    return None
  try:
    num, pid = int(environ[NUM_PROCESSES_ENV]), int(environ[PROCESS_ID_ENV])
  except (KeyError, ValueError) as e:
    raise DistributedError(f"{ADDRESS_ENV}={address} is set, so {NUM_PROCESSES_ENV} and "
                           f"{PROCESS_ID_ENV} must be integers too (got {NUM_PROCESSES_ENV}="
                           f"{environ.get(NUM_PROCESSES_ENV)!r}, {PROCESS_ID_ENV}="
                           f"{environ.get(PROCESS_ID_ENV)!r})") from e
  if num < 1 or not 0 <= pid < num:
    raise DistributedError(f"{PROCESS_ID_ENV}={pid} is not in [0, {NUM_PROCESSES_ENV}={num})")
  if ":" not in address:
    raise DistributedError(f"{ADDRESS_ENV}={address!r}: use host:port of process 0")
  return dict(coordinator_address=address, num_processes=num, process_id=pid)


def wait_for_coordinator(address: str, timeout_s: float) -> None:
  """Returns once a TCP connection to `address` (host:port) opens; DistributedError naming it
  when none does within `timeout_s` seconds (retried every 0.25 s, as process 0 may start
  later)."""
  host, port = address.rsplit(":", 1)
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
        return
    except OSError as e:
      if time.monotonic() >= deadline:
        raise DistributedError(
            f"cannot reach the coordinator at {address} within {timeout_s:g} s ({e}): start "
            f"process 0 there, or fix {ADDRESS_ENV} (host:port of process 0, reachable from "
            f"this host); {TIMEOUT_ENV} sets the wait") from e
      time.sleep(0.25)


def initialize(distributed: bool = False) -> bool:
  """Starts JAX's distributed runtime when the environment or `distributed` asks for it
  (see the module docstring); True when it did. Call it once, before any JAX computation."""
  settings = env_settings()
  if settings is None and not distributed:
    return False
  if jax.distributed.is_initialized():
    return True
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives (no-op on
  # TPU / GPU, which use their own)
  if settings is None:  # a TPU pod, SLURM, ...: JAX finds the coordinator itself
    jax.distributed.initialize()
  else:
    timeout = float(os.environ.get(TIMEOUT_ENV, 60))
    if settings["process_id"] != 0:
      wait_for_coordinator(settings["coordinator_address"], timeout)
    jax.distributed.initialize(**settings, initialization_timeout=max(int(timeout), 1))
  log.info("distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
           jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


def barrier(name: str, timeout_s: float = 900.0) -> None:
  """Returns when every process has reached `name` (a no-op in a one-process job).

  A barrier of JAX's coordination service (`wait_at_barrier`, reached through jax._src: JAX has
  no public call for it), not a device collective: CPU collectives (gloo) give up when a peer
  takes over ~30 s to join, so processes that compile at different speeds (a loaded host, a
  persistent-cache hit on one of them) first meet here, after compiling, then run the step."""
  if jax.process_count() == 1:
    return
  from jax._src import distributed as jax_distributed
  jax_distributed.global_state.client.wait_at_barrier(name, int(timeout_s * 1000))


def host_values(tree):
  """Every array of `tree` as one numpy array of its global value, on every process (a
  collective in multi-process runs: call it on all of them), e.g. sharded params for export."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(tree, tiled=True)
