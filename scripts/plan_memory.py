r"""Memory plan of one train step: compile it on N fake devices, print per-device bytes.

  .venv/bin/python -m scripts.plan_memory --config=configs/bert2bert.py:cnn_dailymail_shape \
      --devices=16 --mesh=data=1,fsdp=16,tensor=1 [--hbm_gb=16] [--config.model.remat=full]

(run from the repository root: `-m` puts it on sys.path, for `configs`).

The trainer's own pieces build the step (`trainer.state_layout`, `trainer.make_train_step`, the
mesh and batch sharding of `edjax.train.partitioning`), so what compiles here is what a run
compiles, for the config's model, optimizer, batch size, grad_accum_steps, compute dtype and the
runtime options (`config.model.scan_layers`, `remat`, `attention_impl`). Nothing is read but
config.json files: the params, optimizer state and batch are abstract (jax.ShapeDtypeStruct),
no weights are made and no step runs. A warm-start config's architecture comes from its
checkpoints' config.json (offline: give model.encoder_config / decoder_config dicts, as the
`*_shape` variants do).

Prints XLA's `compiled.memory_analysis()` per device: arguments (params + optimizer state + the
batch shard), outputs (the new state: donated, so it aliases the arguments), temporaries
(activations and gradients) and the generated code, then the peak estimate = arguments +
temporaries + code (outputs alias the donated arguments) against --hbm_gb. The fake devices are
CPU devices: XLA's CPU compiler schedules and fuses differently from TPU / GPU, so read the
figures as a plan (which layout fits, what remat buys), not as the exact HBM use. The CPU
compiler runs with its memory-minimising scheduler (`scripts/fake_devices.py`), the closer
stand-in for an accelerator's.
"""

from __future__ import annotations

import os
import sys
import time

from scripts import fake_devices


def _devices_from_argv(argv: list[str]) -> int:
  """--devices=N (read before jax is imported: XLA_FLAGS must be set first)."""
  for i, arg in enumerate(argv):
    if arg.startswith("--devices="):
      return int(arg.split("=", 1)[1])
    if arg == "--devices" and i + 1 < len(argv):
      return int(argv[i + 1])
  return 8


os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
fake_devices.use_fake_cpu_devices(_devices_from_argv(sys.argv))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from edjax import data as data_lib  # noqa: E402
from edjax.model_configs import ConfigError, with_runtime_options  # noqa: E402
from edjax.models.encoder_decoder import model_for_config  # noqa: E402
from edjax.train import optimizer as opt_lib  # noqa: E402
from edjax.train import partitioning, trainer  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "configs/<name>.py[:variant]", lock_config=False)
flags.DEFINE_integer("devices", 8, "Fake CPU devices to compile for.")
flags.DEFINE_string("mesh", "", "data=..,fsdp=..,tensor=.. (default: the config's mesh).")
flags.DEFINE_float("hbm_gb", 16.0, "Per-device memory to check the plan against (GiB).")
flags.mark_flags_as_required(["config"])

GIB = float(1 << 30)


def parse_mesh(text: str, base) -> dict:
  """'data=1,fsdp=16,tensor=1' -> {data, fsdp, tensor} over the config's mesh defaults."""
  mesh = dict(base)
  for part in filter(None, text.split(",")):
    key, _, value = part.partition("=")
    if key not in partitioning.MESH_AXES or not value.lstrip("-").isdigit():
      raise ConfigError(f"--mesh={text!r}: use data=N,fsdp=N,tensor=N (axes "
                        f"{partitioning.MESH_AXES})")
    mesh[key] = int(value)
  return mesh


