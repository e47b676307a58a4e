r"""Train (fine-tune) a warm-started encoder-decoder: the product's main job.

  python -m experiments.train --config=configs/bert2bert.py[:variant] --workdir=DIR \
      [--config.total_steps=1000 --config.mesh.fsdp=2 ...]

Writes DIR/config.json, DIR/metrics.jsonl ({"step": int, "train/loss": float, ...} every
config.log_every_steps), DIR/tensorboard/, DIR/checkpoints/ (orbax, every
config.checkpoint_every_steps; rerunning the same command resumes: params, optimizer state, step,
RNG and data position) and DIR/predictions_<step>.jsonl at each evaluation.

The file reads top to bottom in the order of a run: mesh, data, model, sharding, train step,
checkpoint, eval, loop; `train_and_evaluate(config, workdir)` is the importable entry point.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import edjax
from edjax import losses, metrics as metrics_lib
from edjax.model_configs import EncoderDecoderConfig, config_from_dict
from edjax.data import pipeline, vision_pipeline
from edjax.processing.images import ImageProcessor
from edjax.processing.tokenizers import Tokenizer
from edjax.train import checkpoint as ckpt_lib
from edjax.train import optimizer as opt_lib
from edjax.train import partitioning
from edjax.train.writers import MetricWriter, Progress

log = logging.getLogger("edjax")

REQUIRED_KEYS = ("total_steps", "log_every_steps", "checkpoint_every_steps", "eval_every_steps",
                 "seed", "batch_size", "mesh", "data", "model", "optimizer", "eval")


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or Inf."""


def check_config(config: ml_collections.ConfigDict) -> None:
  missing = [k for k in REQUIRED_KEYS if k not in config]
  if missing:
    raise ValueError(f"config lacks {missing}: start from configs.common.get_base_config()")
  if config.batch_size % config.grad_accum_steps:
    raise ValueError(f"batch_size {config.batch_size} is not divisible by grad_accum_steps "
                     f"{config.grad_accum_steps}")
  if config.compute_dtype not in ("float32", "bfloat16"):
    raise ValueError(f"compute_dtype={config.compute_dtype!r}: use 'float32' or 'bfloat16'")


# ----------------------------------------------------------------------------- model


def _model_config(config) -> EncoderDecoderConfig | None:
  """The composite config for random-init / config-only models (None: warm start)."""
  m = config.model
  if m.random_init or (m.encoder_config and m.decoder_config):
    enc, dec = _part_config(m.encoder_config, m.encoder), _part_config(m.decoder_config, m.decoder)
  else:
    return None
  enc = enc.replace(**m.encoder_overrides.to_dict())
  dec = dec.replace(**m.decoder_overrides.to_dict())
  return edjax.model_configs.join_configs(enc, dec, tie_encoder_decoder=m.tie_encoder_decoder)


def _part_config(config_dict, path: str):
  """A part's model config: its config dict if given, else its checkpoint's config.json."""
  if config_dict:
    return config_from_dict(config_dict.to_dict())
  return edjax.model_configs.load_config_file(edjax.pretrained.resolve_path(path))


def _is_workdir(path: str) -> bool:
  return os.path.isdir(os.path.join(path, "checkpoints"))


def build_model(config, ids: dict, dtype):
  """(model, params_fn): params_fn() loads / initialises the starting params (skipped on resume)."""
  m = config.model
  if config.init_from and not _is_workdir(config.init_from):  # an HF dir or an edjax export
    model, params = edjax.from_pretrained(config.init_from, dtype=dtype)
    return model, lambda: params
  composite = _model_config(config)
  if composite is None:
    kwargs = {**{f"encoder_{k}": v for k, v in m.encoder_overrides.items()},
              **{f"decoder_{k}": v for k, v in m.decoder_overrides.items()}, **ids}
    # A part given by its config alone (e.g. a small image encoder) starts from random weights.
    enc = config_from_dict(m.encoder_config.to_dict()) if m.encoder_config else m.encoder
    dec = config_from_dict(m.decoder_config.to_dict()) if m.decoder_config else m.decoder
    model, params = edjax.from_encoder_decoder_pretrained(
        enc, dec, rng=config.seed, tie_encoder_decoder=m.tie_encoder_decoder,
        dtype=dtype, **kwargs)
    return model, lambda: params
  model = edjax.models.encoder_decoder.model_for_config(composite.replace(**ids), dtype=dtype)
  return model, lambda: model.init(config.seed)


def encoder_model_config(config):
  """The encoder's model config (from encoder_config, or the encoder checkpoint's config.json)."""
  m = config.model
  if config.init_from and not _is_workdir(config.init_from):
    return edjax.model_configs.load_config_file(edjax.pretrained.resolve_path(config.init_from)).encoder
  return _part_config(m.encoder_config, m.encoder)


