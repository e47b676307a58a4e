"""Compile-only figures for scan_layers and remat (README "Scan and remat").

  .venv/bin/python -m scripts.compile_report [--part scan|donut|all] [--layers 24 --width 256]
                                             [--donut_image 2560x1920 --donut_batch 8]

(run from the repository root: `-m` puts it on sys.path, for `configs`).

scan: wall time to lower + compile one trainer train step (AdamW, the trainer's make_train_step)
  of a BERT2BERT with --layers encoder and decoder layers of --width, scanned vs not, plus
  remat='full' on top of the scanned one. Random params are never made: the state is abstract.
donut: `compiled.memory_analysis()` of one train step of a pod-shaped Donut (donut-base's
  DonutSwin: embed_dim 128, depths 2-2-14-2, window 10; its 4-layer 1024-wide MBart decoder,
  vocab 57525: configs/donut.py's DONUT_BASE_*) at --donut_image, bf16 compute, batch
  --donut_batch over 8 fake CPU devices (FSDP): unscanned with remat none / full, and scanned
  (scan_layers: a Swin stage scans its block pairs) with remat full. Compile only: abstract
  inputs (jax.ShapeDtypeStruct), no step run.
The 8 fake devices and the CPU compiler's memory scheduler are set up here (XLA_FLAGS,
scripts/fake_devices.py) before jax is imported.
"""

from __future__ import annotations

import argparse
import os
import time

from scripts import fake_devices

os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
fake_devices.use_fake_cpu_devices(8)


def _train_step_compiled(model, batch_shapes: dict, mesh_axes: dict, dtype: str):
  """(compiled train step, seconds to lower + compile) on abstract state and batch."""
  import jax
  import ml_collections
  import numpy as np

  from configs import common
  from edjax.train import optimizer as opt_lib
  from edjax.train import partitioning, trainer

  config = common.get_base_config()
  config.compute_dtype = dtype
  config.mesh = ml_collections.ConfigDict(mesh_axes)
  devices = jax.devices()[:int(np.prod(list(mesh_axes.values())))]
  mesh = partitioning.make_mesh(config.mesh, devices)
  rules = tuple(config.logical_axis_rules)
  optimizer = opt_lib.make_optimizer(config.optimizer, 1000)
  layout = trainer.state_layout(model, optimizer, mesh, rules)
  batch_sh = partitioning.batch_sharding(mesh, rules)
  batch = {k: jax.ShapeDtypeStruct(shape, dt, sharding=batch_sh)
           for k, (shape, dt) in batch_shapes.items()}
  step = jax.jit(partitioning.with_activation_sharding(
                     trainer.make_train_step(model, optimizer, config), mesh, rules),
                 in_shardings=(layout.state, batch_sh), donate_argnums=(0,))
  t0 = time.perf_counter()
  compiled = step.lower(layout.abstract, batch).compile()
  return compiled, time.perf_counter() - t0


def scan_report(layers: int, width: int, batch: int = 8, src: int = 128, tgt: int = 32) -> None:
  import jax.numpy as jnp
  import numpy as np

  import edjax
  from edjax.model_configs import join_configs, with_runtime_options
  from edjax.models.encoder_decoder import model_for_config

  enc = edjax.BertConfig(vocab_size=30522, hidden_size=width, num_hidden_layers=layers,
                         num_attention_heads=max(width // 64, 1), intermediate_size=4 * width)
  dec = enc.replace(is_decoder=True, add_cross_attention=True)
  base = join_configs(enc, dec, decoder_start_token_id=101, pad_token_id=0, eos_token_id=102)
  shapes = dict(input_ids=((batch, src), np.int32), attention_mask=((batch, src), np.int32),
                labels=((batch, tgt), np.int32), decoder_attention_mask=((batch, tgt), np.int32))
  print(f"# compile time of one train step: BERT2BERT {layers} + {layers} layers x {width}, "
        f"batch {batch} x ({src} in, {tgt} out), AdamW, fp32, 1 CPU device")
  print("| layout | lower + compile (s) |\n|---|---:|")
  for label, opts in (("unscanned", dict(scan_layers=False)),
                      ("scan_layers=True", dict(scan_layers=True)),
                      ("scan_layers=True, remat=full", dict(scan_layers=True, remat="full"))):
    model = model_for_config(with_runtime_options(base, **opts), dtype=jnp.float32)
    _, seconds = _train_step_compiled(model, shapes, dict(data=1, fsdp=1, tensor=1), "float32")
    print(f"| {label} | {seconds:.1f} |")


def donut_report(image_hw: tuple[int, int], batch: int, tgt: int = 48) -> None:
  import jax.numpy as jnp
  import numpy as np

  from configs.donut import DONUT_BASE_MBART, DONUT_BASE_SWIN
  from edjax.model_configs import config_from_dict, join_configs, with_runtime_options
  from edjax.models.encoder_decoder import model_for_config

  enc = config_from_dict(dict(DONUT_BASE_SWIN, image_size=list(image_hw)))
  dec = config_from_dict(DONUT_BASE_MBART)
  base = join_configs(enc, dec, decoder_start_token_id=0, pad_token_id=1, eos_token_id=2)
  shapes = dict(pixel_values=((batch, 3, *image_hw), np.float32),
                labels=((batch, tgt), np.int32), decoder_attention_mask=((batch, tgt), np.int32))
  gib = 2.0 ** 30
  print(f"# compiled.memory_analysis() of one train step: donut-base shapes (DonutSwin 128, "
        f"2-2-14-2, window 10 -> MBart 4 x 1024, vocab 57525) at {image_hw[0]}x{image_hw[1]}, "
        f"{tgt} target tokens, batch {batch} over 8 fake CPU devices (fsdp=8), bf16 compute")
  print("| layout | remat | arguments (GiB/device) | outputs | temporaries | generated code | "
        "compile (s) |\n|---|---|---:|---:|---:|---:|---:|")
  for scan, remat in ((False, "none"), (False, "full"), (True, "full")):
    model = model_for_config(with_runtime_options(base, remat=remat, scan_layers=scan),
                             dtype=jnp.bfloat16)
    compiled, seconds = _train_step_compiled(model, shapes, dict(data=1, fsdp=8, tensor=1),
                                             "bfloat16")
    mem = compiled.memory_analysis()
    print(f"| {'scanned' if scan else 'unscanned'} | {remat} | "
          f"{mem.argument_size_in_bytes / gib:.2f} | "
          f"{mem.output_size_in_bytes / gib:.2f} | {mem.temp_size_in_bytes / gib:.2f} | "
          f"{mem.generated_code_size_in_bytes / gib:.3f} | {seconds:.0f} |")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--part", default="all", choices=["scan", "donut", "all"])
  parser.add_argument("--layers", type=int, default=24)
  parser.add_argument("--width", type=int, default=256)
  parser.add_argument("--donut_image", default="2560x1920")
  parser.add_argument("--donut_batch", type=int, default=8)  # one image per device, as the pod
  args = parser.parse_args()
  if args.part in ("scan", "all"):
    scan_report(args.layers, args.width)
  if args.part in ("donut", "all"):
    h, w = (int(v) for v in args.donut_image.split("x"))
    donut_report((h, w), args.donut_batch)


if __name__ == "__main__":
  main()
