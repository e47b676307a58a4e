"""The trainer: `train_and_evaluate(config, workdir)` runs (or resumes) one fine-tuning job.

`experiments/train.py` is its command line. In `workdir` it writes config.json, metrics.jsonl
({"step": int, "train/loss": float, ...} every config.log_every_steps), tensorboard/,
checkpoints/ (orbax, every config.checkpoint_every_steps; rerunning resumes params, optimizer
state, step, RNG and data position), predictions_<step>.jsonl at each evaluation and, at the end,
export/ (HF format + tokenizer files, ready for `experiments.predict` and transformers).

Workdir safety (`edjax.train.workdir`): the config is checked before anything loads; one run
holds DIR/.lock at a time; a rerun whose model / optimizer state no longer fits DIR's checkpoints
stops with ConfigMismatchError (the changed keys, old -> new) and touches nothing, only
unreadable checkpoints go to checkpoints.corrupt/; every checkpoint's meta records whether the
loss was healthy, and the NaN/Inf error names the last healthy one for `config.resume_step`.

The module reads top to bottom in the order of a run: config, model and where training starts,
sharding, train step, then `train_and_evaluate` itself (mesh, data, model, sharding, step,
checkpoint, eval, loop). Evaluation is `edjax.train.evaluate`; the loss both share is
`edjax.train.loss`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import edjax
from edjax import data as data_lib
from edjax import fileio
from edjax.model_configs import (RUNTIME_FIELDS, ConfigError, EncoderDecoderConfig,
                                  config_from_dict, join_configs, load_config_file,
                                  with_runtime_options)
from edjax.models.encoder_decoder import model_for_config
from edjax.pretrained import resolve_path
from edjax.processing.images import ImageProcessor
from edjax.processing.tokenizers import TOKENIZER_FILES, Tokenizer
from edjax.train import checkpoint as ckpt_lib
from edjax.train.health import Health, divergence_message, last_healthy  # noqa: F401
from edjax.train import evaluate as eval_lib
from edjax.train import flops as flops_lib
from edjax.train import optimizer as opt_lib
from edjax.train import distributed, partitioning, writers
from edjax.train import preemption
from edjax.train import workdir as workdir_lib
from edjax.train.step import make_train_step
from edjax.train.workdir import ConfigMismatchError, TrainingError, WorkdirBusyError  # noqa: F401

log = logging.getLogger("edjax")

REQUIRED_KEYS = ("total_steps", "log_every_steps", "checkpoint_every_steps", "eval_every_steps",
                 "seed", "batch_size", "mesh", "data", "model", "optimizer", "eval")


class NonFiniteLossError(TrainingError, FloatingPointError):
  """The training loss became NaN or Inf."""


def check_config(config: ml_collections.ConfigDict) -> None:
  """ConfigError (a ValueError) for a config the trainer cannot run, naming the key: missing
  keys, non-positive step counts / batch sizes, a negative learning rate, a bad batch split or
  dtype, eval settings generate would reject, lengths over the model's position tables. Cheap
  (reads config.json files at most), so it runs before any model is loaded."""
  missing = [k for k in REQUIRED_KEYS if k not in config]
  if missing:
    raise ConfigError(f"config lacks {missing}: start from configs.common.get_base_config()")
  for key in ("total_steps", "log_every_steps", "checkpoint_every_steps", "eval_every_steps",
              "batch_size", "grad_accum_steps", "eval.batch_size", "eval.num_beams",
              "eval.max_length"):
    node, *rest = key.split(".")
    value = config[node][rest[0]] if rest else config[node]
    if not isinstance(value, int) or value <= 0:
      raise ConfigError(f"config.{key}={value!r}: must be a positive integer")
  for key in ("learning_rate", "warmup_steps", "weight_decay"):
    if config.optimizer[key] < 0:
      raise ConfigError(f"config.optimizer.{key}={config.optimizer[key]!r}: must be >= 0")
  if config.eval.min_length < 0 or config.eval.min_length > config.eval.max_length:
    raise ConfigError(f"config.eval.min_length={config.eval.min_length}: must be in "
                      f"[0, eval.max_length={config.eval.max_length}]")
  if config.get("resume_step", 0) < 0:
    raise ConfigError(f"config.resume_step={config.resume_step}: a saved step, or 0 (the newest)")
  if config.batch_size % config.grad_accum_steps:
    raise ConfigError(f"batch_size {config.batch_size} is not divisible by grad_accum_steps "
                     f"{config.grad_accum_steps}")
  if config.compute_dtype not in ("float32", "bfloat16"):
    raise ConfigError(f"config.compute_dtype={config.compute_dtype!r}: use 'float32' or 'bfloat16'")
  eval_lib.check_eval_config(config.eval)
  check_lengths(config)


def check_lengths(config) -> None:
  """ConfigError when data.max_source_length / max_target_length or eval.max_length exceed the
  encoder's / decoder's position table (read from the model configs; skipped where a config
  cannot be read cheaply, e.g. a hub id offline: model loading reports that)."""
  try:
    if config.init_from and not is_workdir(config.init_from):
      both = load_config_file(resolve_path(config.init_from))
      enc, dec = both.encoder, both.decoder
    else:
      enc = _part_config(config.model.encoder_config, config.model.encoder)
      dec = _part_config(config.model.decoder_config, config.model.decoder)
  except Exception:  # noqa: BLE001 - the model loader gives the precise error later
    return
  checks = [("data.max_target_length", config.data.max_target_length, dec, "decoder"),
            ("eval.max_length", config.eval.max_length, dec, "decoder")]
  if data_lib.modality(config.data.name) != "image":  # an image encoder's length is its patches
    checks.insert(0, ("data.max_source_length", config.data.max_source_length, enc, "encoder"))
  for key, value, part, name in checks:
    limit = getattr(part, "max_positions", None)
    if isinstance(limit, int) and isinstance(value, int) and value > limit:
      raise ConfigError(f"config.{key}={value} exceeds the {name}'s {limit} positions "
                        f"({part.model_type}): lower it to {limit} or less")


def check_batch_split(config, mesh) -> None:
  """ConfigError when batch_size (or one micro-batch) does not split over the mesh's data x
  fsdp devices, before anything is compiled."""
  shards = int(mesh.shape["data"]) * int(mesh.shape["fsdp"])
  micro = config.batch_size // config.grad_accum_steps
  if micro % shards:
    raise ConfigError(f"config.batch_size={config.batch_size} (micro-batch {micro} with "
                      f"grad_accum_steps={config.grad_accum_steps}) is not divisible by the "
                      f"mesh's data x fsdp = {shards} devices: use a multiple of {shards}")


# ----------------------------------------------------------------------------- model


def is_workdir(path: str) -> bool:
  """True for a training run's workdir (it has checkpoints/), not a model directory."""
  return os.path.isdir(os.path.join(path, "checkpoints"))


