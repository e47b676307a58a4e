"""The encoder-decoder composite: `encode`, `decode`, `__call__`, `enc_to_dec_proj`, tied weights.

`EncoderDecoderModule` is the linen module. `EncoderDecoderModel` wraps it with the public
`init` / `apply` and owns weight tying: with `tie_encoder_decoder=True` the param tree holds each
tied weight once (at its encoder path) and `apply` feeds the same array to the decoder, so
gradients of both uses add up, exactly what HF's shared `nn.Parameter`s do.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import flax.traverse_util as traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from edjax import losses
from edjax.model_configs import (VISION_MODEL_TYPES, ConfigError, EncoderDecoderConfig,
                           VisionEncoderDecoderConfig)
from edjax.models import layers, registry, vit
from edjax.models.outputs import CausalLMOutput, ModelOutput, Seq2SeqLMOutput

Array = jax.Array
Params = Any


class EncoderDecoderModule(nn.Module):
  """transformers.EncoderDecoderModel as a linen module (params: encoder / decoder / enc_to_dec_proj)."""

  config: EncoderDecoderConfig
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    cfg = self.config
    self.encoder = registry.encoder_module(cfg.encoder, self.dtype)
    self.decoder = registry.decoder_module(cfg.decoder, self.dtype)
    if cfg.needs_enc_to_dec_proj:
      self.enc_to_dec_proj = layers.dense(cfg.decoder.hidden_size, (None, "embed"),
                                          cfg.decoder.initializer_range, self.dtype)

  @property
  def is_vision(self) -> bool:
    return self.config.encoder.model_type in VISION_MODEL_TYPES

  def encode(self, input_ids: Array | None = None, attention_mask: Array | None = None,
             token_type_ids: Array | None = None, deterministic: bool = True,
             output_hidden_states: bool = False, output_attentions: bool = False,
             pixel_values: Array | None = None) -> ModelOutput:
    """input_ids [batch, src_len] (text) or pixel_values [batch, C, H, W] (vision) -> encoder
    output (last_hidden_state [batch, src_len, enc_hidden]; vision: src_len = special + patches)."""
    if self.is_vision:
      if pixel_values is None:
        raise ValueError(f"the {self.config.encoder.model_type} encoder reads pixel_values "
                         "[batch, channels, height, width], not input_ids")
      return self.encoder(pixel_values, deterministic=deterministic,
                          output_hidden_states=output_hidden_states,
                          output_attentions=output_attentions)
    if input_ids is None:
      raise ValueError(f"the {self.config.encoder.model_type} encoder reads input_ids "
                       "[batch, src_len]; pixel_values need a VisionEncoderDecoderModel")
    return self.encoder(input_ids, attention_mask, token_type_ids, deterministic=deterministic,
                        output_hidden_states=output_hidden_states,
                        output_attentions=output_attentions)

  def project_encoder_states(self, encoder_hidden_states: Array) -> Array:
    """Applies enc_to_dec_proj when the widths differ (no-op otherwise)."""
    if self.config.needs_enc_to_dec_proj:
      return self.enc_to_dec_proj(encoder_hidden_states)
    return encoder_hidden_states

  def cross_kv(self, encoder_hidden_states: Array):
    """Per decoder layer (key, value) [batch, src_len, heads, head_dim], computed once for decoding."""
    return self.decoder.cross_kv(self.project_encoder_states(encoder_hidden_states))

  def decode(self, decoder_input_ids: Array, encoder_hidden_states: Array | None = None,
             encoder_attention_mask: Array | None = None,
             decoder_attention_mask: Array | None = None, cross_kv=None, decode: bool = False,
             deterministic: bool = True, output_hidden_states: bool = False,
             output_attentions: bool = False) -> CausalLMOutput:
    """decoder_input_ids [batch, tgt_len] -> logits [batch, tgt_len, vocab].

    Pass either encoder_hidden_states (un-projected encoder output) or cross_kv from `cross_kv`.
    decode=True uses the static self-attention cache (mutable 'cache').
    """
    enc = None
    if cross_kv is None:
      if encoder_hidden_states is None:
        raise ValueError("decode needs encoder_hidden_states or cross_kv")
      enc = self.project_encoder_states(encoder_hidden_states)
    return self.decoder(decoder_input_ids, decoder_attention_mask, enc, encoder_attention_mask,
                        cross_kv, decode, deterministic, output_hidden_states, output_attentions)

  def __call__(self, input_ids: Array | None = None, attention_mask: Array | None = None,
               decoder_input_ids: Array | None = None,
               decoder_attention_mask: Array | None = None, token_type_ids: Array | None = None,
               labels: Array | None = None, deterministic: bool = True,
               output_hidden_states: bool = False, output_attentions: bool = False,
               label_smoothing: float = 0.0, pixel_values: Array | None = None) -> Seq2SeqLMOutput:
    """Teacher-forced forward: encoder inputs (input_ids + attention_mask, or pixel_values) and
    decoder_input_ids (or labels, shifted right) -> logits [batch, tgt_len, vocab] (+ loss)."""
    cfg = self.config
    if decoder_input_ids is None:
      if labels is None:
        raise ValueError("pass decoder_input_ids or labels (decoder inputs are labels shifted right)")
      decoder_input_ids = losses.shift_tokens_right(labels, cfg.pad_token_id,
                                                    cfg.decoder_start_token_id)
      if decoder_attention_mask is None:
        decoder_attention_mask = (decoder_input_ids != cfg.pad_token_id).astype(jnp.int32)
    enc = self.encode(input_ids, attention_mask, token_type_ids, deterministic,
                      output_hidden_states, output_attentions, pixel_values)
    if self.is_vision:
      attention_mask = None  # every patch is attended (HF passes no encoder mask)
    dec = self.decode(decoder_input_ids, enc.last_hidden_state, attention_mask,
                      decoder_attention_mask, deterministic=deterministic,
                      output_hidden_states=output_hidden_states,
                      output_attentions=output_attentions)
    loss = None
    if labels is not None:
      loss = losses.seq2seq_loss(dec.logits, labels, label_smoothing)
    return Seq2SeqLMOutput(
        logits=dec.logits, loss=loss, encoder_last_hidden_state=enc.last_hidden_state,
        encoder_hidden_states=enc.hidden_states, encoder_attentions=enc.attentions,
        decoder_hidden_states=dec.hidden_states, decoder_attentions=dec.attentions,
        cross_attentions=dec.cross_attentions)


# ----------------------------------------------------------------------------- input checks


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def check_token_ids(name: str, ids, vocab_size: int, max_positions: int | None) -> None:
  """Clear errors for [batch, length] token ids: rank, length vs positions, range vs vocab."""
  if ids is None:
    return
  shape = np.shape(ids)
  if len(shape) != 2:
    raise ValueError(f"{name} must be [batch, length] token ids, got shape {tuple(shape)}; "
                     "add a batch dimension with ids[None]")
  if max_positions is not None and shape[1] > max_positions:
    raise ValueError(f"{name} has length {shape[1]} but the model has {max_positions} positions; "
                     f"truncate inputs to {max_positions} tokens")
  if _is_concrete(ids) and shape[1] > 0:
    arr = np.asarray(ids)
    if not np.issubdtype(arr.dtype, np.integer):
      raise ValueError(f"{name} must be integer token ids, got dtype {arr.dtype}")
    lo, hi = int(arr.min()), int(arr.max())
    if hi >= vocab_size or lo < 0:
      raise ValueError(f"{name} holds ids in [{lo}, {hi}] but the vocabulary has {vocab_size} "
                       "entries: use the tokenizer that matches this checkpoint")


def check_mask(name: str, mask, ids_name: str, ids) -> None:
  if mask is None or ids is None:
    return
  if np.shape(mask) != np.shape(ids):
    raise ValueError(f"{name} has shape {tuple(np.shape(mask))} but {ids_name} has "
                     f"{tuple(np.shape(ids))}: they must match ([batch, length], 1 = real token)")


def check_encoder_mask(mask, encoder_hidden_states, cross_kv) -> None:
  """encoder_attention_mask must be [batch, src_len] of the encoder states / cross K/V it masks."""
  if mask is None:
    return
  if encoder_hidden_states is not None:
    want, source = tuple(np.shape(encoder_hidden_states)[:2]), "encoder_hidden_states"
  elif cross_kv is not None:
    want, source = tuple(np.shape(cross_kv[0][0])[:2]), "cross_kv"
  else:
    return
  if tuple(np.shape(mask)) != want:
    raise ValueError(f"encoder_attention_mask has shape {tuple(np.shape(mask))} but {source} is "
                     f"[batch, src_len] = {want}: pass the attention_mask of the encoder inputs")


def check_decode_cache(variables: dict, decoder_input_ids) -> None:
  """decode=True needs a cache from `init_cache` with room for the new tokens.

  Without this check an over-full static cache would clamp its writes and silently corrupt the
  output; the index check runs only when the cache index is concrete (not under jit).
  """
  if "cache" not in variables:
    raise ValueError("decode=True needs a decode cache: pass variables={'params': params, "
                     "'cache': model.init_cache(batch_size, max_length)} and mutable=['cache']")
  if decoder_input_ids is None:
    return
  flat = _flat(variables["cache"])
  keys = [v for k, v in flat.items() if k.endswith("cached_key")]
  if not keys:
    return
  batch, max_len = np.shape(keys[0])[:2]
  ids_batch, length = np.shape(decoder_input_ids)[:2]
  if ids_batch != batch:
    raise ValueError(f"decoder_input_ids has batch {ids_batch} but the decode cache was built for "
                     f"batch {batch}: build it with model.init_cache({ids_batch}, max_length)")
  index = [v for k, v in flat.items() if k.endswith("cache_index")]
  if index and all(_is_concrete(i) for i in index):
    used = max(int(np.max(np.asarray(i))) for i in index)
    if used + length > max_len:
      raise ValueError(f"the decode cache holds {max_len} positions, {used} are used and {length} "
                       f"more do not fit: build a longer one with model.init_cache({batch}, "
                       f"max_length) (max_length >= {used + length})")


# ----------------------------------------------------------------------------- public model


def _flat(tree) -> dict[str, Any]:
  return traverse_util.flatten_dict(tree, sep="/")


def _unflat(flat: dict[str, Any]):
  return traverse_util.unflatten_dict(flat, sep="/")


class EncoderDecoderModel:
  """A text encoder-decoder: `model.apply({"params": params}, ...)` like a linen module.

  `apply` also takes `method="encode" | "decode" | "cross_kv"` and linen's `mutable=` / `rngs=`.
  """

  def __init__(self, config: EncoderDecoderConfig, dtype: jnp.dtype = jnp.float32):
    if not isinstance(config, EncoderDecoderConfig):
      raise ConfigError(f"EncoderDecoderModel needs an EncoderDecoderConfig, got {type(config).__name__}")
    dec = config.decoder
    if not (dec.is_decoder and dec.add_cross_attention):
      raise ConfigError("the decoder config must have is_decoder=True and add_cross_attention=True; "
                        "build the config with EncoderDecoderConfig.from_encoder_decoder_configs")
    cross = dec.cross_attention_hidden_size
    if cross is not None and cross != config.encoder.hidden_size:
      raise ConfigError(f"decoder.cross_attention_hidden_size={cross} but the encoder is "
                        f"{config.encoder.hidden_size} wide; set it to None (adds enc_to_dec_proj) "
                        "or to the encoder width")
    registry.encoder_module(config.encoder, dtype)  # fail early on a bad model_type
    vision = config.encoder.model_type in VISION_MODEL_TYPES
    if vision != isinstance(self, VisionEncoderDecoderModel):
      want = "VisionEncoderDecoderModel" if vision else "EncoderDecoderModel"
      raise ConfigError(f"a {config.encoder.model_type} encoder belongs in a {want} (with a "
                        f"{'Vision' if vision else ''}EncoderDecoderConfig); edjax.from_config / "
                        "from_pretrained pick the right class")
    registry.decoder_module(config.decoder, dtype)
    self.config = config
    self.dtype = dtype
    self.module = EncoderDecoderModule(config, dtype)
    # generation_config.json of the checkpoint (from_pretrained fills it): generate()'s defaults.
    self.generation_defaults: dict = {}
    self.tied_paths  # validates tie_encoder_decoder now  # noqa: B018

  def __repr__(self):
    return (f"EncoderDecoderModel({self.config.encoder.model_type}->"
            f"{self.config.decoder.model_type}, tie_encoder_decoder={self.config.tie_encoder_decoder})")

  # -- params ------------------------------------------------------------------------------

  def _dummy_inputs(self, batch: int = 1, length: int = 4):
    ids = jnp.ones((batch, length), jnp.int32)
    return dict(input_ids=ids, decoder_input_ids=ids)

  @functools.cached_property
  def _boxed_shapes(self):
    """Shapes of the untied param tree, with logical-axis boxes (nn.Partitioned)."""
    return jax.eval_shape(lambda: self.module.init(jax.random.PRNGKey(0),
                                                   **self._dummy_inputs())["params"])

  @functools.cached_property
  def tied_paths(self) -> tuple[tuple[str, str], ...]:
    """(decoder path, encoder path) pairs shared under tie_encoder_decoder (HF's rule).

    A decoder weight is tied when its path below the decoder's base model equals an encoder path
    with the same shape: embeddings and every layer's self-attention, MLP and norms; never the
    cross-attention, which the encoder lacks.
    """
    if not self.config.tie_encoder_decoder:
      return ()
    flat = _flat(nn.unbox(self._boxed_shapes))
    prefix = f"decoder/{registry.get(self.config.decoder.model_type).base_model_prefix}/"
    pairs = []
    for path, shape in flat.items():
      if path.startswith(prefix):
        twin = "encoder/" + path[len(prefix):]
        if twin in flat and flat[twin].shape == shape.shape:
          pairs.append((path, twin))
    if not pairs:
      raise ConfigError(
          f"tie_encoder_decoder=True but the {self.config.encoder.model_type} encoder and the "
          f"{self.config.decoder.model_type} decoder share no weight names; tie only models of the "
          "same architecture (e.g. BERTShare, RoBERTaShare) or set tie_encoder_decoder=False")
    return tuple(pairs)

  def tie_params(self, params: Params) -> Params:
    """Full tree -> canonical tree: each tied weight kept once, at its encoder path.

    Like HF's `_tie_encoder_decoder_weights`, the decoder's value wins.
    """
    if not self.tied_paths:
      return params
    flat = dict(_flat(params))
    for dec_path, enc_path in self.tied_paths:
      if dec_path in flat:
        flat[enc_path] = flat.pop(dec_path)
    return _unflat(flat)

  def untie_params(self, params: Params) -> Params:
    """Canonical tree -> full tree the linen module reads (decoder twins = encoder arrays)."""
    if not self.tied_paths:
      return params
    flat = dict(_flat(params))
    for dec_path, enc_path in self.tied_paths:
      flat[dec_path] = flat[enc_path]
    return _unflat(flat)

  def param_shapes(self) -> Params:
    """ShapeDtypeStruct tree of the canonical (tied) params."""
    return self.tie_params(nn.unbox(self._boxed_shapes))

  def logical_axes(self) -> Params:
    """Tree of logical PartitionSpecs (e.g. PartitionSpec('embed', 'heads', 'kv')) per param."""
    return self.tie_params(nn.get_partition_spec(self._boxed_shapes))

  def init_cache(self, batch_size: int, max_length: int) -> dict:
    """A zeroed decode cache for `batch_size` sequences of up to `max_length` decoder tokens.

    Per decoder self-attention layer: cached_key / cached_value [batch, max_len, heads, head_dim]
    and cache_index; per decoder: position_index. Use it as
    `model.apply({"params": params, "cache": cache}, decoder_input_ids=ids, cross_kv=kv,
    decode=True, method="decode", mutable=["cache"])`, feeding one or more new tokens per call.
    """
    dec = self.config.decoder
    if max_length > dec.max_positions:
      raise ValueError(f"max_length {max_length} exceeds the decoder's {dec.max_positions} "
                       "positions; decode at most that many tokens")
    enc_width = self.config.encoder.hidden_size

    def make():
      return self.module.init(jax.random.PRNGKey(0),
                              decoder_input_ids=jnp.zeros((batch_size, max_length), jnp.int32),
                              encoder_hidden_states=jnp.zeros((batch_size, 1, enc_width), self.dtype),
                              decode=True, method=EncoderDecoderModule.decode)["cache"]

    shapes = jax.eval_shape(make)  # no compute: every cache entry starts at zero
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

  def init(self, rng: int | Array = 0) -> Params:
    """Random params (HF's init: normal(initializer_range), zero biases, unit LayerNorm)."""
    if isinstance(rng, int):
      rng = jax.random.PRNGKey(rng)
    params = jax.jit(lambda r: nn.unbox(self.module.init(r, **self._dummy_inputs())["params"]))(rng)
    return self.tie_params(params)

  # -- apply -------------------------------------------------------------------------------

  def _check_inputs(self, kwargs: dict) -> None:
    enc, dec = self.config.encoder, self.config.decoder
    if kwargs.get("pixel_values") is not None and not isinstance(self, VisionEncoderDecoderModel):
      raise ValueError(f"pixel_values given to a text model (a {enc.model_type} encoder reads "
                       "input_ids); image models are VisionEncoderDecoderModels")
    if kwargs.get("input_ids") is not None:
      check_token_ids("input_ids", kwargs["input_ids"], enc.vocab_size, enc.max_positions)
      check_mask("attention_mask", kwargs.get("attention_mask"), "input_ids", kwargs["input_ids"])
    decode_mode = kwargs.get("decode", False)
    check_token_ids("decoder_input_ids", kwargs.get("decoder_input_ids"), dec.vocab_size,
                    None if decode_mode else dec.max_positions)
    if not decode_mode:
      check_mask("decoder_attention_mask", kwargs.get("decoder_attention_mask"),
                 "decoder_input_ids", kwargs.get("decoder_input_ids"))
    check_encoder_mask(kwargs.get("encoder_attention_mask"), kwargs.get("encoder_hidden_states"),
                       kwargs.get("cross_kv"))
    token_types = kwargs.get("token_type_ids")
    type_vocab = getattr(enc, "type_vocab_size", None)
    if token_types is not None and type_vocab is not None and _is_concrete(token_types):
      check_mask("token_type_ids", token_types, "input_ids", kwargs.get("input_ids"))
      arr = np.asarray(token_types)
      if arr.size and (arr.min() < 0 or arr.max() >= type_vocab):
        raise ValueError(f"token_type_ids hold values in [{arr.min()}, {arr.max()}] but the encoder "
                         f"has type_vocab_size={type_vocab}: use segment ids below {type_vocab} "
                         "(or leave token_type_ids out for all zeros)")
    labels = kwargs.get("labels")
    if labels is not None and _is_concrete(labels):
      arr = np.asarray(labels)
      bad = (arr != losses.IGNORE_INDEX) & ((arr < 0) | (arr >= dec.vocab_size))
      if bad.any():
        raise ValueError(f"labels hold ids outside [0, {dec.vocab_size}) other than -100 "
                         f"(e.g. {int(arr[bad][0])}); mask ignored positions with -100")

  METHODS = ("encode", "decode", "cross_kv", "project_encoder_states")  # for `apply(method=...)`

  def apply(self, variables: dict, *args, method: str | Callable | None = None, **kwargs):
    """linen-style apply on the canonical params; see EncoderDecoderModule for the methods."""
    if args:
      raise TypeError("pass model inputs by keyword (input_ids=..., decoder_input_ids=...)")
    if "params" not in variables:
      raise ValueError("variables must be {'params': params, ...}")
    linen_kwargs = {k: kwargs.pop(k) for k in ("mutable", "rngs") if k in kwargs}
    self._check_inputs(kwargs)
    if kwargs.get("decode", False):
      check_decode_cache(variables, kwargs.get("decoder_input_ids"))
    variables = dict(variables, params=self.untie_params(variables["params"]))
    if isinstance(method, str):
      if method.startswith("_") or not callable(getattr(EncoderDecoderModule, method, None)):
        raise ValueError(f"unknown method {method!r}; use one of {list(self.METHODS)} "
                         "(or None for the full forward pass)")
      method = getattr(EncoderDecoderModule, method)
    return self.module.apply(variables, method=method, **linen_kwargs, **kwargs)

  __call__ = apply


class VisionEncoderDecoderModel(EncoderDecoderModel):
  """transformers.VisionEncoderDecoderModel: a ViT / DeiT image encoder + any text decoder.

  The encoder reads `pixel_values` [batch, channels, height, width] (NCHW, as HF) where the text
  composite reads input_ids + attention_mask; every patch is attended, so there is no encoder
  mask. Everything else (decode, cross_kv, cache, enc_to_dec_proj) is EncoderDecoderModel's.
  """

  def __init__(self, config: VisionEncoderDecoderConfig, dtype: jnp.dtype = jnp.float32):
    if not isinstance(config, VisionEncoderDecoderConfig):
      raise ConfigError("VisionEncoderDecoderModel needs a VisionEncoderDecoderConfig, got "
                        f"{type(config).__name__}")
    super().__init__(config, dtype)

  def __repr__(self):
    return (f"VisionEncoderDecoderModel({self.config.encoder.model_type}->"
            f"{self.config.decoder.model_type})")

  def _dummy_inputs(self, batch: int = 1, length: int = 4):
    enc = self.config.encoder
    return dict(pixel_values=jnp.zeros((batch, enc.num_channels, *enc.image_hw), jnp.float32),
                decoder_input_ids=jnp.ones((batch, length), jnp.int32))

  def _check_inputs(self, kwargs: dict) -> None:
    if kwargs.get("input_ids") is not None or kwargs.get("attention_mask") is not None:
      raise ValueError("a VisionEncoderDecoderModel reads pixel_values [batch, channels, height, "
                       "width], not input_ids / attention_mask")
    if kwargs.get("pixel_values") is not None:
      vit.check_pixel_values(self.config.encoder, kwargs["pixel_values"])
    super()._check_inputs(kwargs)


def model_for_config(config: EncoderDecoderConfig, dtype: jnp.dtype = jnp.float32) -> EncoderDecoderModel:
  """EncoderDecoderModel or VisionEncoderDecoderModel, as the config's class says."""
  if isinstance(config, VisionEncoderDecoderConfig):
    return VisionEncoderDecoderModel(config, dtype=dtype)
  return EncoderDecoderModel(config, dtype=dtype)
