"""Generation settings: `GenerationSettings` (the static, hashable settings of one compiled
search) and `resolve_settings`, which fills each from the call, the checkpoint's
generation_config.json, the config, or transformers' defaults, and checks them.

Split out of `edjax.generation` (which re-exports every public name here).
"""

from __future__ import annotations

import dataclasses
import inspect

from edjax.generation_processors import bad_words_setting, bucket_prompt_length

_UNSET = object()


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
  """Static settings of one compiled search (hashable: part of the jit cache key).

  max_length is the static number of output columns: HF's max_length, or, with a decoder prompt
  and new tokens counted from it, max_new_tokens + prompt_width (the loop then stops at the
  traced HF max_length = max_new_tokens + P). max_new_tokens is set only in that case (without a
  prompt resolve_settings folds it into max_length = max_new_tokens + 1). prompt_width is the
  bucket the decoder prompt is padded to (1 without a prompt; not an HF setting).
  """

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
  bad_words_ids: tuple[tuple[int, ...], ...] = ()  # () = off; [eos] alone is dropped, as HF
  suppress_tokens: tuple[int, ...] = ()  # () = off
  begin_suppress_tokens: tuple[int, ...] = ()  # () = off
  output_scores: bool = False
  max_new_tokens: int | None = None
  prompt_width: int = 1


# GenerationSettings field -> the transformers keyword that sets it, where the spellings differ:
# HF takes one id or a list as `eos_token_id` / `forced_eos_token_id`, stored here as tuples.
HF_KEYWORDS = {"eos_token_ids": "eos_token_id", "forced_eos_token_ids": "forced_eos_token_id"}
_INTERNAL_FIELDS = ("prompt_width",)  # derived by resolve_settings, not a keyword

# Every generation-setting keyword that `generate` / `resolve_settings` accept (HF spellings): the
# GenerationSettings fields through HF_KEYWORDS (max_new_tokens is an alternative way to set
# max_length, counted after the decoder prompt as in HF).
SETTING_NAMES: tuple[str, ...] = tuple(
    HF_KEYWORDS.get(f.name, f.name) for f in dataclasses.fields(GenerationSettings)
    if f.name not in _INTERNAL_FIELDS)


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
                     forced_eos_token_id=_UNSET, bad_words_ids=_UNSET, suppress_tokens=_UNSET,
                     begin_suppress_tokens=_UNSET, output_scores=_UNSET,
                     prompt_length: int = 1) -> GenerationSettings:
  """Fills every setting from the call, the checkpoint's generation config, or HF's defaults.

  prompt_length: P, the decoder prompt's tokens (1 = the start token alone). As in HF,
  max_new_tokens counts after the prompt (max_length = max_new_tokens + P) and with neither
  max_length nor max_new_tokens set anywhere 20 tokens are generated after it; with P > 1 such
  new-token limits are kept as max_new_tokens and the output has max_new_tokens + prompt_width
  columns, so that every P of a bucket shares the settings (and the compilation).
  """
  d = lambda name, value, fallback=None: _default(name, value, model, fallback)  # noqa: E731
  start = _start_token(model, decoder_start_token_id)
  eos = _as_tuple(d("eos_token_id", eos_token_id)) or ()
  pad = d("pad_token_id", pad_token_id)
  if pad is None:
    pad = eos[0] if eos else 0
  new_tokens, width = None, 1
  if prompt_length == 1:
    if max_new_tokens is not None:
      max_len = int(max_new_tokens) + 1  # the decoder prompt is the start token
    else:
      max_len = d("max_length", max_length, 20 + 1)  # HF: 20 new tokens by default
  else:
    configured = d("max_length", _UNSET) if max_length is _UNSET or max_length is None else max_length
    if max_new_tokens is None and (configured is None or (configured == 20 and (
        max_length is _UNSET or max_length is None))):
      max_new_tokens = 20  # HF: a default max_length (20) becomes 20 tokens after the prompt
    if max_new_tokens is not None:
      new_tokens = int(max_new_tokens)
      width = bucket_prompt_length(prompt_length, model.config.decoder.max_positions - new_tokens)
      max_len = new_tokens + width
    else:
      max_len = int(configured)
      if prompt_length >= max_len:
        raise ValueError(f"decoder_input_ids has {prompt_length} tokens (the decoder start token "
                         f"included) but max_length={max_len} counts them: nothing is left to "
                         "generate; raise max_length or set max_new_tokens")
      width = bucket_prompt_length(prompt_length, max_len - 1)
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
      forced_eos_token_ids=_as_tuple(d("forced_eos_token_id", forced_eos_token_id)),
      bad_words_ids=bad_words_setting(d("bad_words_ids", bad_words_ids), eos),
      suppress_tokens=_as_tuple(d("suppress_tokens", suppress_tokens)) or (),
      begin_suppress_tokens=_as_tuple(d("begin_suppress_tokens", begin_suppress_tokens)) or (),
      output_scores=bool(d("output_scores", output_scores, False)),
      max_new_tokens=new_tokens, prompt_width=width)
  _validate(settings, model)
  return settings


def _start_token(model, decoder_start_token_id=_UNSET) -> int:
  """decoder_start_token_id from the call or the checkpoint, else its bos_token_id (as HF)."""
  start = _default("decoder_start_token_id", decoder_start_token_id, model)
  if start is None:
    start = _default("bos_token_id", _UNSET, model)
  if start is None:
    raise ValueError("no decoder_start_token_id: pass decoder_start_token_id=... (e.g. the "
                     "tokenizer's [CLS] id for BERT decoders) or set it in the model config")
  return int(start)


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
  for name, values in (("bad_words_ids", [t for w in s.bad_words_ids for t in w]),
                       ("suppress_tokens", s.suppress_tokens),
                       ("begin_suppress_tokens", s.begin_suppress_tokens)):
    bad = [t for t in values if not 0 <= t < vocab]
    if bad:
      raise ValueError(f"{name} holds ids {bad} outside [0, {vocab}) (the decoder vocabulary); "
                       "drop them or use the decoder tokenizer's ids")


assert set(SETTING_NAMES) == set(inspect.signature(resolve_settings).parameters) - {
    "model", "prompt_length"}, "resolve_settings' keywords and SETTING_NAMES disagree"