def abstract_model(config):
  """The config's model, built from config dicts / config.json files only (no weights)."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.model.random_init = True  # the architecture of the warm start, no weights read
  both = trainer.random_init_config(config)
  m = config.model
  # the special ids come from the tokenizer in a run; any valid ids give the same shapes
  both = both.replace(decoder_start_token_id=both.decoder_start_token_id or 1,
                      pad_token_id=both.pad_token_id or 0, eos_token_id=both.eos_token_id or 2)
  both = with_runtime_options(both, scan_layers=m.get("scan_layers"), remat=m.get("remat"),
                              attention_impl=m.get("attention_impl"))
  dtype = jnp.bfloat16 if config.compute_dtype == "bfloat16" else jnp.float32
  return model_for_config(both, dtype=dtype)


def batch_shapes(config, model) -> dict:
  """{key: (shape, dtype)} of one global batch, as the data pipeline makes it (unpacked)."""
  b, tgt = config.batch_size, config.data.max_target_length
  shapes = dict(labels=((b, tgt), np.int32), decoder_attention_mask=((b, tgt), np.int32))
  if data_lib.modality(config.data.name) == "image":
    h, w = model.config.encoder.image_hw
    shapes["pixel_values"] = ((b, model.config.encoder.num_channels, h, w), np.float32)
  else:
    src = config.data.max_source_length
    shapes.update(input_ids=((b, src), np.int32), attention_mask=((b, src), np.int32))
  return shapes


def plan(config, mesh_axes: dict, hbm_gb: float) -> dict:
  """Compiles one train step for `mesh_axes`; returns the per-device byte counts."""
  mesh = partitioning.make_mesh(mesh_axes)
  trainer.check_batch_split(config, mesh)
  model = abstract_model(config)
  rules = tuple(tuple(r) for r in config.logical_axis_rules)
  optimizer = opt_lib.make_optimizer(config.optimizer, config.total_steps,
                                     config.get("freeze", ()))
  layout = trainer.state_layout(model, optimizer, mesh, rules)
  batch_sh = partitioning.batch_sharding(mesh, rules)
  batch = {k: jax.ShapeDtypeStruct(shape, dt, sharding=batch_sh)
           for k, (shape, dt) in batch_shapes(config, model).items()}
  step = jax.jit(partitioning.with_activation_sharding(
                     trainer.make_train_step(model, optimizer, config), mesh, rules),
                 in_shardings=(layout.state, batch_sh), donate_argnums=(0,))
  start = time.perf_counter()
  compiled = step.lower(layout.abstract, batch).compile()
  seconds = time.perf_counter() - start
  mem = compiled.memory_analysis()
  params = sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(model.param_shapes()))
  out = dict(params=params, arguments=mem.argument_size_in_bytes,
             outputs=mem.output_size_in_bytes, temporaries=mem.temp_size_in_bytes,
             code=mem.generated_code_size_in_bytes, compile_s=seconds)
  out["peak"] = out["arguments"] + out["temporaries"] + out["code"]
  out["fits"] = out["peak"] <= hbm_gb * GIB
  return out


def main(argv):
  del argv
  try:
    report(FLAGS.config)
  except ConfigError as e:  # one line naming the problem (EDJAX_DEBUG=1: the traceback)
    if os.environ.get("EDJAX_DEBUG") == "1":
      raise
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


def report(config) -> None:
  """Prints the memory plan of `config` on the flags' devices / mesh."""
  if FLAGS.devices != jax.device_count():
    raise ConfigError(f"--devices={FLAGS.devices} but jax sees {jax.device_count()} devices: "
                      "pass --devices, not XLA_FLAGS")
  mesh_axes = parse_mesh(FLAGS.mesh, config.mesh)
  m = config.model
  print(f"# one train step, batch {config.batch_size} (grad_accum {config.grad_accum_steps}), "
        f"{config.data.max_source_length} -> {config.data.max_target_length} tokens, "
        f"{config.compute_dtype}, optimizer {config.optimizer.get('name', 'adamw')}, "
        f"remat={m.get('remat', 'none')}, scan_layers={m.get('scan_layers', False)}, "
        f"{FLAGS.devices} fake CPU devices, mesh {mesh_axes}")
  r = plan(config, mesh_axes, FLAGS.hbm_gb)
  print(f"params: {r['params'] / 1e6:.1f} M  (compiled in {r['compile_s']:.0f} s)")
  print("per device (GiB): arguments {:.2f}  outputs {:.2f}  temporaries {:.2f}  code {:.3f}"
        .format(r["arguments"] / GIB, r["outputs"] / GIB, r["temporaries"] / GIB, r["code"] / GIB))
  print(f"peak ~ {r['peak'] / GIB:.2f} GiB of {FLAGS.hbm_gb:g} GiB: "
        + ("fits" if r["fits"] else "does NOT fit"))


if __name__ == "__main__":
  app.run(main)
