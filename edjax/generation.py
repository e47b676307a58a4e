"""Jit-compiled generation: greedy, multinomial sampling and beam search.

Semantics follow transformers 4.57.6 PyTorch `generate` (`generation/utils.py` `_sample` and
`_beam_search`, `generation/logits_process.py`), not HF Flax: EOS candidates ranked anywhere in
the top 2K can finish a beam, beams still running at `max_length` are finalised with length
normalisation, `min_length` bans EOS while `cur_len < min_length`, and the repetition penalty
exists.

The structure is flax `examples/wmt/decode.py`: a typed loop state (`SampleState`, `BeamState`)
with static `[batch, beams, max_length]` shapes in one `lax.while_loop` that stops as soon as
HF's stopping rule says so; the searches see the model only through a `tokens_to_logits(tokens,
cache)` closure; beams are picked with `gather_beams` along the beam axis (so a batch-sharded
state and cache stay sharded). `_generate_impl` runs the encoder and the cross-attention K/V
once per input (beams share them, see `layers.dot_product_attention`) and builds the closure.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
NEG_INF = -jnp.inf
BEAM_MASK = -1.0e9  # HF's "never pick this" offset


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
  """Static settings of one compiled search (hashable: part of the jit cache key)."""

  max_length: int
  decoder_start_token_id: int
  pad_token_id: int
  eos_token_ids: tuple[int, ...] = ()
  min_length: int = 0
  num_beams: int = 1
  do_sample: bool = False
  temperature: float = 1.0
  top_k: int = 50
  top_p: float = 1.0
  length_penalty: float = 1.0
  early_stopping: bool | str = False
  no_repeat_ngram_size: int = 0
  repetition_penalty: float = 1.0
  num_return_sequences: int = 1
  forced_bos_token_id: int | None = None
  forced_eos_token_ids: tuple[int, ...] | None = None


# GenerationSettings field -> the transformers keyword that sets it, where the spellings differ:
# HF takes one id or a list as `eos_token_id` / `forced_eos_token_id`, stored here as tuples.
HF_KEYWORDS = {"eos_token_ids": "eos_token_id", "forced_eos_token_ids": "forced_eos_token_id"}

# Every generation-setting keyword that `generate` / `resolve_settings` accept (HF spellings): the
# GenerationSettings fields through HF_KEYWORDS, plus `max_new_tokens` (an alternative way to set
# max_length = max_new_tokens + 1, the decoder prompt being the start token).
SETTING_NAMES: tuple[str, ...] = tuple(
    HF_KEYWORDS.get(f.name, f.name) for f in dataclasses.fields(GenerationSettings)) + (
        "max_new_tokens",)


@flax.struct.dataclass
class GenerateOutput:
  sequences: Array  # [batch * num_return_sequences, max_length] int32, start token first
  scores: Array | None = None  # [batch * num_return_sequences] beam search sequences_scores


# ----------------------------------------------------------------------------- logits processors


def _positions_before(cur_len: Array, length: int) -> Array:
  return jnp.arange(length) < cur_len  # [length]


def apply_repetition_penalty(scores: Array, sequences: Array, cur_len: Array,
                             penalty: float) -> Array:
  """HF RepetitionPenaltyLogitsProcessor over the tokens generated so far (start token included)."""
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


def process_scores(scores: Array, sequences: Array, cur_len: Array,
                   s: GenerationSettings) -> Array:
  """HF's logits-processor list, in HF's order. scores [n, vocab]; sequences [n, max_length]."""
  if s.repetition_penalty != 1.0:
    scores = apply_repetition_penalty(scores, sequences, cur_len, s.repetition_penalty)
  if s.no_repeat_ngram_size > 0:
    scores = apply_no_repeat_ngram(scores, sequences, cur_len, s.no_repeat_ngram_size)
  if s.min_length > 0 and s.eos_token_ids:
    eos = jnp.zeros(scores.shape[-1], bool).at[jnp.array(s.eos_token_ids)].set(True)
    scores = jnp.where(eos & (cur_len < s.min_length), NEG_INF, scores)
  if s.forced_bos_token_id is not None:
    scores = jnp.where(cur_len == 1, _force(scores, (s.forced_bos_token_id,)), scores)
  if s.forced_eos_token_ids is not None:
    scores = jnp.where(cur_len == s.max_length - 1, _force(scores, s.forced_eos_token_ids), scores)
  if s.do_sample:
    if s.temperature != 1.0:
      scores = scores / s.temperature
    if s.top_k:
      scores = apply_top_k(scores, s.top_k)
    if s.top_p < 1.0:
      scores = apply_top_p(scores, s.top_p)
  return scores


def _is_eos(tokens: Array, eos_ids: tuple[int, ...]) -> Array:
  if not eos_ids:
    return jnp.zeros(tokens.shape, bool)
  return jnp.isin(tokens, jnp.array(eos_ids))


# ----------------------------------------------------------------------------- beam helpers


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


def gather_cache_beams(cache, beam_indices: Array):
  """A decode cache with rows [batch * beams, ...] -> the rows of beams `beam_indices` [batch,
  beams] (the parent of each new running beam); scalar leaves (cache indices) are shared."""
  batch, beams = beam_indices.shape

  def gather(x):
    if x.ndim == 0:
      return x
    return flatten_beam_dim(gather_beams(unflatten_beam_dim(x, batch, beams), beam_indices))
  return jax.tree_util.tree_map(gather, cache)


def _set_column(x: Array, index: Array, values: Array) -> Array:
  """x [..., length] with x[..., index] = values [...] (index is traced)."""
  return jnp.where(jnp.arange(x.shape[-1]) == index, values[..., None], x)


def _last_tokens(sequences: Array, cur_len: Array) -> Array:
  """sequences [n, length] -> [n, 1]: the token at cur_len - 1, the decoder's next input."""
  return jax.lax.dynamic_slice_in_dim(sequences, cur_len - 1, 1, axis=1)