def _part_config(config_dict, path: str):
  """A part's model config: its config dict if given, else its checkpoint's config.json."""
  if config_dict:
    return config_from_dict(config_dict.to_dict())
  return load_config_file(resolve_path(path))


def random_init_config(config) -> EncoderDecoderConfig | None:
  """The composite config of a randomly initialised model (model.random_init, or encoder_config
  and decoder_config both given), overrides applied; None when the config asks for a warm start."""
  m = config.model
  if not (m.random_init or (m.encoder_config and m.decoder_config)):
    return None
  enc = _part_config(m.encoder_config, m.encoder).replace(**m.encoder_overrides.to_dict())
  dec = _part_config(m.decoder_config, m.decoder).replace(**m.decoder_overrides.to_dict())
  return join_configs(enc, dec, tie_encoder_decoder=m.tie_encoder_decoder)


def model_runtime_options(config) -> dict:
  """config.model's scan_layers / remat / attention_impl, for both parts of every model built."""
  return {k: config.model.get(k) for k in RUNTIME_FIELDS if config.model.get(k) is not None}


def warm_start(config, ids: dict, dtype):
  """(model, params): `from_encoder_decoder_pretrained(model.encoder, model.decoder)`; a part
  given by its config alone (e.g. a small image encoder) starts from random weights."""
  m = config.model
  runtime = model_runtime_options(config)
  kwargs = {**{f"{part}_{k}": v for part in ("encoder", "decoder") for k, v in runtime.items()},
            **{f"encoder_{k}": v for k, v in m.encoder_overrides.items()},
            **{f"decoder_{k}": v for k, v in m.decoder_overrides.items()}, **ids}
  enc = config_from_dict(m.encoder_config.to_dict()) if m.encoder_config else m.encoder
  dec = config_from_dict(m.decoder_config.to_dict()) if m.decoder_config else m.decoder
  return edjax.from_encoder_decoder_pretrained(enc, dec, rng=config.seed,
                                               tie_encoder_decoder=m.tie_encoder_decoder,
                                               dtype=dtype, **kwargs)


