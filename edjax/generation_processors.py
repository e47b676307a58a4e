"""HF 4.57.6 logits processors as pure jnp functions of static settings, and the array helpers
the searches of edjax.generation share (beam gathers, column writes).

Each processor is on or off by a static setting, so a processor that is off adds no op to the
compiled search; `process_scores` applies them in the order of transformers'
`GenerationMixin._get_logits_processor`: repetition penalty, no-repeat n-gram, bad words, min
length, forced BOS, forced EOS, suppress tokens, suppress-at-begin, then (sampling only)
temperature, top-k and top-p. Every processor reads the sequences so far [n, length] (prompt
first, positions >= cur_len not yet written) and the traced current length `cur_len`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from edjax.models import beam_slots

if TYPE_CHECKING:  # a cycle otherwise: generation imports this module
  from edjax.generation import GenerationSettings

Array = jax.Array
NEG_INF = -jnp.inf


def _positions_before(cur_len: Array, length: int) -> Array:
  return jnp.arange(length) < cur_len  # [length]


def apply_repetition_penalty(scores: Array, sequences: Array, cur_len: Array,
                             penalty: float) -> Array:
  """HF RepetitionPenaltyLogitsProcessor over the tokens so far (prompt / start token included)."""
  n, length = sequences.shape
  valid = jnp.broadcast_to(_positions_before(cur_len, length), (n, length))
  rows = jnp.broadcast_to(jnp.arange(n)[:, None], (n, length))
  seen = jnp.zeros(scores.shape, bool).at[rows, sequences].max(valid)  # [n, vocab]
  penalised = jnp.where(scores < 0, scores * penalty, scores / penalty)
  return jnp.where(seen, penalised, scores)


def apply_no_repeat_ngram(scores: Array, sequences: Array, cur_len: Array, size: int) -> Array:
  """HF NoRepeatNGramLogitsProcessor: ban tokens that would repeat an n-gram of the prefix."""
  n, length = sequences.shape
  if size > length:
    return scores
  starts = jnp.arange(length - size + 1)  # candidate n-gram starts j: tokens j .. j+size-1
  # The current (size-1)-token suffix, compared with each n-gram's first size-1 tokens.
  suffix = jax.lax.dynamic_slice_in_dim(sequences, jnp.maximum(cur_len - size + 1, 0), size - 1,
                                        axis=1) if size > 1 else sequences[:, :0]  # [n, size-1]
  windows = jnp.stack([sequences[:, k:k + starts.shape[0]] for k in range(size)], axis=-1)
  match = jnp.all(windows[:, :, :size - 1] == suffix[:, None, :], axis=-1)  # [n, starts]
  match &= (starts + size <= cur_len)[None, :] & (cur_len + 1 >= size)
  rows = jnp.broadcast_to(jnp.arange(n)[:, None], match.shape)
  banned = jnp.zeros(scores.shape, bool).at[rows, windows[:, :, size - 1]].max(match)
  return jnp.where(banned, NEG_INF, scores)


def _token_mask(vocab: int, token_ids) -> Array:
  """[vocab] bool, True at token_ids (a static tuple)."""
  return jnp.zeros(vocab, bool).at[jnp.array(token_ids, jnp.int32)].set(True)


def apply_bad_words(scores: Array, sequences: Array, cur_len: Array,
                    bad_words: tuple[tuple[int, ...], ...]) -> Array:
  """HF NoBadWordsLogitsProcessor (a SequenceBias of -inf).

  A one-token bad word is always banned; a longer one bans its last token when the sequence so
  far ends with its other tokens (and is at least as long as the whole word, as HF skips words
  longer than the context). bad_words are static and already filtered of [eos] (as HF does).
  """
  n, vocab = scores.shape
  singles = tuple(w[0] for w in bad_words if len(w) == 1)
  banned = jnp.broadcast_to(_token_mask(vocab, singles), (n, vocab)) if singles else None  # [n, vocab]
  for word in (w for w in bad_words if len(w) > 1):
    prefix = len(word) - 1
    tail = jax.lax.dynamic_slice_in_dim(sequences, jnp.maximum(cur_len - prefix, 0), prefix,
                                        axis=1)  # [n, prefix]: the last `prefix` tokens so far
    hit = jnp.all(tail == jnp.array(word[:-1], sequences.dtype), axis=1) & (cur_len >= len(word))
    word_ban = (jnp.arange(vocab) == word[-1])[None, :] & hit[:, None]  # [n, vocab]
    banned = word_ban if banned is None else banned | word_ban
  return scores if banned is None else jnp.where(banned, NEG_INF, scores)


def _force(scores: Array, token_ids: tuple[int, ...]) -> Array:
  forced = jnp.full_like(scores, NEG_INF)
  return forced.at[:, jnp.array(token_ids)].set(0.0)


def apply_top_k(scores: Array, top_k: int) -> Array:
  top_k = min(top_k, scores.shape[-1])
  kth = jax.lax.top_k(scores, top_k)[0][..., -1:]
  return jnp.where(scores < kth, NEG_INF, scores)


def apply_top_p(scores: Array, top_p: float) -> Array:
  """HF TopPLogitsWarper: drop the low tail whose cumulative probability is <= 1 - top_p."""
  order = jnp.argsort(scores, axis=-1)  # ascending
  sorted_scores = jnp.take_along_axis(scores, order, axis=-1)
  cumulative = jnp.cumsum(jax.nn.softmax(sorted_scores, axis=-1), axis=-1)
  remove_sorted = (cumulative <= 1.0 - top_p).at[..., -1].set(False)
  remove = jnp.take_along_axis(remove_sorted, jnp.argsort(order, axis=-1), axis=-1)
  return jnp.where(remove, NEG_INF, scores)


def begin_index(s: GenerationSettings, prompt_len: Array | int) -> Array | int:
  """HF's SuppressTokensAtBeginLogitsProcessor begin_index: the decoder prompt length (the
  first generated position), one later when the prompt is the start token alone and a forced
  BOS token takes position 1."""
  if s.forced_bos_token_id is None:
    return prompt_len
  if isinstance(prompt_len, int):
    return prompt_len if prompt_len > 1 else prompt_len + 1
  return jnp.where(prompt_len > 1, prompt_len, prompt_len + 1)


def process_scores(scores: Array, sequences: Array, cur_len: Array, s: GenerationSettings,
                   prompt_len: Array | int = 1, limit: Array | int | None = None) -> Array:
  """HF's logits-processor list, in HF's order. scores [n, vocab]; sequences [n, length].

  prompt_len: decoder prompt tokens (1 = the start token); limit: HF's max_length (the step at
  limit - 1 gets the forced EOS), s.max_length unless max_new_tokens counts from a prompt.
  """
  limit = s.max_length if limit is None else limit
  if s.repetition_penalty != 1.0:
    scores = apply_repetition_penalty(scores, sequences, cur_len, s.repetition_penalty)
  if s.no_repeat_ngram_size > 0:
    scores = apply_no_repeat_ngram(scores, sequences, cur_len, s.no_repeat_ngram_size)
  if s.bad_words_ids:
    scores = apply_bad_words(scores, sequences, cur_len, s.bad_words_ids)
  if s.min_length > 0 and s.eos_token_ids:
    eos = _token_mask(scores.shape[-1], s.eos_token_ids)
    scores = jnp.where(eos & (cur_len < s.min_length), NEG_INF, scores)
  if s.forced_bos_token_id is not None:
    scores = jnp.where(cur_len == 1, _force(scores, (s.forced_bos_token_id,)), scores)
  if s.forced_eos_token_ids is not None:
    scores = jnp.where(cur_len == limit - 1, _force(scores, s.forced_eos_token_ids), scores)
  if s.suppress_tokens:
    scores = jnp.where(_token_mask(scores.shape[-1], s.suppress_tokens), NEG_INF, scores)
  if s.begin_suppress_tokens:
    at_begin = cur_len == begin_index(s, prompt_len)
    scores = jnp.where(_token_mask(scores.shape[-1], s.begin_suppress_tokens) & at_begin, NEG_INF,
                       scores)
  if s.do_sample:
    if s.temperature != 1.0:
      scores = scores / s.temperature
    if s.top_k:
      scores = apply_top_k(scores, s.top_k)
    if s.top_p < 1.0:
      scores = apply_top_p(scores, s.top_p)
  return scores


# ----------------------------------------------------------------------------- array helpers
# (shared by the searches in edjax.generation)


def is_eos(tokens: Array, eos_ids: tuple[int, ...]) -> Array:
  if not eos_ids:
    return jnp.zeros(tokens.shape, bool)
  return jnp.isin(tokens, jnp.array(eos_ids))


def flatten_beam_dim(x: Array) -> Array:
  """[batch, beams, ...] -> [batch * beams, ...]: the layout the decoder and its cache use."""
  return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def unflatten_beam_dim(x: Array, batch: int, beams: int) -> Array:
  """[batch * beams, ...] -> [batch, beams, ...]."""
  return x.reshape(batch, beams, *x.shape[1:])


def gather_beams(nested, beam_indices: Array):
  """Picks beams per batch row: every leaf [batch, old_beams, ...] -> [batch, new_beams, ...].

  beam_indices [batch, new_beams] index the beam axis (HF `_gather_beams`). A gather along the
  beam axis only, so a batch-sharded state stays sharded and values are copied exactly.
  """
  def gather(x):
    idx = beam_indices.reshape(*beam_indices.shape, *([1] * (x.ndim - 2)))
    return jnp.take_along_axis(x, idx, axis=1)
  return jax.tree_util.tree_map(gather, nested)


CACHE_ROW_GATHER = True  # off: take_along_axis on [batch, beams, ...] (benchmarks compare both)


def gather_cache_beams(cache, beam_indices: Array):
  """A decode cache with rows [batch * beams, ...] -> the rows of beams `beam_indices` [batch,
  beams] (the parent of each new running beam); scalar leaves (cache indices) are shared. A
  cache with beam slot tables (`edjax.models.beam_slots`) reorders only those."""
  if beam_slots.has_beam_slots(cache):  # K/V stay in place; only the slot tables move
    return beam_slots.reorder_beam_slots(cache, beam_indices)
  batch, beams = beam_indices.shape
  if CACHE_ROW_GATHER:
    rows = (beam_indices + (jnp.arange(batch) * beams)[:, None]).reshape(-1)  # [batch * beams]

    def take_rows(x):  # whole contiguous rows [heads, ..., max_len ...]: a row-wise copy
      return x if x.ndim == 0 else jnp.take(x, rows, axis=0, mode="clip")
    return jax.tree_util.tree_map(take_rows, cache)

  def gather(x):
    if x.ndim == 0:
      return x
    return flatten_beam_dim(gather_beams(unflatten_beam_dim(x, batch, beams), beam_indices))
  return jax.tree_util.tree_map(gather, cache)


def set_column(x: Array, index: Array, values: Array) -> Array:
  """x [..., length] with x[..., index] = values [...] (index is traced)."""
  return jnp.where(jnp.arange(x.shape[-1]) == index, values[..., None], x)


def last_tokens(sequences: Array, cur_len: Array) -> Array:
  """sequences [n, length] -> [n, 1]: the token at cur_len - 1, the decoder's next input."""
  return jax.lax.dynamic_slice_in_dim(sequences, cur_len - 1, 1, axis=1)