# ----------------------------------------------------------------------------- searches

# tokens_to_logits(tokens [n, 1] int32, cache) -> (logits [n, vocab] float32, cache): one decoder
# step on the static self-attention cache. The searches see only this closure and its cache.
TokensToLogits = Callable[[Array, Any], tuple[Array, Any]]


@flax.struct.dataclass
class SampleState:
  """Loop state of greedy search and multinomial sampling (HF `_sample`)."""

  cur_len: Array  # [] int32: tokens per row so far (start token included) = next write position
  sequences: Array  # [n, max_length] int32: start token, generated tokens, pad after EOS
  finished: Array  # [n] bool: the row has emitted EOS
  cache: Any  # decoder self-attention cache, rows [n, ...]
  rng: Array  # [2] uint32 PRNG key, split once per step


def greedy_or_sample(tokens_to_logits: TokensToLogits, cache, n: int, s: GenerationSettings,
                     rng: Array) -> GenerateOutput:
  """HF `_sample`: per step argmax (greedy) or a multinomial draw over the processed logits.

  n rows (batch * num_return_sequences), each stopping at EOS and padded after it; the loop ends
  when every row has finished or max_length is reached. cache has n rows.
  """
  sequences = jnp.full((n, s.max_length), s.pad_token_id, jnp.int32).at[:, 0].set(
      s.decoder_start_token_id)  # [n, max_length]

  def cond(st: SampleState) -> Array:
    return (st.cur_len < s.max_length) & ~jnp.all(st.finished)

  def body(st: SampleState) -> SampleState:
    logits, cache = tokens_to_logits(_last_tokens(st.sequences, st.cur_len), st.cache)  # [n, vocab]
    scores = process_scores(logits, st.sequences, st.cur_len, s)  # [n, vocab]
    rng, step_rng = jax.random.split(st.rng)
    if s.do_sample:
      tokens = jax.random.categorical(step_rng, scores, axis=-1)  # [n]
    else:
      tokens = jnp.argmax(scores, axis=-1)  # [n]
    tokens = jnp.where(st.finished, s.pad_token_id, tokens).astype(jnp.int32)  # [n]
    return SampleState(cur_len=st.cur_len + 1,
                       sequences=_set_column(st.sequences, st.cur_len, tokens),  # [n, max_length]
                       finished=st.finished | _is_eos(tokens, s.eos_token_ids),  # [n]
                       cache=cache, rng=rng)

  init = SampleState(cur_len=jnp.array(1, jnp.int32), sequences=sequences,
                     finished=jnp.zeros((n,), bool), cache=cache, rng=rng)
  return GenerateOutput(sequences=jax.lax.while_loop(cond, body, init).sequences)