def image_processor_for(config) -> ImageProcessor:
  """data.image_processor (a dir with preprocessor_config.json), else the encoder checkpoint's
  preprocessor_config.json, else ViTImageProcessor defaults at the encoder's image size (also for
  DeiT, as TrOCR's processor does: a plain resize never crops the ends of a text line)."""
  for path in (config.data.get("image_processor", ""), config.init_from, config.model.encoder):
    if path and os.path.isdir(path) and os.path.exists(os.path.join(path, "preprocessor_config.json")):
      return ImageProcessor.from_dir(path)
  enc = encoder_model_config(config)
  return ImageProcessor.for_image_size(*enc.image_hw, model_type="vit")


def encoder_inputs(batch: dict) -> dict:
  """The encoder's model inputs of a batch: pixel_values (vision) or input_ids + attention_mask."""
  if "pixel_values" in batch:
    return {"pixel_values": batch["pixel_values"]}
  return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


# ----------------------------------------------------------------------------- train step


def compute_loss(model, params, batch, rng, label_smoothing):
  """(sum of token losses, token count) of one micro-batch, dropout on."""
  cfg = model.config
  dec_in = losses.shift_tokens_right(batch["labels"], cfg.pad_token_id, cfg.decoder_start_token_id)
  out = model.apply({"params": params}, **encoder_inputs(batch), decoder_input_ids=dec_in,
                    decoder_attention_mask=batch["decoder_attention_mask"], deterministic=False,
                    rngs={"dropout": rng})
  return losses.seq2seq_loss(out.logits, batch["labels"], label_smoothing, return_count=True)


def make_train_step(model, optimizer, config):
  """state, batch -> new state, metrics. Gradients are token-weighted over all micro-batches,
  so grad_accum_steps=k equals one k-times larger batch."""
  accum = config.grad_accum_steps

  def grads_of(params, micro, rng):
    def f(p):
      total, count = compute_loss(model, p, micro, rng, config.label_smoothing)
      return total, count
    (total, count), grads = jax.value_and_grad(f, has_aux=True)(params)
    return total, count, grads

  def train_step(state, batch):
    rng = jax.random.fold_in(state["rng"], state["step"])
    if accum == 1:
      total, count, grads = grads_of(state["params"], batch, rng)
    else:
      micro = jax.tree_util.tree_map(lambda x: x.reshape(accum, -1, *x.shape[1:]), batch)
      zeros = jax.tree_util.tree_map(jnp.zeros_like, state["params"])

      def body(carry, xs):
        i, mb = xs
        t, c, g = grads_of(state["params"], mb, jax.random.fold_in(rng, i))
        return (carry[0] + t, carry[1] + c, jax.tree_util.tree_map(jnp.add, carry[2], g)), None
      (total, count, grads), _ = jax.lax.scan(body, (0.0, 0, zeros), (jnp.arange(accum), micro))
    count = jnp.maximum(count, 1)
    grads = jax.tree_util.tree_map(lambda g: g / count, grads)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    new_state = dict(step=state["step"] + 1, params=params, opt_state=opt_state, rng=state["rng"])
    return new_state, {"loss": total / count, "grad_norm": optax.global_norm(grads),
                       "tokens": count}
  return train_step


# ----------------------------------------------------------------------------- eval


def make_eval_loss_fn(model, ids: dict):
  """Jitted (params, batch) -> (sum of token losses, token count), dropout off; `ids` holds the
  tokenizer's pad_token_id and decoder_start_token_id."""

  @jax.jit
  def eval_loss_fn(params, batch):
    dec_in = losses.shift_tokens_right(batch["labels"], ids["pad_token_id"],
                                       ids["decoder_start_token_id"])
    out = model.apply({"params": params}, **encoder_inputs(batch), decoder_input_ids=dec_in,
                      decoder_attention_mask=batch["decoder_attention_mask"])
    return losses.seq2seq_loss(out.logits, batch["labels"], return_count=True)
  return eval_loss_fn


