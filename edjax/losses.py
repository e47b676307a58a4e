"""Sequence-to-sequence label shifting and loss, with HF's conventions (-100 = ignore)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

IGNORE_INDEX = -100


def shift_tokens_right(labels: Array, pad_token_id: int | None,
                       decoder_start_token_id: int | None) -> Array:
  """labels [batch, length] -> decoder inputs: start token first, labels shifted right, -100 -> pad."""
  if decoder_start_token_id is None:
    raise ValueError("decoder_start_token_id is None: set it in the model config "
                     "(e.g. config.replace(decoder_start_token_id=tokenizer.cls_token_id))")
  if pad_token_id is None:
    raise ValueError("pad_token_id is None: set it in the model config "
                     "(e.g. config.replace(pad_token_id=tokenizer.pad_token_id))")
  labels = jnp.asarray(labels)
  if labels.ndim != 2:
    raise ValueError(f"labels must be [batch, length], got shape {labels.shape}")
  start = jnp.full((labels.shape[0], 1), decoder_start_token_id, labels.dtype)
  shifted = jnp.concatenate([start, labels[:, :-1]], axis=1)  # [batch, length]
  return jnp.where(shifted == IGNORE_INDEX, jnp.asarray(pad_token_id, labels.dtype), shifted)


def token_log_probs(logits: Array, labels: Array) -> tuple[Array, Array, Array]:
  """(log p(label) [batch, length], log_softmax [batch, length, vocab], valid [batch, length])
  in fp32; positions with label -100 are not valid (their log p is that of token 0)."""
  logits = logits.astype(jnp.float32)
  valid = labels != IGNORE_INDEX  # [batch, length]
  safe_labels = jnp.where(valid, labels, 0)
  log_probs = jax.nn.log_softmax(logits, axis=-1)  # [batch, length, vocab]
  label_log_probs = jnp.take_along_axis(log_probs, safe_labels[..., None], axis=-1)[..., 0]
  return label_log_probs, log_probs, valid


def seq2seq_loss(logits: Array, labels: Array, label_smoothing: float = 0.0,
                 return_count: bool = False):
  """Token cross-entropy averaged over labels != -100 (torch CrossEntropyLoss semantics).

  logits [batch, length, vocab], labels [batch, length]. With label_smoothing > 0 the target is
  (1 - s) one-hot + s / vocab, as torch's `label_smoothing`. A batch without any label gives 0.
  With return_count, returns (loss_sum, token_count) for exact averaging across micro-batches.
  """
  if logits.shape[:-1] != labels.shape:
    raise ValueError(f"logits {logits.shape} and labels {labels.shape} disagree: logits must be "
                     "[batch, length, vocab] and labels [batch, length]")
  label_log_probs, log_probs, valid = token_log_probs(logits, labels)
  nll = -label_log_probs  # [batch, length]
  if label_smoothing > 0.0:
    smooth = -jnp.mean(log_probs, axis=-1)
    nll = (1.0 - label_smoothing) * nll + label_smoothing * smooth
  total = jnp.sum(jnp.where(valid, nll, 0.0))
  count = jnp.sum(valid)
  if return_count:
    return total, count
  return total / jnp.maximum(count, 1)