@flax.struct.dataclass
class BeamState:
  """Loop state of beam search (HF `_beam_search`'s tensors, names in parentheses)."""

  cur_len: Array  # [] int32: tokens per beam so far (start token included) = next write position
  running: Array  # [batch, beams, length] int32: live hypotheses (running_sequences)
  running_scores: Array  # [batch, beams] float32: their summed log-probs (running_beam_scores)
  sequences: Array  # [batch, beams, length] int32: finished hypotheses, best first (sequences)
  beam_scores: Array  # [batch, beams] float32: their length-normalised scores, BEAM_MASK if empty
  finished: Array  # [batch, beams] bool: the slot holds a finished hypothesis (is_sent_finished)
  improvable: Array  # [batch, 1] bool: running beams may still beat the finished ones
  #                    (is_early_stop_heuristic_unsatisfied)
  hits: Array  # [batch, keep] bool: last step's candidates that stopped
  #              (next_token_hits_stopping_criteria)
  cache: Any  # decoder self-attention cache, rows [batch * beams, ...]


def beam_search(tokens_to_logits: TokensToLogits, cache, batch: int,
                s: GenerationSettings) -> GenerateOutput:
  """HF 4.57 `_beam_search` with static shapes, in one `lax.while_loop`.

  Each step keeps the top `keep` = max(2, 1 + #eos) * beams candidates over beams x vocab; the
  best `beams` that did not stop continue, those that stopped among the top `beams` ranks are
  merged into the finished set by length-normalised score; the loop ends by HF's rule
  (`_beam_search_has_unfinished_sequences`). cache has batch * beams rows. Returns the best
  num_return_sequences finished hypotheses per input and their scores (HF sequences_scores).
  """
  beams, length, lp = s.num_beams, s.max_length, s.length_penalty
  keep = max(2, 1 + len(s.eos_token_ids)) * beams  # candidates kept per step (HF beams_to_keep)
  top_beam_mask = jnp.arange(keep) < beams  # [keep]

  running = jnp.full((batch, beams, length), s.pad_token_id, jnp.int32).at[:, :, 0].set(
      s.decoder_start_token_id)  # [batch, beams, length]
  init = BeamState(
      cur_len=jnp.array(1, jnp.int32), running=running,
      running_scores=jnp.zeros((batch, beams), jnp.float32).at[:, 1:].set(BEAM_MASK),
      sequences=running, beam_scores=jnp.full((batch, beams), BEAM_MASK, jnp.float32),
      finished=jnp.zeros((batch, beams), bool), improvable=jnp.ones((batch, 1), bool),
      hits=jnp.zeros((batch, keep), bool), cache=cache)

  def cond(st: BeamState) -> Array:
    open_beam = ~(jnp.all(st.finished) & (s.early_stopping is True))
    return (st.cur_len < length) & jnp.any(st.improvable) & open_beam & ~jnp.all(st.hits)

  def body(st: BeamState) -> BeamState:
    cur_len = st.cur_len
    # 1. One decoder step for every running beam; HF's processors on the log-probs.
    flat_running = flatten_beam_dim(st.running)  # [batch * beams, length]
    logits, cache = tokens_to_logits(_last_tokens(flat_running, cur_len), st.cache)
    log_probs = jax.nn.log_softmax(logits, axis=-1)  # [batch * beams, vocab]
    log_probs = process_scores(log_probs, flat_running, cur_len, s)  # [batch * beams, vocab]
    vocab = log_probs.shape[-1]
    log_probs = unflatten_beam_dim(log_probs, batch, beams) + st.running_scores[:, :, None]
    #                                                                  [batch, beams, vocab]

    # 2. Top `keep` continuations over beams x vocab (HF `_get_top_k_continuations`).
    topk_scores, topk_index = jax.lax.top_k(log_probs.reshape(batch, beams * vocab), keep)
    parents, tokens = topk_index // vocab, (topk_index % vocab).astype(jnp.int32)  # [batch, keep]
    topk_seqs = gather_beams(st.running, parents)  # [batch, keep, length]
    topk_seqs = _set_column(topk_seqs, cur_len, tokens)  # [batch, keep, length]
    hits = (cur_len + 1 >= length) | _is_eos(tokens, s.eos_token_ids)  # [batch, keep]

    # 3. Running beams for the next step: the best `beams` candidates that did not stop
    #    (HF `_get_running_beams_for_next_iteration`).
    topk_running_scores = topk_scores + hits.astype(jnp.float32) * BEAM_MASK  # [batch, keep]
    next_index = jax.lax.top_k(topk_running_scores, beams)[1]  # [batch, beams]
    running, running_scores, running_parents = gather_beams(
        (topk_seqs, topk_running_scores, parents), next_index)
    #   [batch, beams, length], [batch, beams], [batch, beams]

    # 4. Finished hypotheses: merge the candidates that just stopped among the top `beams` ranks,
    #    length-normalised, unless this row can no longer change (HF `_update_finished_beams`).
    just_finished = hits & top_beam_mask[None, :]  # [batch, keep]
    scored = topk_scores / (cur_len.astype(jnp.float32) ** lp)  # [batch, keep]
    full = jnp.all(st.finished, axis=-1, keepdims=True) & (s.early_stopping is True)  # [batch, 1]
    scored = scored + full.astype(jnp.float32) * BEAM_MASK
    scored = scored + (~st.improvable).astype(jnp.float32) * BEAM_MASK
    scored = scored + (~just_finished).astype(jnp.float32) * BEAM_MASK  # [batch, keep]
    merged_scores = jnp.concatenate([st.beam_scores, scored], axis=1)  # [batch, beams + keep]
    best = jax.lax.top_k(merged_scores, beams)[1]  # [batch, beams]
    sequences, beam_scores, finished = gather_beams(
        (jnp.concatenate([st.sequences, topk_seqs], axis=1), merged_scores,
         jnp.concatenate([st.finished, just_finished], axis=1)), best)
    #   [batch, beams, length], [batch, beams], [batch, beams]

    # 5. The cache follows each running beam's parent; HF's early-stop heuristic
    #    (`_check_early_stop_heuristic`) on the new state.
    cache = gather_cache_beams(cache, running_parents)  # rows [batch * beams, ...]
    cur_len = cur_len + 1
    if s.early_stopping == "never" and lp > 0.0:
      best_len = jnp.asarray(length - 1, jnp.float32)
    else:
      best_len = (cur_len - 1).astype(jnp.float32)
    best_running = running_scores[:, :1] / best_len ** lp  # [batch, 1]
    worst_finished = jnp.where(finished, jnp.min(beam_scores, axis=1, keepdims=True),
                               BEAM_MASK)  # [batch, beams]
    improvable = st.improvable & jnp.any(best_running > worst_finished, axis=-1,
                                         keepdims=True)  # [batch, 1]
    return BeamState(cur_len=cur_len, running=running, running_scores=running_scores,
                     sequences=sequences, beam_scores=beam_scores, finished=finished,
                     improvable=improvable, hits=hits, cache=cache)

  final = jax.lax.while_loop(cond, body, init)
  r = s.num_return_sequences
  return GenerateOutput(sequences=final.sequences[:, :r].reshape(batch * r, length),
                        scores=final.beam_scores[:, :r].reshape(batch * r))  # [batch * r, ...]


