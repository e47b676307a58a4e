"""Jit-compiled generation: greedy, multinomial sampling and beam search.

Semantics follow transformers 4.57.6 PyTorch `generate` (`generation/utils.py` `_sample` and
`_beam_search`, `generation/logits_process.py`), not HF Flax: EOS candidates ranked anywhere in
the top 2K can finish a beam, beams still running at `max_length` are finalised with length
normalisation, `min_length` bans EOS while `cur_len < min_length`, and the repetition penalty
exists. The logits processors live in `edjax.generation_processors`.

The structure is flax `examples/wmt/decode.py`: a typed loop state (`SampleState`, `BeamState`)
with static `[batch, beams, max_length]` shapes in one `lax.while_loop` that stops as soon as
HF's stopping rule says so; the searches see the model only through a `tokens_to_logits(tokens,
cache)` closure; beams are picked with `gather_beams` along the beam axis (so a batch-sharded
state and cache stay sharded). `_generate_impl` runs the encoder and the cross-attention K/V
once per input (beams share them, see `layers.dot_product_attention`) and builds the closure.

A decoder prompt (`decoder_input_ids` [batch, P], HF's: every row P tokens) is padded to a
power-of-two bucket `prompt_width` and its length P is traced, so prompts of one bucket share a
compilation: the first P - 1 tokens fill the static cache in one prefill call before the loop,
which then starts at cur_len = P by feeding token P - 1, exactly like a call without a prompt
(P = 1, the start token) starts at cur_len = 1.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from edjax.generation_processors import (  # noqa: F401  (the beam helpers stay public here)
    bad_words_setting, bucket_prompt_length, flatten_beam_dim, gather_beams, gather_cache_beams,
    is_eos, last_tokens, prepare_decoder_prompt, process_scores, set_column, unflatten_beam_dim,
    write_step)
from edjax.generation_settings import (  # noqa: F401  (public here, as before the split)
    _UNSET, HF_KEYWORDS, SETTING_NAMES, GenerationSettings, _start_token, resolve_settings)

from edjax.model_configs import with_runtime_options
from edjax.models.beam_slots import add_beam_slots
from edjax.models.attention import check_attention_impl
from edjax.models.encoder_decoder import model_for_config

Array = jax.Array
BEAM_MASK = -1.0e9  # HF's "never pick this" offset
# Beam search reorders slot tables, not the K/V cache (edjax.models.beam_slots); off: the whole
# cache is gathered by parent beam every step, as HF does (benchmarks compare both).
BEAM_SLOTS = True


@flax.struct.dataclass
class GenerateOutput:
  """What `generate` returns; n = batch * num_return_sequences, P = decoder prompt length (1:
  the start token alone), steps = max_length - 1 (the static bound on generated tokens; step t
  chose the token at sequences[:, P + t]). Steps the loop did not run hold 0.0 (scores) and -1
  (beam_indices), HF's own mask values, so a row's sums need no masking.

  sequences: [n, max_length] int32: the prompt (or start token) first, then the generated
    tokens, right-padded with pad_token_id (HF's sequences, which HF crops to the longest row).
  scores: [n] float32 or None. Beam search: HF's `sequences_scores` (always). Greedy / sampling
    with output_scores=True: the sum over the generated tokens, up to and including EOS, of
    log_softmax(processed scores) of the chosen token, i.e. HF's
    `compute_transition_scores(sequences, scores, normalize_logits=True)` summed over those
    steps. Otherwise None.
  step_scores: output_scores=True only: [rows, steps, vocab] float32, HF's `out.scores` tuple
    stacked on axis 1: the processed scores of each step (greedy / sampling: processed logits,
    warpers included, rows = n; beam search: processed log-probs of the running beams before
    their running scores are added, rows = batch * num_beams in HF's order). It is carried in
    the loop: rows * steps * vocab * 4 bytes, as HF's tuple; off (None) it costs nothing.
  transition_scores: output_scores=True only: [n, steps] float32, HF's
    `compute_transition_scores(sequences, scores, beam_indices)`: per step the step score of the
    token taken (greedy / sampling: also on rows already finished, where the token is the pad,
    as HF; beam search: 0.0 after the hypothesis ended).
  beam_indices: beam search with output_scores=True only: [n, steps] int32, HF's `beam_indices`
    (the running row in [0, batch * num_beams) each token came from; -1 after the end).
  """

  sequences: Array
  scores: Array | None = None
  step_scores: Array | None = None
  transition_scores: Array | None = None
  beam_indices: Array | None = None


@flax.struct.dataclass
class DecoderPrompt:
  """A decoder prompt in the search: ids [rows, prompt_width] int32 (the P prompt tokens, then
  pad up to the bucket) and length [] int32 = P (traced: prompts of one bucket share a compile)."""

  ids: Array
  length: Array


# ----------------------------------------------------------------------------- helpers


def _start(s: GenerationSettings, prompt: DecoderPrompt | None, rows: int):
  """The initial sequences [rows, max_length] int32, cur_len / prompt length P and HF's
  max_length `limit`: Python ints without a prompt (the graph of a prompt-free call is unchanged),
  traced [] int32 with one."""
  sequences = jnp.full((rows, s.max_length), s.pad_token_id, jnp.int32)  # [rows, max_length]
  if prompt is None:
    return sequences.at[:, 0].set(s.decoder_start_token_id), 1, s.max_length
  sequences = sequences.at[:, :prompt.ids.shape[1]].set(prompt.ids)
  limit = s.max_length if s.max_new_tokens is None else s.max_new_tokens + prompt.length
  return sequences, prompt.length, limit


def _generated_before(cur_len: Array, prompt_len: Array | int) -> Array:
  """Tokens generated so far (after the prompt); cur_len itself when the prompt is the start token."""
  return cur_len if isinstance(prompt_len, int) and prompt_len == 1 else cur_len + 1 - prompt_len


# ----------------------------------------------------------------------------- searches

# tokens_to_logits(tokens [n, 1] int32, cache) -> (logits [n, vocab] float32, cache): one decoder
# step on the static self-attention cache. The searches see only this closure and its cache.
TokensToLogits = Callable[[Array, Any], tuple[Array, Any]]


@flax.struct.dataclass
class SampleState:
  """Loop state of greedy search and multinomial sampling (HF `_sample`)."""

  cur_len: Array  # [] int32: tokens per row so far (prompt included) = next write position
  sequences: Array  # [n, max_length] int32: prompt / start token, generated tokens, pad after EOS
  finished: Array  # [n] bool: the row has emitted EOS
  cache: Any  # decoder self-attention cache, rows [n, ...]
  rng: Array  # [2] uint32 PRNG key, split once per step
  # output_scores=True only (None otherwise: no cost): HF's per-step outputs.
  step_scores: Array | None = None  # [n, max_length - 1, vocab] float32: processed scores
  token_scores: Array | None = None  # [n, max_length - 1] float32: those of the chosen tokens
  log_prob_sum: Array | None = None  # [n] float32: sum of chosen log-probs up to EOS


def greedy_or_sample(tokens_to_logits: TokensToLogits, cache, n: int, s: GenerationSettings,
                     rng: Array, prompt: DecoderPrompt | None = None) -> GenerateOutput:
  """HF `_sample`: per step argmax (greedy) or a multinomial draw over the processed logits.

  n rows (batch * num_return_sequences), each stopping at EOS and padded after it; the loop ends
  when every row has finished or HF's max_length is reached. cache has n rows (the prompt's
  first P - 1 tokens already in it); prompt None = the start token alone.
  """
  sequences, cur_len, limit = _start(s, prompt, n)  # [n, max_length]
  prompt_len = cur_len

  def cond(st: SampleState) -> Array:
    return (st.cur_len < limit) & ~jnp.all(st.finished)

  def body(st: SampleState) -> SampleState:
    logits, cache = tokens_to_logits(last_tokens(st.sequences, st.cur_len), st.cache)  # [n, vocab]
    scores = process_scores(logits, st.sequences, st.cur_len, s, prompt_len, limit)  # [n, vocab]
    rng, step_rng = jax.random.split(st.rng)
    if s.do_sample:
      tokens = jax.random.categorical(step_rng, scores, axis=-1)  # [n]
    else:
      tokens = jnp.argmax(scores, axis=-1)  # [n]
    tokens = jnp.where(st.finished, s.pad_token_id, tokens).astype(jnp.int32)  # [n]
    extra = {}
    if s.output_scores:
      step = st.cur_len - prompt_len
      chosen = jnp.take_along_axis(scores, tokens[:, None], axis=1)[:, 0]  # [n]
      log_prob = jnp.take_along_axis(jax.nn.log_softmax(scores, axis=-1), tokens[:, None],
                                     axis=1)[:, 0]  # [n]
      extra = dict(step_scores=write_step(st.step_scores, step, scores),
                   token_scores=set_column(st.token_scores, step, chosen),
                   log_prob_sum=st.log_prob_sum + jnp.where(st.finished, 0.0, log_prob))
    return SampleState(cur_len=st.cur_len + 1,
                       sequences=set_column(st.sequences, st.cur_len, tokens),  # [n, max_length]
                       finished=st.finished | is_eos(tokens, s.eos_token_ids),  # [n]
                       cache=cache, rng=rng, **extra)

  extra = {}
  if s.output_scores:
    vocab = jax.eval_shape(tokens_to_logits, sequences[:, :1], cache)[0].shape[-1]
    steps = s.max_length - 1
    extra = dict(step_scores=jnp.zeros((n, steps, vocab), jnp.float32),
                 token_scores=jnp.zeros((n, steps), jnp.float32),
                 log_prob_sum=jnp.zeros((n,), jnp.float32))
  init = SampleState(cur_len=jnp.asarray(cur_len, jnp.int32), sequences=sequences,
                     finished=jnp.zeros((n,), bool), cache=cache, rng=rng, **extra)
  final = jax.lax.while_loop(cond, body, init)
  if not s.output_scores:
    return GenerateOutput(sequences=final.sequences)
  return GenerateOutput(sequences=final.sequences, scores=final.log_prob_sum,
                        step_scores=final.step_scores, transition_scores=final.token_scores)


@flax.struct.dataclass
class BeamState:
  """Loop state of beam search (HF `_beam_search`'s tensors, names in parentheses)."""

  cur_len: Array  # [] int32: tokens per beam so far (prompt included) = next write position
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
  # output_scores=True only (None otherwise): per hypothesis, per generated step (steps =
  # length - 1), the running row its token came from and that token's processed log-prob,
  # carried along with `running` / `sequences`; and HF's per-step scores of the running beams.
  running_indices: Array | None = None  # [batch, beams, steps] int32 (running_beam_indices)
  running_token_scores: Array | None = None  # [batch, beams, steps] float32
  indices: Array | None = None  # [batch, beams, steps] int32 (beam_indices)
  token_scores: Array | None = None  # [batch, beams, steps] float32
  step_scores: Array | None = None  # [batch * beams, steps, vocab] float32 (HF scores)


def beam_search(tokens_to_logits: TokensToLogits, cache, batch: int, s: GenerationSettings,
                prompt: DecoderPrompt | None = None) -> GenerateOutput:
  """HF 4.57 `_beam_search` with static shapes, in one `lax.while_loop`.

  Each step keeps the top `keep` = max(2, 1 + #eos) * beams candidates over beams x vocab; the
  best `beams` that did not stop continue, those that stopped among the top `beams` ranks are
  merged into the finished set by length-normalised score (length = tokens after the prompt);
  the loop ends by HF's rule (`_beam_search_has_unfinished_sequences`). cache has batch * beams
  rows. Returns the best num_return_sequences finished hypotheses per input and their scores
  (HF sequences_scores), with output_scores HF's per-step outputs (see GenerateOutput).
  """
  beams, length, lp = s.num_beams, s.max_length, s.length_penalty
  keep = max(2, 1 + len(s.eos_token_ids)) * beams  # candidates kept per step (HF beams_to_keep)
  top_beam_mask = jnp.arange(keep) < beams  # [keep]
  flat_start, cur_len0, limit = _start(s, prompt, batch * beams)
  prompt_len = cur_len0
  if BEAM_SLOTS:  # the K/V cache stays in place, beams follow slot tables (edjax.models.beam_slots)
    cache = add_beam_slots(cache, batch, beams)
  running = unflatten_beam_dim(flat_start, batch, beams)  # [batch, beams, length]

  def cond(st: BeamState) -> Array:
    open_beam = ~(jnp.all(st.finished) & (s.early_stopping is True))
    return (st.cur_len < limit) & jnp.any(st.improvable) & open_beam & ~jnp.all(st.hits)

  def body(st: BeamState) -> BeamState:
    cur_len = st.cur_len
    # 1. One decoder step for every running beam; HF's processors on the log-probs.
    flat_running = flatten_beam_dim(st.running)  # [batch * beams, length]
    logits, cache = tokens_to_logits(last_tokens(flat_running, cur_len), st.cache)
    log_probs = jax.nn.log_softmax(logits, axis=-1)  # [batch * beams, vocab]
    log_probs = process_scores(log_probs, flat_running, cur_len, s, prompt_len, limit)
    processed = log_probs  # [batch * beams, vocab]: HF's per-step `scores`
    vocab = log_probs.shape[-1]
    log_probs = unflatten_beam_dim(log_probs, batch, beams) + st.running_scores[:, :, None]
    #                                                                  [batch, beams, vocab]

    # 2. Top `keep` continuations over beams x vocab (HF `_get_top_k_continuations`).
    topk_scores, topk_index = jax.lax.top_k(log_probs.reshape(batch, beams * vocab), keep)
    parents, tokens = topk_index // vocab, (topk_index % vocab).astype(jnp.int32)  # [batch, keep]
    topk_seqs = gather_beams(st.running, parents)  # [batch, keep, length]
    topk_seqs = set_column(topk_seqs, cur_len, tokens)  # [batch, keep, length]
    hits = (cur_len + 1 >= limit) | is_eos(tokens, s.eos_token_ids)  # [batch, keep]
    # Per-candidate history (output_scores): parent row and token log-prob at this step.
    topk_hist = ()
    if s.output_scores:
      step = cur_len - prompt_len
      rows = parents + (jnp.arange(batch) * beams)[:, None]  # [batch, keep] flat running row
      token_lp = jnp.take_along_axis(processed.reshape(batch, beams * vocab), topk_index, axis=1)
      topk_hist = (set_column(gather_beams(st.running_indices, parents), step, rows),
                   set_column(gather_beams(st.running_token_scores, parents), step, token_lp))
      #            [batch, keep, steps] each

    # 3. Running beams for the next step: the best `beams` candidates that did not stop
    #    (HF `_get_running_beams_for_next_iteration`).
    topk_running_scores = topk_scores + hits.astype(jnp.float32) * BEAM_MASK  # [batch, keep]
    next_index = jax.lax.top_k(topk_running_scores, beams)[1]  # [batch, beams]
    running, running_scores, running_parents, *running_hist = gather_beams(
        (topk_seqs, topk_running_scores, parents, *topk_hist), next_index)
    #   [batch, beams, length], [batch, beams], [batch, beams]

    # 4. Finished hypotheses: merge the candidates that just stopped among the top `beams` ranks,
    #    length-normalised, unless this row can no longer change (HF `_update_finished_beams`).
    just_finished = hits & top_beam_mask[None, :]  # [batch, keep]
    generated = _generated_before(cur_len, prompt_len)  # tokens after the prompt, this one included
    scored = topk_scores / (generated.astype(jnp.float32) ** lp)  # [batch, keep]
    full = jnp.all(st.finished, axis=-1, keepdims=True) & (s.early_stopping is True)  # [batch, 1]
    scored = scored + full.astype(jnp.float32) * BEAM_MASK
    scored = scored + (~st.improvable).astype(jnp.float32) * BEAM_MASK
    scored = scored + (~just_finished).astype(jnp.float32) * BEAM_MASK  # [batch, keep]
    merged_scores = jnp.concatenate([st.beam_scores, scored], axis=1)  # [batch, beams + keep]
    best = jax.lax.top_k(merged_scores, beams)[1]  # [batch, beams]
    finished_hist = ((st.indices, st.token_scores) if s.output_scores else ())
    sequences, beam_scores, finished, *hist = gather_beams(
        (jnp.concatenate([st.sequences, topk_seqs], axis=1), merged_scores,
         jnp.concatenate([st.finished, just_finished], axis=1),
         *(jnp.concatenate([old, new], axis=1) for old, new in zip(finished_hist, topk_hist))),
        best)
    #   [batch, beams, length], [batch, beams], [batch, beams]

    # 5. The cache follows each running beam's parent; HF's early-stop heuristic
    #    (`_check_early_stop_heuristic`) on the new state.
    cache = gather_cache_beams(cache, running_parents)  # rows [batch * beams, ...]
    cur_len = cur_len + 1
    if s.early_stopping == "never" and lp > 0.0:
      best_len = jnp.asarray(limit - prompt_len, jnp.float32)
    else:
      best_len = (cur_len - prompt_len).astype(jnp.float32)
    best_running = running_scores[:, :1] / best_len ** lp  # [batch, 1]
    worst_finished = jnp.where(finished, jnp.min(beam_scores, axis=1, keepdims=True),
                               BEAM_MASK)  # [batch, beams]
    improvable = st.improvable & jnp.any(best_running > worst_finished, axis=-1,
                                         keepdims=True)  # [batch, 1]
    extra = {}
    if s.output_scores:
      extra = dict(running_indices=running_hist[0], running_token_scores=running_hist[1],
                   indices=hist[0], token_scores=hist[1],
                   step_scores=write_step(st.step_scores, st.cur_len - prompt_len, processed))
    return BeamState(cur_len=cur_len, running=running, running_scores=running_scores,
                     sequences=sequences, beam_scores=beam_scores, finished=finished,
                     improvable=improvable, hits=hits, cache=cache, **extra)

  extra = {}
  if s.output_scores:
    steps = length - 1
    vocab = jax.eval_shape(tokens_to_logits, flat_start[:, :1], cache)[0].shape[-1]
    no_index = jnp.full((batch, beams, steps), -1, jnp.int32)
    no_score = jnp.zeros((batch, beams, steps), jnp.float32)
    extra = dict(running_indices=no_index, running_token_scores=no_score, indices=no_index,
                 token_scores=no_score,
                 step_scores=jnp.zeros((batch * beams, steps, vocab), jnp.float32))
  init = BeamState(
      cur_len=jnp.asarray(cur_len0, jnp.int32), running=running,
      running_scores=jnp.zeros((batch, beams), jnp.float32).at[:, 1:].set(BEAM_MASK),
      sequences=running, beam_scores=jnp.full((batch, beams), BEAM_MASK, jnp.float32),
      finished=jnp.zeros((batch, beams), bool), improvable=jnp.ones((batch, 1), bool),
      hits=jnp.zeros((batch, keep), bool), cache=cache, **extra)

  final = jax.lax.while_loop(cond, body, init)
  r = s.num_return_sequences
  out = dict(sequences=final.sequences[:, :r].reshape(batch * r, length),
             scores=final.beam_scores[:, :r].reshape(batch * r))  # [batch * r, ...]
  if s.output_scores:
    out.update(step_scores=final.step_scores,
               transition_scores=final.token_scores[:, :r].reshape(batch * r, length - 1),
               beam_indices=final.indices[:, :r].reshape(batch * r, length - 1))
  return GenerateOutput(**out)


# ----------------------------------------------------------------------------- model plumbing


def prefill_prompt(tokens_to_logits: TokensToLogits, cache, prompt: DecoderPrompt):
  """Feeds the prompt's first P - 1 tokens to the decoder's static cache in one call.

  The call reads prompt_width - 1 tokens (a static shape); the K/V it writes past P - 1 come
  from padding, so every integer cache leaf (the cache / position counters, which count tokens
  fed) is wound back by prompt_width - P: the loop's first step then writes token P - 1 at its
  true position, and each later step overwrites one padded slot before any query can see it
  (causal mask). Without padding (P = prompt_width) the counters are left as they are.
  """
  width = prompt.ids.shape[1]
  if width == 1:
    return cache  # P = 1: nothing before the loop's first input
  _, cache = tokens_to_logits(prompt.ids[:, :width - 1], cache)
  rewind = width - prompt.length  # [] int32
  return jax.tree_util.tree_map(
      lambda x: x - rewind.astype(x.dtype) if jnp.issubdtype(x.dtype, jnp.integer) else x, cache)


# Off by default: on the loaded 2-core AMD EPYC (README, issue #14 table) generate was slower with
# it in both runs that compared (54.0 -> 61.4 s; 15.8 vs 29.4 / 22.9 s); bench_generate --ablate
# times it on. Off: the decode step reads the params as stored.
HEAD_LAYOUT = False


def head_layout_params(params, vocab: int) -> Callable[[], Any]:
  """The params for the decode step, with every decoder [vocab, width] table (the word embedding
  the tied LM head shares) transposed once, before the loop, to [width, vocab].

  Returns a function that the step calls: it transposes those leaves back, inside the loop, so
  the model sees the same values and shapes; XLA folds that transpose into the head's matmul
  (hidden [n, width] @ [width, vocab], the layout its dot kernel runs fastest) and into the
  embedding gather (reads n rows), so no copy of the table is made per step. The barrier keeps
  XLA from cancelling the two transposes. Values are exactly the params' (a transpose copies).
  """
  if not HEAD_LAYOUT or "decoder" not in params:
    return lambda: params

  def is_table(x) -> bool:
    return x.ndim == 2 and x.shape[0] == vocab and x.shape[1] < vocab

  decoder = params["decoder"]
  laid = jax.tree_util.tree_map(
      lambda x: jax.lax.optimization_barrier(x.T) if is_table(x) else x, decoder)
  flags = jax.tree_util.tree_map(is_table, decoder)

  def step_params():
    back = jax.tree_util.tree_map(lambda x, f: x.T if f else x, laid, flags)
    return {**params, "decoder": back}
  return step_params


# Cross-attention K/V laid out [.., heads, head_dim, src_len] once, before the loop; off: as the
# model returns them, [.., src_len, heads, head_dim] (benchmarks compare both).
CROSS_KV_LAYOUT = True


def cross_kv_for_steps(cross_kv) -> Callable[[Array], tuple[Any, Array]]:
  """The cross-attention K/V for the decode steps: `step(tokens) -> (cross_kv, tokens)`.

  XLA's CPU dots took both K and V as [.., heads, head_dim, src_len] (K's decode-cache layout,
  `layers.kv_to_storage`); handed [.., src_len, heads, head_dim], the compiled loop copied every
  layer's K and V into that layout on every step (12 copies of 1.5 MB per beam step at 8 x 128
  inputs, ~18 % of its op time; README, Benchmarks). So they are transposed once, before the
  loop, and each step reads them back through the inverse transpose, which cancels against the
  dot's. The optimization barrier ties them to the step's tokens: without it XLA hoists the
  loop-invariant inverse transpose out of the loop and the copies come back. Same values.
  """
  if not CROSS_KV_LAYOUT:
    return lambda tokens: (cross_kv, tokens)
  stored = jax.tree_util.tree_map(lambda x: jnp.moveaxis(x, -3, -1), cross_kv)

  def step(tokens):
    kv, tokens = jax.lax.optimization_barrier((stored, tokens))
    return jax.tree_util.tree_map(lambda x: jnp.moveaxis(x, -1, -3), kv), tokens
  return step


def _generate_impl(model, s: GenerationSettings, params, inputs: dict, rng: Array,
                   prompt: DecoderPrompt | None = None) -> GenerateOutput:
  """Encoder once, cross-attention K/V once, the prompt prefill, then the search over a
  tokens_to_logits closure. prompt: ids [batch, prompt_width] and its length P, or None."""
  jit_generate.trace_count += 1  # runs at trace time only: one count per compilation
  encoder_mask = inputs.get("attention_mask")  # [batch, src] or None (vision)
  batch = jax.tree_util.tree_leaves(inputs)[0].shape[0]
  enc = model.apply({"params": params}, **inputs, method="encode")
  # Per decoder layer K/V [batch, src, heads, head_dim]: batch rows only, the n = batch * beams
  # (or * num_return_sequences) decoder rows attend to their input's row (grouped attention).
  cross_kv = model.apply({"params": params}, encoder_hidden_states=enc.last_hidden_state,
                         method="cross_kv")

  step_params = head_layout_params(params, model.config.decoder.vocab_size)
  step_cross_kv = cross_kv_for_steps(cross_kv)

  def tokens_to_logits(tokens: Array, cache) -> tuple[Array, Any]:
    kv, tokens = step_cross_kv(tokens)
    out, mutated = model.apply({"params": step_params(), "cache": cache}, decoder_input_ids=tokens,
                               cross_kv=kv, encoder_attention_mask=encoder_mask,
                               decode=True, method="decode", mutable=["cache"])
    return out.logits[:, -1].astype(jnp.float32), mutated["cache"]  # [n, vocab]

  per_input = s.num_beams if s.num_beams > 1 else s.num_return_sequences
  cache = model.init_cache(batch * per_input, s.max_length)
  if prompt is not None:  # HF's repeat_interleave: each input's rows are consecutive
    prompt = DecoderPrompt(ids=jnp.repeat(prompt.ids, per_input, axis=0),  # [rows, width]
                           length=jnp.asarray(prompt.length, jnp.int32))
    cache = prefill_prompt(tokens_to_logits, cache, prompt)
  if s.num_beams > 1:
    return beam_search(tokens_to_logits, cache, batch, s, prompt)
  return greedy_or_sample(tokens_to_logits, cache, batch * per_input, s, rng, prompt)


# The compiled search, one compilation per (model, settings, input shapes and shardings).
# `jit_generate.trace_count` counts its traces (= compilations), so tests can prove reuse.
jit_generate = jax.jit(_generate_impl, static_argnums=(0, 1))
jit_generate.trace_count = 0


# ----------------------------------------------------------------------------- public API

# model -> {attention_impl: the same model rebuilt with it}: one object per variant, so jit's
# cache (keyed on the static model) compiles each variant once.
_IMPL_VARIANTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def with_attention_impl(model, attention_impl: str | None):
  """`model` rebuilt with the runtime option attention_impl (params unchanged); None or the
  model's own value returns `model` itself. ConfigError for an unknown value / no GPU (cudnn)."""
  if attention_impl is None or attention_impl == model.config.decoder.attention_impl == (
      model.config.encoder.attention_impl):
    return model
  check_attention_impl(attention_impl)
  variants = _IMPL_VARIANTS.setdefault(model, {})
  if attention_impl not in variants:
    variant = model_for_config(with_runtime_options(model.config, attention_impl=attention_impl),
                               dtype=model.dtype)
    variant.generation_defaults = model.generation_defaults
    variants[attention_impl] = variant
  return variants[attention_impl]



def _bucket(length: int, limit: int | None) -> int:
  """Input length padded to a power of two (>= 16) so ragged inputs reuse a few compilations."""
  bucket = 16
  while bucket < length:
    bucket *= 2
  return min(bucket, limit) if limit is not None and length <= limit else max(bucket, length)


def generate(model, params, input_ids=None, attention_mask=None, pixel_values=None, *,
             decoder_input_ids=None, prng_key: Array | int | None = None,
             bucket_inputs: bool = True, attention_impl: str | None = None,
             **settings) -> GenerateOutput:
  """Generates with transformers' `generate` semantics, as one compiled search.

  Text models take input_ids [batch, src_len] (+ attention_mask), vision models (ViT / DeiT
  encoders) pixel_values [batch, channels, height, width]; settings are the HF keywords
  (`SETTING_NAMES`: max_length, max_new_tokens, min_length, num_beams, do_sample, temperature,
  top_k, top_p, length_penalty, early_stopping, no_repeat_ngram_size, repetition_penalty,
  num_return_sequences, decoder_start_token_id, eos_token_id, pad_token_id,
  forced_bos_token_id, forced_eos_token_id, bad_words_ids, suppress_tokens,
  begin_suppress_tokens, output_scores); unset ones come from the checkpoint's
  generation_config.json / config. Inputs are padded to a power-of-two length bucket so ragged
  batches reuse compilations; the same shapes and settings never recompile.

  decoder_input_ids [batch, P] (e.g. Donut's task prompt) starts every output, as in HF: the
  start token is prepended when no row begins with it (Donut excepted), P counts in
  max_length / min_length and max_new_tokens counts after it. Prompts are padded to a
  power-of-two bucket (prompt_width), so lengths of one bucket share one compilation.

  Returns GenerateOutput (see its docstring): sequences [batch * num_return_sequences, L] int32
  (prompt or start token first, right-padded with pad_token_id; L = max_length, or
  max_new_tokens + prompt_width with a prompt and new-token limits), scores (beam search: HF's
  sequences_scores; greedy / sampling with output_scores: summed token log-probs) and, with
  output_scores=True, HF's per-step scores, transition scores and beam indices.

  attention_impl: 'einsum' | 'xla' | 'cudnn' (`edjax.models.attention`) runs the search with that
  attention backend (the model rebuilt once with the runtime option, same params); None keeps
  the model's own `config.attention_impl`.
  """
  model = with_attention_impl(model, attention_impl)
  prompt_ids = prepare_decoder_prompt(model, decoder_input_ids,
                               _start_token(model, settings.get("decoder_start_token_id", _UNSET)))
  s = resolve_settings(model, prompt_length=1 if prompt_ids is None else prompt_ids.shape[1],
                       **settings)
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
  prompt = None
  if prompt_ids is not None:
    batch = jax.tree_util.tree_leaves(inputs)[0].shape[0]
    if prompt_ids.shape[0] != batch:
      raise ValueError(f"decoder_input_ids has {prompt_ids.shape[0]} rows but the inputs have "
                       f"{batch}: pass one prompt row per input")
    length = prompt_ids.shape[1]
    padded = np.pad(prompt_ids, ((0, 0), (0, s.prompt_width - length)),
                    constant_values=s.pad_token_id)  # [batch, prompt_width]
    prompt = DecoderPrompt(ids=padded, length=np.asarray(length, np.int32))
  return jit_generate(model, s, params, inputs, prng_key, prompt)