def encoder_model_config(config):
  """The encoder's model config (init_from's config.json, encoder_config, or the encoder
  checkpoint's config.json)."""
  if config.init_from and not is_workdir(config.init_from):
    return load_config_file(resolve_path(config.init_from)).encoder
  return _part_config(config.model.encoder_config, config.model.encoder)


def image_processor_for(config) -> ImageProcessor:
  """data.image_processor (a dir with preprocessor_config.json), else init_from's or the encoder
  checkpoint's preprocessor_config.json, else ViTImageProcessor defaults at the encoder's image
  size (also for DeiT, as TrOCR's processor does: a plain resize never crops a text line's ends)."""
  for path in (config.data.get("image_processor", ""), config.init_from, config.model.encoder):
    if path and os.path.isdir(path) and os.path.exists(os.path.join(path, "preprocessor_config.json")):
      return ImageProcessor.from_dir(path)
  return ImageProcessor.for_image_size(*encoder_model_config(config).image_hw)  # ViT's defaults


# ----------------------------------------------------------------------------- sharding


@dataclasses.dataclass(frozen=True)
class StateLayout:
  """Where the train state {step, params, opt_state, rng} lives: its NamedShardings and the
  abstract arrays (shape, dtype, sharding) that checkpoint restores fill."""
  params: Any  # NamedSharding per param
  state: dict  # {step, params, opt_state, rng} -> NamedSharding(s)
  abstract: dict  # the same tree of jax.ShapeDtypeStruct


def state_layout(model, optimizer, mesh, rules) -> StateLayout:
  """Params sharded by their logical axes and the rules; optimizer moments like their params;
  step, RNG, optimizer counters and factored moments replicated. Params are float32 whatever
  the compute dtype."""
  shapes = model.param_shapes()
  param_sh = partitioning.param_shardings(model.logical_axes(), shapes, mesh, rules)
  rep = partitioning.replicated(mesh)
  opt_shapes = jax.eval_shape(optimizer.init, shapes)
  # moments shaped like their param sharded like it; Adafactor's factored ones replicated
  opt_sh = opt_lib.state_shardings(opt_shapes, param_sh, shapes, rep)
  struct = lambda dtype: (lambda s, sh: jax.ShapeDtypeStruct(s.shape, dtype or s.dtype,  # noqa: E731
                                                              sharding=sh))
  abstract = dict(step=jax.ShapeDtypeStruct((), jnp.int32, sharding=rep),
                  params=jax.tree_util.tree_map(struct(jnp.float32), shapes, param_sh),
                  opt_state=jax.tree_util.tree_map(struct(None), opt_shapes, opt_sh),
                  rng=jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=rep))
  return StateLayout(params=param_sh, state=dict(step=rep, params=param_sh, opt_state=opt_sh,
                                                 rng=rep), abstract=abstract)


def new_state(params, optimizer, seed: int, layout: StateLayout) -> dict:
  """Step 0 of a run that starts from `params`: fresh optimizer state, RNG from the seed."""
  make = lambda p: dict(step=jnp.array(0, jnp.int32), params=p, opt_state=optimizer.init(p),  # noqa: E731
                        rng=jax.random.PRNGKey(seed))
  return jax.jit(make, out_shardings=layout.state)(jax.device_put(params, layout.params))