# ----------------------------------------------------------------------------- model plumbing


def _generate_impl(model, s: GenerationSettings, params, inputs: dict,
                   rng: Array) -> GenerateOutput:
  """Encoder once, cross-attention K/V once, then the search over a tokens_to_logits closure."""
  jit_generate.trace_count += 1  # runs at trace time only: one count per compilation
  encoder_mask = inputs.get("attention_mask")  # [batch, src] or None (vision)
  batch = jax.tree_util.tree_leaves(inputs)[0].shape[0]
  enc = model.apply({"params": params}, **inputs, method="encode")
  # Per decoder layer K/V [batch, src, heads, head_dim]: batch rows only, the n = batch * beams
  # (or * num_return_sequences) decoder rows attend to their input's row (grouped attention).
  cross_kv = model.apply({"params": params}, encoder_hidden_states=enc.last_hidden_state,
                         method="cross_kv")

  def tokens_to_logits(tokens: Array, cache) -> tuple[Array, Any]:
    out, mutated = model.apply({"params": params, "cache": cache}, decoder_input_ids=tokens,
                               cross_kv=cross_kv, encoder_attention_mask=encoder_mask,
                               decode=True, method="decode", mutable=["cache"])
    return out.logits[:, -1].astype(jnp.float32), mutated["cache"]  # [n, vocab]

  if s.num_beams > 1:
    cache = model.init_cache(batch * s.num_beams, s.max_length)
    return beam_search(tokens_to_logits, cache, batch, s)
  n = batch * s.num_return_sequences
  return greedy_or_sample(tokens_to_logits, model.init_cache(n, s.max_length), n, s, rng)