def evaluate(model, params, eval_set, eval_loss_fn, config, dec_tok, step, workdir, shard_batch):
  """Eval loss over the eval split subset, then generation + metrics on the first num_generate."""
  total, count = 0.0, 0
  for batch in eval_set.batches(config.eval.batch_size):
    labels = np.where(batch["valid"][:, None] > 0, batch["labels"], losses.IGNORE_INDEX)
    t, c = eval_loss_fn(params, shard_batch(dict(batch, labels=labels)))
    total, count = total + float(t), count + int(c)
  results = {"eval/loss": total / max(count, 1)}
  e = config.eval
  examples = eval_set.examples[:e.num_generate]
  preds, sources, refs = [], [], []
  gen = dict(num_beams=e.num_beams, max_length=e.max_length, min_length=e.min_length,
             length_penalty=e.length_penalty, no_repeat_ngram_size=e.no_repeat_ngram_size,
             early_stopping=e.early_stopping)
  seen = 0
  for batch in eval_set.batches(config.eval.batch_size):
    if seen >= len(examples):
      break
    out = edjax.generate(model, params, **encoder_inputs(batch), **gen)
    texts = dec_tok.decode_batch(np.asarray(out.sequences))
    keep = [i for i in range(len(texts)) if batch["valid"][i]][:len(examples) - seen]
    preds += [texts[i] for i in keep]
    seen += len(keep)
  sources = [s for s, _ in examples[:seen]]
  refs = eval_set.references[:seen]  # a list of references per example for multi-caption sets
  # Score in the tokenizer's normal form (an uncased WordPiece lowercases and re-spaces what it
  # decodes): sources and references go through the same encode -> decode as predictions.
  results.update({f"eval/{k}": v for k, v in metrics_lib.compute_metrics(
      list(e.metrics), pipeline.roundtrip_texts(sources, dec_tok), preds,
      pipeline.roundtrip_references(refs, dec_tok)).items()})
  if jax.process_index() == 0:
    with open(os.path.join(workdir, f"predictions_{step}.jsonl"), "w", encoding="utf-8") as f:
      for s, p, r in zip(sources, preds, refs):
        f.write(json.dumps({"input": s, "prediction": p, "reference": r}, ensure_ascii=False) + "\n")
  return results, list(zip(sources, preds, refs))


# ----------------------------------------------------------------------------- main

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt",
                   "special_tokens_map.json", "tokenizer_config.json")


def copy_tokenizer_files(src: str, dst: str) -> None:
  """Tokenizer files next to the exported weights, so `predict --checkpoint=dst` needs no flag."""
  for name in TOKENIZER_FILES:
    if os.path.exists(os.path.join(src, name)):
      shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))