# ----------------------------------------------------------------------------- where training starts


def start_training(config, ids: dict, dtype, optimizer, mesh, rules, ckpt: ckpt_lib.Checkpointer
                   ) -> tuple[Any, StateLayout, dict, int]:
  """(model, layout, state, start_step): the model and where its training starts.

  The order is important; the first that applies wins:
    1. resume: this workdir's newest checkpoint that restores (params, optimizer state, step,
       RNG, data position), so rerunning a command continues it whatever else the config says;
    2. config.init_from: another run's workdir (its newest params; optimizer, step and RNG start
       fresh) or an HF directory / edjax export (its weights and special ids);
    3. warm start: from_encoder_decoder_pretrained(model.encoder, model.decoder), fresh
       cross-attention;
    4. random init (model.random_init, or encoder_config + decoder_config).
  The architecture comes from 2 (an HF dir / export) or else from 3 / 4 even when resuming (a run
  resumes the model it started with), so it is read first; its weights are used only when
  nothing before them applies. `ids` (the decoder tokenizer's start / eos / pad ids) go into
  the model config of 3 and 4; an init_from checkpoint keeps its own.
  """
  from_run = bool(config.init_from) and is_workdir(config.init_from)
  random_config = random_init_config(config)
  params_fn: Callable[[], Any]
  if config.init_from and not from_run:  # 2. an HF dir or an edjax export
    model, params = edjax.from_pretrained(config.init_from, dtype=dtype,
                                          **model_runtime_options(config))
    params_fn = lambda: params  # noqa: E731
  elif random_config is None:  # 3. warm start
    model, params = warm_start(config, ids, dtype)
    params_fn = lambda: params  # noqa: E731
  else:  # 4. random init
    model = model_for_config(with_runtime_options(random_config.replace(**ids),
                                                  **model_runtime_options(config)), dtype=dtype)
    params_fn = lambda: model.init(config.seed)  # noqa: E731
  layout = state_layout(model, optimizer, mesh, rules)

  restored = restore(config, ckpt, layout)  # 1. resume
  if restored is not None:
    state, meta = restored
    step = int(meta["step"])
    if int(meta.get("data_position", step)) != step:
      raise ckpt_lib.CheckpointError(f"checkpoint meta {meta} has an inconsistent data position")
    log.info("resumed from step %d (%s)", step, ckpt.directory)
    return model, layout, state, step
  if from_run:  # 2. another run's params
    other = ckpt_lib.Checkpointer(os.path.join(config.init_from, "checkpoints"), async_save=False)
    found = other.restore_latest(layout.abstract)
    if found is None:
      raise ckpt_lib.CheckpointError(f"config.init_from={config.init_from}: no restorable "
                                     f"checkpoint in {other.directory}")
    log.info("initialised params from %s (step %s)", other.directory, found[1].get("step"))
    return model, layout, new_state(found[0]["params"], optimizer, config.seed, layout), 0
  return model, layout, new_state(params_fn(), optimizer, config.seed, layout), 0


def restore(config, ckpt: ckpt_lib.Checkpointer, layout: StateLayout):
  """(state, meta) to resume from, or None: the newest checkpoint that restores, or
  config.resume_step's (the steps after it are moved to checkpoints.diverged/; a rerun whose
  newest checkpoint was saved after that resume continues from it, so the flag can stay).
  A checkpoint of another state shape is a ConfigMismatchError naming the changed config keys."""
  step = config.get("resume_step", 0) or None
  if step is not None:
    newest = max(ckpt.all_steps(), default=None)
    if newest is not None and (ckpt.read_meta(newest) or {}).get("resumed_from") == step:
      step = None  # already resumed from it: keep going
  try:
    restored = ckpt.restore_latest(layout.abstract, step=step)
  except ckpt_lib.StateMismatchError as e:
    raise ConfigMismatchError(workdir_lib.mismatch_message(
        config, os.path.dirname(ckpt.directory), e.step, e.differences)) from e
  if restored is not None and step is not None:
    moved = ckpt.move_newer_aside(step)
    log.warning("resume_step=%d: resumed from step %d; moved the later steps %s to %s.diverged",
                step, step, moved, ckpt.directory)
    restored = restored[0], dict(restored[1], resumed_from=step)
  return restored