# The compiled search, one compilation per (model, settings, input shapes and shardings).
# `jit_generate.trace_count` counts its traces (= compilations), so tests can prove reuse.
jit_generate = jax.jit(_generate_impl, static_argnums=(0, 1))
jit_generate.trace_count = 0


# ----------------------------------------------------------------------------- public API

_UNSET = object()


def _bucket(length: int, limit: int | None) -> int:
  """Input length padded to a power of two (>= 16) so ragged inputs reuse a few compilations."""
  bucket = 16
  while bucket < length:
    bucket *= 2
  return min(bucket, limit) if limit is not None and length <= limit else max(bucket, length)


def _default(name: str, value, model, fallback=None):
  """Explicit argument > generation_config.json > composite config > decoder config > fallback."""
  if value is not _UNSET and value is not None:
    return value
  gen = getattr(model, "generation_defaults", None) or {}
  if gen.get(name) is not None:
    return gen[name]
  for cfg in (model.config, model.config.decoder):
    if getattr(cfg, name, None) is not None:
      return getattr(cfg, name)
  return fallback


def _as_tuple(ids) -> tuple[int, ...] | None:
  if ids is None:
    return None
  return tuple(int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids]))


def resolve_settings(model, *, max_length=_UNSET, max_new_tokens=None, min_length=_UNSET,
                     num_beams=_UNSET, do_sample=_UNSET, temperature=_UNSET, top_k=_UNSET,
                     top_p=_UNSET, length_penalty=_UNSET, early_stopping=_UNSET,
                     no_repeat_ngram_size=_UNSET, repetition_penalty=_UNSET,
                     num_return_sequences=_UNSET, decoder_start_token_id=_UNSET,
                     eos_token_id=_UNSET, pad_token_id=_UNSET, forced_bos_token_id=_UNSET,
                     forced_eos_token_id=_UNSET) -> GenerationSettings:
  """Fills every setting from the call, the checkpoint's generation config, or HF's defaults."""
  d = lambda name, value, fallback=None: _default(name, value, model, fallback)  # noqa: E731
  start = d("decoder_start_token_id", decoder_start_token_id)
  if start is None:
    start = d("bos_token_id", _UNSET)
  if start is None:
    raise ValueError("no decoder_start_token_id: pass decoder_start_token_id=... (e.g. the "
                     "tokenizer's [CLS] id for BERT decoders) or set it in the model config")
  eos = _as_tuple(d("eos_token_id", eos_token_id)) or ()
  pad = d("pad_token_id", pad_token_id)
  if pad is None:
    pad = eos[0] if eos else 0
  if max_new_tokens is not None:
    max_len = int(max_new_tokens) + 1  # the decoder prompt is the start token
  else:
    max_len = d("max_length", max_length, 20 + 1)  # HF: 20 new tokens by default
  settings = GenerationSettings(
      max_length=int(max_len), decoder_start_token_id=int(start), pad_token_id=int(pad),
      eos_token_ids=eos, min_length=int(d("min_length", min_length, 0)),
      num_beams=int(d("num_beams", num_beams, 1)), do_sample=bool(d("do_sample", do_sample, False)),
      temperature=float(d("temperature", temperature, 1.0)), top_k=int(d("top_k", top_k, 50)),
      top_p=float(d("top_p", top_p, 1.0)), length_penalty=float(d("length_penalty", length_penalty, 1.0)),
      early_stopping=d("early_stopping", early_stopping, False),
      no_repeat_ngram_size=int(d("no_repeat_ngram_size", no_repeat_ngram_size, 0)),
      repetition_penalty=float(d("repetition_penalty", repetition_penalty, 1.0)),
      num_return_sequences=int(d("num_return_sequences", num_return_sequences, 1)),
      forced_bos_token_id=d("forced_bos_token_id", forced_bos_token_id),
      forced_eos_token_ids=_as_tuple(d("forced_eos_token_id", forced_eos_token_id)))
  _validate(settings, model)
  return settings