def write_step(buffer: Array, step: Array, values: Array) -> Array:
  """buffer [rows, steps, ...] with buffer[:, step] = values [rows, ...] (an in-place update)."""
  return jax.lax.dynamic_update_slice_in_dim(buffer, values[:, None], step, axis=1)


# ----------------------------------------------------------------------------- settings


def bad_words_setting(value, eos: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
  """HF bad_words_ids (a list of token-id lists; one int = one single-token word, for CLI flags)
  -> a static tuple of words, duplicates and HF's ignored [eos] words dropped; () = off."""
  if value is None:
    return ()
  if isinstance(value, (int, np.integer)):
    value = [[value]]
  if not isinstance(value, (list, tuple)) or not value:
    raise ValueError(f"bad_words_ids must be a non-empty list of token-id lists such as [[5], [7, 8]], "
                     f"got {value!r}; pass None to ban nothing")
  if not all(isinstance(w, (list, tuple)) and w for w in value):
    raise ValueError(f"bad_words_ids must be a list of non-empty token-id lists, e.g. [[5], [7, 8]] "
                     f"(a flat [5, 7] is two words: write [[5], [7]]), got {value!r}")
  words = dict.fromkeys(tuple(int(t) for t in w) for w in value)  # ordered, deduplicated
  return tuple(w for w in words if not (len(w) == 1 and w[0] in eos))


def bucket_prompt_length(prompt_length: int, room: int) -> int:
  """The power-of-two bucket >= prompt_length a decoder prompt is padded to, at most `room`."""
  width = 1
  while width < prompt_length:
    width *= 2
  return max(min(width, room), prompt_length)


def prepare_decoder_prompt(model, decoder_input_ids, start: int) -> np.ndarray | None:
  """HF `_prepare_decoder_input_ids_for_generation` on the host: the prompt [batch, P] with the
  start token prepended when no row starts with it (not for Donut, whose task token is the start);
  None when the prompt is the start token alone (the prompt-free search, same graph)."""
  if decoder_input_ids is None:
    return None
  ids = np.asarray(decoder_input_ids)
  if ids.ndim != 2 or ids.shape[1] < 1 or not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(f"decoder_input_ids must be integer token ids [batch, prompt_length] with "
                     f"prompt_length >= 1 (every row the same length, as HF), got shape "
                     f"{ids.shape} dtype {ids.dtype}")
  vocab = model.config.decoder.vocab_size
  if ((ids < 0) | (ids >= vocab)).any():
    raise ValueError(f"decoder_input_ids hold ids outside [0, {vocab}) (the decoder vocabulary), "
                     f"e.g. {int(ids[(ids < 0) | (ids >= vocab)][0])}")
  donut = "donut" in str(getattr(model.config.encoder, "model_type", ""))
  if not donut and (ids[:, 0] != start).all():
    ids = np.concatenate([np.full((ids.shape[0], 1), start, ids.dtype), ids], axis=1)
  if ids.shape[1] == 1 and (ids[:, 0] == start).all():
    return None
  return ids.astype(np.int32)