# ----------------------------------------------------------------------------- health
# Health, last_healthy, divergence_message: edjax.train.health (imported above).


# ----------------------------------------------------------------------------- train step


# ----------------------------------------------------------------------------- export


def copy_tokenizer_files(src: str, dst: str) -> None:
  """Tokenizer files next to the exported weights, so `predict --checkpoint=dst` needs no flag."""
  for name in TOKENIZER_FILES:
    if os.path.exists(os.path.join(src, name)):
      with open(os.path.join(src, name), "rb") as f:
        fileio.atomic_write(os.path.join(dst, name), f.read())


def export(model, params, config, processor, directory: str) -> None:
  """HF format (config.json, model.safetensors, generation_config.json) + the decoder's tokenizer
  files (+ preprocessor_config.json for images): predict.py, transformers and from_pretrained
  read it."""
  model.generation_defaults = {**model.generation_defaults,
                               **eval_lib.export_generation_settings(config.eval)}
  edjax.save_pretrained(model, params, directory)
  copy_tokenizer_files(resolve_path(config.data.decoder_tokenizer or config.data.tokenizer),
                       directory)
  if processor is not None:  # predict.py reads images with the training preprocessing
    processor.save(directory)


# ----------------------------------------------------------------------------- main


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or resumes) training in `workdir`; returns the final eval metrics, with "step" and
  "examples" (three (source, prediction, reference) rows).

  The config is checked before anything is loaded, and the workdir is locked for the run (one
  run per workdir; WorkdirBusyError otherwise). Nothing in the workdir is written before the
  train state is known to fit its checkpoints (ConfigMismatchError otherwise)."""
  if not workdir or not str(workdir).strip():
    raise ConfigError("--workdir is empty: name the directory the run writes to")
  check_config(config)
  distributed.initialize(config.distributed)  # JAX_COORDINATOR_ADDRESS / a pod: N processes
  mesh = partitioning.make_mesh(config.mesh)
  check_batch_split(config, mesh)
  # SIGTERM / SIGINT: save at the current step and raise TrainingPreempted (edjax.train.preemption)
  guard = preemption.PreemptionGuard(config.get("preemption_check_every_steps", 1),
                                     config.get("checkpoint_every_minutes", 0))
  if jax.process_index() != 0:
    with guard:
      return _train_and_evaluate(config, workdir, mesh, guard)
  with workdir_lib.WorkdirLock(workdir), guard:
    return _train_and_evaluate(config, workdir, mesh, guard)


def _train_and_evaluate(config, workdir: str, mesh, guard: preemption.PreemptionGuard) -> dict:
  """train_and_evaluate once the config is checked and the workdir locked."""
  is_main = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)

  # --- mesh
  rules = tuple(tuple(r) for r in config.logical_axis_rules)
  log.info("mesh %s over %d devices", dict(mesh.shape), mesh.devices.size)

  # --- data
  t_load = time.monotonic()
  enc_tok = Tokenizer.from_dir(resolve_path(config.data.tokenizer, "tokenizer directory"))
  dec_tok = (Tokenizer.from_dir(resolve_path(config.data.decoder_tokenizer, "tokenizer directory"))
             if config.data.decoder_tokenizer else enc_tok)
  vision = data_lib.modality(config.data.name) == "image"  # pixel_values, not input_ids
  processor = image_processor_for(config) if vision else None
  train_stream, eval_set = data_lib.build_dataset(
      config.data, encoder_tokenizer=None if vision else enc_tok, decoder_tokenizer=dec_tok,
      image_processor=processor, global_batch_size=config.batch_size, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count())
  ids = dict(decoder_start_token_id=dec_tok.bos_id, eos_token_id=dec_tok.eos_id,
             pad_token_id=dec_tok.pad_id)
  log.info("loaded data %r in %.1fs; loading the model", config.data.name, time.monotonic() - t_load)
  t_load = time.monotonic()

  # --- model, sharding, checkpoint: where training starts (see start_training)
  dtype = jnp.bfloat16 if config.compute_dtype == "bfloat16" else jnp.float32
  optimizer = opt_lib.make_optimizer(config.optimizer, config.total_steps,
                                     config.get("freeze", ()))
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                               config.checkpoint.max_to_keep, config.checkpoint.async_save)
  try:
    model, layout, state, start_step = start_training(config, ids, dtype, optimizer, mesh, rules,
                                                      ckpt)
  except ConfigMismatchError:
    if not config.get("overwrite_workdir", False):
      raise
    ckpt.close()
    if is_main:
      workdir_lib.move_run_aside(workdir)
    ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                 config.checkpoint.max_to_keep, config.checkpoint.async_save)
    model, layout, state, start_step = start_training(config, ids, dtype, optimizer, mesh, rules,
                                                      ckpt)
  log.info("model ready in %.1fs (%s)", time.monotonic() - t_load,
           f"resumed from step {start_step}" if start_step else "starting at step 0")
  # checkpoints saved after a resume_step restore say so: a rerun with the flag continues them
  resumed_from = {"resumed_from": config.resume_step} if config.get("resume_step", 0) else {}
  if is_main:  # the state fits the workdir: now it is this run's
    fileio.atomic_write(os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2))
  health = Health(config.get("divergence_factor", 10.0))
  batch_sh = partitioning.batch_sharding(mesh, rules)

  def shard_batch(local: dict) -> dict:  # this host's rows -> one global array per key
    return {k: jax.make_array_from_process_local_data(batch_sh, np.asarray(v))
            for k, v in local.items()}

  # --- train step
  rep = partitioning.replicated(mesh)
  train_step = jax.jit(partitioning.with_activation_sharding(
                           make_train_step(model, optimizer, config), mesh, rules),
                       in_shardings=(layout.state, batch_sh), out_shardings=(layout.state, rep),
                       donate_argnums=(0,))

  # --- eval
  metrics_writer, progress_writer = writers.create_writers(workdir, enabled=is_main,
                                                           resume_step=start_step)
  report_progress = writers.create_progress(config.total_steps, config.log_every_steps,
                                            progress_writer, config.eval_every_steps)
  eval_loss_fn = eval_lib.make_eval_loss_fn(model)
  final: dict = {}

  def run_eval(step: int) -> None:
    nonlocal final
    with report_progress.timed("eval"):
      results, rows = eval_lib.evaluate(
          model, state["params"], eval_set, config.eval, dec_tok, loss_fn=eval_loss_fn,
          predictions_path=os.path.join(workdir, f"predictions_{step}.jsonl"))
    metrics_writer.write_scalars(step, results)
    final = dict(results, step=step, examples=rows[:3])

  # --- loop
  schedule = opt_lib.learning_rate_schedule(config.optimizer.learning_rate,
                                            config.optimizer.warmup_steps, config.total_steps,
                                            config.optimizer.decay)
  window, window_tokens, window_slots, window_start = [], 0, 0, time.monotonic()
  if start_step:  # a resumed run goes on with the log window its checkpoint was saved in
    window, window_tokens, window_slots = (ckpt.read_meta(start_step) or {}).get(
        "log_window", (window, window_tokens, window_slots))
  profile_steps = tuple(config.get("profile_steps", ()) or ())  # (start, stop) or off
  profiling, step_flops = False, None
  peak = config.get("peak_flops", 0.0) or flops_lib.peak_flops(jax.devices()[0].device_kind,
                                                               config.compute_dtype)
  for step in range(start_step, config.total_steps):
    host_batch = train_stream.batch(step)
    window_slots += host_batch["labels"].size * jax.process_count()  # target slots, all hosts
    if step == start_step:
      step_flops = flops_lib.batch_train_step_flops(model.config, config.batch_size, host_batch)
    if is_main and profile_steps and step == profile_steps[0]:
      jax.profiler.start_trace(os.path.join(workdir, "profile"))  # TensorBoard's profile plugin
      profiling = True
    batch = shard_batch(host_batch)
    if step == start_step:
      log.info("compiling the train step (the first step includes it)")
      t_first = time.monotonic()
      if jax.process_count() > 1 and hasattr(train_step, "lower"):
        train_step.lower(state, batch).compile()  # the call below reuses it
        distributed.barrier(f"edjax-train-step-compiled-{step}")
    state, step_metrics = train_step(state, batch)
    loss, grad_norm = float(step_metrics["loss"]), float(step_metrics["grad_norm"])
    if step == start_step:
      log.info("first step (compile + run) took %.1fs", time.monotonic() - t_first)
    healthy = health.check(loss, grad_norm)
    if not math.isfinite(loss):
      ckpt.wait()
      raise NonFiniteLossError(divergence_message(loss, step + 1, ckpt, config))
    window.append(loss)
    window_tokens += int(step_metrics["tokens"])
    done = step + 1
    if profiling and done >= profile_steps[1]:
      jax.profiler.stop_trace()
      profiling = False
      log.info("wrote a profile of steps %d-%d to %s", profile_steps[0], done,
               os.path.join(workdir, "profile"))
    report_progress(done)
    if done % config.log_every_steps == 0 or done == config.total_steps:
      now = time.monotonic()
      seconds = max(now - window_start, 1e-9)
      throughput = {"train/real_tokens_per_sec": window_tokens / seconds}  # non-pad targets
      step_mfu = flops_lib.mfu(step_flops or 0.0, len(window) / seconds, jax.device_count(), peak)
      if step_flops and step_mfu is not None:
        throughput["train/mfu"] = step_mfu
      metrics_writer.write_scalars(done, {
          "train/loss": float(np.mean(window)), "train/grad_norm": grad_norm,
          "train/learning_rate": float(schedule(done)),
          "train/tokens_per_sec": window_slots / seconds,  # target slots, pads included
          "train/real_token_fraction": window_tokens / max(window_slots, 1), **throughput})
      window, window_tokens, window_slots, window_start = [], 0, 0, now
    preemption.send_test_signal(config.get("test_signal"), done)
    decision = guard.decide(done, ckpt.manager)  # a preemption notice, a time-based save
    if done % config.checkpoint_every_steps == 0 or done == config.total_steps or decision.save:
      with report_progress.timed("checkpoint"):
        ckpt.save(done, state, {"step": done, "data_position": done, "seed": config.seed,
                                "loss": loss, "grad_norm": grad_norm, "healthy": healthy,
                                "log_window": [window, window_tokens, window_slots],
                                **resumed_from})
      guard.saved()
      if not healthy:
        log.warning("step %d: loss %g (grad norm %g) is not healthy (non-finite, or over %gx the "
                    "median of the recent losses); its checkpoint is marked unhealthy", done,
                    loss, grad_norm, health.factor)
    if done % config.eval_every_steps == 0 or done == config.total_steps:
      run_eval(done)
    if decision.stop and done < config.total_steps:
      ckpt.close()
      metrics_writer.close()
      raise preemption.TrainingPreempted(done, decision.reason, ckpt.directory)
  if profiling:  # the window ran past total_steps
    jax.profiler.stop_trace()
  if start_step >= config.total_steps and not final:  # a finished run only re-evaluates
    run_eval(start_step)
  if config.export_hf:
    params = distributed.host_values(state["params"])  # collective: every process gathers
    if is_main:
      t_export = time.monotonic()
      export(model, params, config, processor, os.path.join(workdir, "export"))
      log.info("exported %s in %.1fs", os.path.join(workdir, "export"),
               time.monotonic() - t_export)
  ckpt.close()
  metrics_writer.close()
  if is_main:
    from edjax.train import plots
    plot = plots.plot_metrics(workdir)
    if plot:
      log.info("wrote %s", plot)
  return final