def _validate(s: GenerationSettings, model) -> None:
  max_positions = model.config.decoder.max_positions
  if s.max_length < 2:
    raise ValueError(f"max_length={s.max_length} leaves no room to generate; use >= 2 "
                     "(or max_new_tokens >= 1)")
  if s.max_length > max_positions:
    raise ValueError(f"max_length={s.max_length} exceeds the decoder's {max_positions} positions; "
                     f"lower max_length / max_new_tokens")
  if s.early_stopping not in (True, False, "never"):
    raise ValueError(f"early_stopping must be True, False or 'never', got {s.early_stopping!r}")
  if s.num_beams < 1:
    raise ValueError(f"num_beams must be >= 1, got {s.num_beams}")
  if s.num_beams > 1 and s.do_sample:
    raise ValueError("beam sampling (do_sample=True with num_beams > 1) is not implemented; use "
                     "num_beams=1 for sampling or do_sample=False for beam search")
  if s.num_beams > 1 and s.num_return_sequences > s.num_beams:
    raise ValueError(f"num_return_sequences={s.num_return_sequences} exceeds num_beams="
                     f"{s.num_beams}; raise num_beams")
  if s.num_beams == 1 and not s.do_sample and s.num_return_sequences != 1:
    raise ValueError("greedy search returns one sequence per input: use num_return_sequences=1, "
                     "beam search (num_beams > 1) or sampling (do_sample=True)")
  if s.do_sample and (s.temperature <= 0 or not 0 < s.top_p <= 1 or s.top_k < 0):
    raise ValueError(f"invalid sampling settings: temperature={s.temperature} must be > 0, "
                     f"top_p={s.top_p} in (0, 1], top_k={s.top_k} >= 0")
  vocab = model.config.decoder.vocab_size
  ids = [s.decoder_start_token_id, s.pad_token_id, *s.eos_token_ids]
  ids += [s.forced_bos_token_id] if s.forced_bos_token_id is not None else []
  ids += list(s.forced_eos_token_ids or ())
  if any(not 0 <= i < vocab for i in ids):
    raise ValueError(f"special token ids {ids} must lie in [0, {vocab}) (the decoder vocabulary)")