def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or resumes) training in `workdir`; returns the final eval metrics."""
  check_config(config)
  if config.distributed:
    jax.distributed.initialize()
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0
  if is_main:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))

  # --- mesh
  mesh = partitioning.make_mesh(config.mesh)
  rules = tuple(tuple(r) for r in config.logical_axis_rules)
  log.info("mesh %s over %d devices", dict(mesh.shape), mesh.devices.size)

  # --- data
  enc_tok = Tokenizer.from_dir(edjax.pretrained.resolve_path(config.data.tokenizer))
  dec_tok = (Tokenizer.from_dir(edjax.pretrained.resolve_path(config.data.decoder_tokenizer))
             if config.data.decoder_tokenizer else enc_tok)
  processor = None
  if config.data.name in vision_pipeline.NAMES:  # image -> text: pixel_values, not input_ids
    processor = image_processor_for(config)
    train_stream, eval_set = vision_pipeline.build_vision(
        config.data, processor, dec_tok, global_batch_size=config.batch_size, seed=config.seed,
        process_index=jax.process_index(), process_count=jax.process_count())
  else:
    train_stream, eval_set = pipeline.build(
        config.data, enc_tok, dec_tok, global_batch_size=config.batch_size, seed=config.seed,
        process_index=jax.process_index(), process_count=jax.process_count())
  ids = dict(decoder_start_token_id=dec_tok.bos_id, eos_token_id=dec_tok.eos_id,
             pad_token_id=dec_tok.pad_id)

  # --- model
  dtype = jnp.bfloat16 if config.compute_dtype == "bfloat16" else jnp.float32
  model, params_fn = build_model(config, ids, dtype)
  optimizer = opt_lib.make_optimizer(config.optimizer, config.total_steps)

  # --- sharding
  shapes = model.param_shapes()
  param_sh = partitioning.param_shardings(model.logical_axes(), shapes, mesh, rules)
  rep = partitioning.replicated(mesh)
  opt_shapes = jax.eval_shape(optimizer.init, shapes)
  opt_sh = optax.tree_map_params(optimizer, lambda _, s: s, opt_shapes, param_sh,
                                 transform_non_params=lambda _: rep)
  state_sh = dict(step=rep, params=param_sh, opt_state=opt_sh, rng=rep)
  batch_sh = partitioning.batch_sharding(mesh, rules)

  def shard_batch(local: dict) -> dict:
    return {k: jax.make_array_from_process_local_data(batch_sh, np.asarray(v))
            for k, v in local.items()}

  # --- train step
  train_step = jax.jit(make_train_step(model, optimizer, config),
                       in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, rep),
                       donate_argnums=(0,))

  eval_loss_fn = make_eval_loss_fn(model, ids)

  # --- checkpoint
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                               config.checkpoint.max_to_keep, config.checkpoint.async_save)
  abstract = dict(
      step=jax.ShapeDtypeStruct((), jnp.int32, sharding=rep),
      params=jax.tree_util.tree_map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, jnp.float32,
                                                                        sharding=sh), shapes, param_sh),
      opt_state=jax.tree_util.tree_map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                                       opt_shapes, opt_sh),
      rng=jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=rep))
  restored = ckpt.restore_latest(abstract)
  if restored is not None:
    state, meta = restored
    start_step = int(meta["step"])
    if int(meta.get("data_position", start_step)) != start_step:
      raise ValueError(f"checkpoint meta {meta} has an inconsistent data position")
    log.info("resumed from step %d (%s)", start_step, ckpt.directory)
  elif config.init_from and _is_workdir(config.init_from):  # params of another run's checkpoint
    other = ckpt_lib.Checkpointer(os.path.join(config.init_from, "checkpoints"), async_save=False)
    found = other.restore_latest(abstract)
    if found is None:
      raise FileNotFoundError(f"init_from={config.init_from}: no restorable checkpoint in "
                              f"{other.directory}")
    state = dict(found[0], step=jnp.array(0, jnp.int32), opt_state=jax.jit(
        optimizer.init, out_shardings=opt_sh)(found[0]["params"]),
                 rng=jax.random.PRNGKey(config.seed))
    start_step = 0
    log.info("initialised params from %s (step %s)", other.directory, found[1].get("step"))
  else:
    params = jax.device_put(params_fn(), param_sh)
    state = jax.jit(lambda p: dict(step=jnp.array(0, jnp.int32), params=p, opt_state=optimizer.init(p),
                                   rng=jax.random.PRNGKey(config.seed)),
                    out_shardings=state_sh)(params)
    start_step = 0
  last_good = start_step if restored is not None else None

  # --- eval
  writer = MetricWriter(workdir, enabled=is_main)
  final: dict = {}

  def run_eval(step):
    nonlocal final
    results, examples = evaluate(model, state["params"], eval_set, eval_loss_fn, config, dec_tok,
                                 step, workdir, lambda b: b)  # numpy: replicated inputs
    writer.write(step, results)
    final = dict(results, step=step, examples=examples[:3])
    print(f"eval at step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in results.items()),
          flush=True)

  # --- loop
  progress = Progress(config.total_steps, start_step)
  window: list[float] = []
  for step in range(start_step, config.total_steps):
    state, step_metrics = train_step(state, shard_batch(train_stream.batch(step)))
    loss = float(step_metrics["loss"])
    if not math.isfinite(loss):
      ckpt.wait()
      where = f"step {last_good}" if last_good is not None else "none saved yet"
      raise NonFiniteLossError(
          f"loss is {loss} at step {step + 1}: stopping. The last good checkpoint ({where}) in "
          f"{ckpt.directory} is kept; lower optimizer.learning_rate or check the data.")
    window.append(loss)
    progress.add_tokens(int(step_metrics["tokens"]))
    done = step + 1
    if done % config.log_every_steps == 0 or done == config.total_steps:
      lr = opt_lib.learning_rate_schedule(config.optimizer.learning_rate, config.optimizer.warmup_steps,
                                          config.total_steps, config.optimizer.decay)(done)
      writer.write(done, {"train/loss": float(np.mean(window)),
                          "train/grad_norm": float(step_metrics["grad_norm"]),
                          "train/learning_rate": float(lr)})
      if is_main:
        progress.report(done, float(np.mean(window)))
      window = []
    if done % config.checkpoint_every_steps == 0 or done == config.total_steps:
      ckpt.save(done, state, {"step": done, "data_position": done, "seed": config.seed})
      last_good = done
    if done % config.eval_every_steps == 0 or done == config.total_steps:
      run_eval(done)
  if start_step >= config.total_steps and not final:
    run_eval(start_step)
  if config.export_hf and is_main:  # HF format: predict.py, transformers and from_pretrained read it
    export = os.path.join(workdir, "export")
    edjax.save_pretrained(model, jax.device_get(state["params"]), export)
    copy_tokenizer_files(edjax.pretrained.resolve_path(config.data.decoder_tokenizer
                                                       or config.data.tokenizer), export)
    if processor is not None:  # predict.py reads images with the training preprocessing
      processor.save(export)
  ckpt.close()
  writer.close()
  return final


def main(argv):
  del argv
  from absl import flags
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save step at INFO
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
  final = train_and_evaluate(config, workdir)
  if final and jax.process_index() == 0:
    print("\nfinal eval: " + ", ".join(f"{k} {v:.4g}" for k, v in final.items()
                                       if isinstance(v, float)))
    for i, (src, pred, ref) in enumerate(final.get("examples", []), 1):
      print(f"\nexample {i}\n  input:      {src}\n  prediction: {pred}\n  reference:  {ref}")


if __name__ == "__main__":
  from absl import app, flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "configs/<name>.py[:variant]", lock_config=True)
  flags.DEFINE_string("workdir", None, "Output directory (rerun to resume).")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
