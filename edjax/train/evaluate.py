"""Evaluation of a model on an eval set: teacher-forced loss, then generation and text metrics.

    loss_fn = make_eval_loss_fn(model)                    # jitted once, reused every eval
    results, rows = evaluate(model, params, eval_set, config.eval, decoder_tokenizer,
                             loss_fn=loss_fn, predictions_path=".../predictions_600.jsonl")

`config.eval` holds `batch_size`, `num_generate` (how many eval examples are decoded), `metrics`
(names for `edjax.metrics.compute_metrics`) and generation settings: every key of it that is
one of `edjax.generation.SETTING_NAMES` (num_beams, max_length, length_penalty, ...) goes to
`edjax.generate` as is; settings left out come from the checkpoint's generation config.
"""

from __future__ import annotations

import json
import logging
import time

import jax
import numpy as np

import edjax
from edjax import fileio, losses
from edjax import metrics as metrics_lib
from edjax.generation import SETTING_NAMES
from edjax.model_configs import ConfigError
from edjax.processing.tokenizers import roundtrip_references, roundtrip_texts
from edjax.train.loss import encoder_inputs, token_loss

log = logging.getLogger("edjax")

# The keys of config.eval that are not generation settings.
EVAL_KEYS = ("batch_size", "num_generate", "metrics")


def check_eval_config(eval_config) -> None:
  """ConfigError for a config.eval key that is neither in EVAL_KEYS nor a generation setting, or
  a num_generate that is not an integer >= 0."""
  unknown = sorted(set(eval_config) - set(EVAL_KEYS) - set(SETTING_NAMES))
  if unknown:
    raise ConfigError(f"config.eval has unknown keys {unknown}: use {list(EVAL_KEYS)} or "
                     f"generation settings {list(SETTING_NAMES)}")
  num = eval_config.get("num_generate", 0)
  if not isinstance(num, int) or num < 0:
    raise ConfigError(f"config.eval.num_generate={num!r}: must be an integer >= 0 (0 = eval loss "
                      "only, no decoding)")


def generation_kwargs(eval_config) -> dict:
  """The generation settings of config.eval, as `edjax.generate` keywords."""
  return {k: eval_config[k] for k in SETTING_NAMES if k in eval_config}


def export_generation_settings(eval_config) -> dict:
  """The eval decode settings for the export's generation_config.json (num_beams, max_length,
  min_length, length_penalty, no_repeat_ngram_size, early_stopping, ... as config.eval sets
  them), so `experiments.predict --checkpoint=workdir/export` decodes like the run's eval."""
  return {k: (v.item() if hasattr(v, "item") else v)
          for k, v in generation_kwargs(eval_config).items()}


def make_eval_loss_fn(model):
  """Jitted (params, batch) -> (sum of token losses, token count), dropout off; the special ids
  come from model.config, as in the train step (`edjax.train.loss`)."""
  return jax.jit(lambda params, batch: token_loss(model, params, batch))


def eval_loss(params, eval_set, batch_size: int, loss_fn) -> float:
  """Mean token loss over the eval set; the rows that pad the last batch count for nothing."""
  total, count = 0.0, 0
  for batch in eval_set.batches(batch_size):
    valid = batch["valid"][:, None] > 0  # [b, 1]
    labels = np.where(valid, batch["labels"], losses.IGNORE_INDEX)  # [b, tgt_len]
    t, c = loss_fn(params, dict(batch, labels=labels))
    total, count = total + float(t), count + int(c)
  return total / max(count, 1)


def generate_texts(model, params, eval_set, batch_size: int, num: int, decoder_tokenizer,
                   gen_kwargs: dict) -> list[str]:
  """Decoded generations for the first `num` examples of the eval set, in its order."""
  preds: list[str] = []
  t0 = time.monotonic()
  for batch in eval_set.batches(batch_size):
    if len(preds) >= num:
      break
    if preds:
      log.info("eval: generated %d/%d (%.1fs)", len(preds), num, time.monotonic() - t0)
    out = edjax.generate(model, params, **encoder_inputs(batch), **gen_kwargs)
    texts = decoder_tokenizer.decode_batch(np.asarray(out.sequences))  # [b] (one per input)
    keep = [i for i in range(len(texts)) if batch["valid"][i]][:num - len(preds)]
    preds += [texts[i] for i in keep]
  return preds


def evaluate(model, params, eval_set, eval_config, decoder_tokenizer, *, loss_fn=None,
             predictions_path: str | None = None) -> tuple[dict, list[tuple]]:
  """({"eval/loss": ..., "eval/<metric>": ...}, [(source, prediction, reference)]).

  The loss covers the whole eval set; generation and metrics the first `num_generate` examples
  (0: the loss alone).
  Sources and references are scored in the decoder tokenizer's normal form (an uncased
  WordPiece lowercases and re-spaces what it decodes): they go through the same encode -> decode
  as the predictions. A reference may be a list (multi-caption sets). With `predictions_path`,
  process 0 writes the rows there as JSONL (atomically).
  """
  loss_fn = loss_fn or make_eval_loss_fn(model)
  t0 = time.monotonic()
  log.info("eval: loss on %d examples", len(eval_set.examples))
  results = {"eval/loss": eval_loss(params, eval_set, eval_config.batch_size, loss_fn)}
  num = min(eval_config.num_generate, len(eval_set.examples))
  if num == 0:  # eval.num_generate=0: the loss alone, nothing decoded or scored
    log.info("eval: loss %.4f (%.1fs); num_generate=0: no decoding", results["eval/loss"],
             time.monotonic() - t0)
    return results, []
  log.info("eval: loss %.4f (%.1fs); generating %d", results["eval/loss"], time.monotonic() - t0,
           num)
  preds = generate_texts(model, params, eval_set, eval_config.batch_size, num, decoder_tokenizer,
                         generation_kwargs(eval_config))
  sources = [s for s, _ in eval_set.examples[:len(preds)]]
  refs = eval_set.references[:len(preds)]
  scores = metrics_lib.compute_metrics(
      list(eval_config.metrics), roundtrip_texts(sources, decoder_tokenizer), preds,
      roundtrip_references(refs, decoder_tokenizer))
  results.update({f"eval/{k}": v for k, v in scores.items()})
  log.info("eval done in %.1fs", time.monotonic() - t0)
  rows = list(zip(sources, preds, refs))
  if predictions_path and jax.process_index() == 0:
    fileio.atomic_write(predictions_path, "".join(
        json.dumps({"input": s, "prediction": p, "reference": r}, ensure_ascii=False) + "\n"
        for s, p, r in rows))
  return results, rows