def generate(model, params, input_ids=None, attention_mask=None, pixel_values=None, *,
             prng_key: Array | int | None = None, bucket_inputs: bool = True,
             **settings) -> GenerateOutput:
  """Generates with transformers' `generate` semantics, as one compiled search.

  Text models take input_ids [batch, src_len] (+ attention_mask), vision models (ViT / DeiT
  encoders) pixel_values [batch, channels, height, width]; settings are the HF keywords
  (max_length, max_new_tokens, min_length, num_beams, do_sample, temperature, top_k, top_p,
  length_penalty, early_stopping, no_repeat_ngram_size, repetition_penalty,
  num_return_sequences, decoder_start_token_id, eos_token_id, pad_token_id,
  forced_bos_token_id, forced_eos_token_id); unset ones come from the checkpoint's
  generation_config.json / config. Inputs are padded to a power-of-two length bucket so ragged
  batches reuse compilations; the same shapes and settings never recompile.

  Returns GenerateOutput: sequences [batch * num_return_sequences, max_length] int32 (decoder
  start token first, right-padded with pad_token_id) and, for beam search, scores (HF's
  sequences_scores).
  """
  s = resolve_settings(model, **settings)
  if pixel_values is not None:
    if input_ids is not None:
      raise ValueError("pass pixel_values (vision encoders) or input_ids (text encoders), not both")
    inputs = {"pixel_values": pixel_values if isinstance(pixel_values, jax.Array)
              else np.asarray(pixel_values, np.float32)}
    model.check_inputs(inputs)  # a text model, or NCHW / image-size mistakes: clear errors
  else:
    if input_ids is None:
      raise ValueError("generate needs input_ids (text encoders) or pixel_values (vision encoders)")
    model.check_inputs({"input_ids": input_ids})  # ids in range / length, before padding
    ids = np.asarray(input_ids) if not isinstance(input_ids, jax.Array) else input_ids
    if ids.ndim != 2:
      raise ValueError(f"input_ids must be [batch, length], got shape {tuple(ids.shape)}")
    mask = np.ones(ids.shape, np.int32) if attention_mask is None else attention_mask
    mask = mask if isinstance(mask, jax.Array) else np.asarray(mask)
    if np.shape(mask) != tuple(ids.shape):
      raise ValueError(f"attention_mask shape {tuple(np.shape(mask))} != input_ids shape "
                       f"{tuple(ids.shape)}")
    length = ids.shape[1]
    target = _bucket(length, model.config.encoder.max_positions) if bucket_inputs else length
    if target > length:
      pad_id = model.config.encoder.pad_token_id or 0
      # numpy stays numpy (uncommitted: jit places it, also on a multi-host mesh); jax arrays
      # keep their sharding through jnp.pad.
      xp = jnp if isinstance(ids, jax.Array) else np
      ids = xp.pad(ids, ((0, 0), (0, target - length)), constant_values=pad_id)
      mask = (jnp if isinstance(mask, jax.Array) else np).pad(mask, ((0, 0), (0, target - length)))
    inputs = {"input_ids": ids.astype(np.int32), "attention_mask": mask.astype(np.int32)}
  if prng_key is None:
    prng_key = jax.random.PRNGKey(0)
  elif isinstance(prng_key, int):
    prng_key = jax.random.PRNGKey(prng_key)
  return jit_generate(model, s, params, inputs, prng_key)


assert set(SETTING_NAMES) == set(inspect.signature(resolve_settings).parameters) - {"model"}, (
    "resolve_settings' keywords and SETTING_NAMES disagree")
