"""Scoring: the log-likelihood of given targets under a model, in one jitted teacher-forced pass.

The t5x `score_batch` counterpart: for each (input, labels) row, the sum and the mean of
log p(label_t | label_<t, input) over the tokens whose label is not -100. It equals what
transformers' loss implies (`-loss * num_tokens` for one row) and is what ranking, reranking and
perplexity evaluations need; `experiments.predict --score` applies it to a file of pairs.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from edjax import losses

Array = jax.Array


@flax.struct.dataclass
class ScoreOutput:
  """Per-sequence scores; every field is [batch]."""

  log_likelihood: Array  # sum of log p over the scored tokens (float32)
  mean_log_likelihood: Array  # log_likelihood / num_tokens (0 for a row without tokens)
  num_tokens: Array  # int32: labels != -100


def _score_impl(model, params, encoder_inputs: dict, labels: Array) -> ScoreOutput:
  cfg = model.config
  decoder_input_ids = losses.shift_tokens_right(labels, cfg.pad_token_id,
                                                cfg.decoder_start_token_id)  # [batch, length]
  out = model.apply({"params": params}, **encoder_inputs, decoder_input_ids=decoder_input_ids)
  label_log_probs, _, valid = losses.token_log_probs(out.logits, labels)  # [batch, length]
  total = jnp.sum(jnp.where(valid, label_log_probs, 0.0), axis=1)
  count = jnp.sum(valid, axis=1).astype(jnp.int32)
  return ScoreOutput(log_likelihood=total, num_tokens=count,
                     mean_log_likelihood=total / jnp.maximum(count, 1))


jit_score = jax.jit(_score_impl, static_argnums=(0,))


def score(model, params, input_ids=None, attention_mask=None, pixel_values=None, *,
          labels) -> ScoreOutput:
  """Log-likelihood of `labels` [batch, tgt_len] (-100 = not scored) given the encoder inputs:
  input_ids [batch, src_len] (+ attention_mask) for text models, pixel_values [batch, C, H, W]
  for image models. The decoder reads labels shifted right with the model config's
  decoder_start_token_id and pad_token_id, as training does."""
  if labels is None:
    raise ValueError("score needs labels [batch, tgt_len] (the target token ids; -100 = skip)")
  if pixel_values is not None:
    encoder_inputs = {"pixel_values": np.asarray(pixel_values, np.float32)}
  else:
    if input_ids is None:
      raise ValueError("score needs input_ids (text encoders) or pixel_values (image encoders)")
    ids = np.asarray(input_ids)
    mask = np.ones(ids.shape, np.int32) if attention_mask is None else np.asarray(attention_mask)
    encoder_inputs = {"input_ids": ids.astype(np.int32), "attention_mask": mask.astype(np.int32)}
  labels = np.asarray(labels).astype(np.int32)
  model.check_inputs(dict(encoder_inputs, labels=labels))
  return jit_score(model, params, encoder_inputs, labels)
