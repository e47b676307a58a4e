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
from edjax.configs import ConfigError, EncoderDecoderConfig
from edjax.models import layers, registry
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

  def encode(self, input_ids: Array, attention_mask: Array | None = None,
             token_type_ids: Array | None = None, deterministic: bool = True,
             output_hidden_states: bool = False, output_attentions: bool = False) -> ModelOutput:
    """input_ids [batch, src_len] -> encoder output (last_hidden_state [batch, src_len, enc_hidden])."""
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

  def __call__(self, input_ids: Array, attention_mask: Array | None = None,
               decoder_input_ids: Array | None = None,
               decoder_attention_mask: Array | None = None, token_type_ids: Array | None = None,
               labels: Array | None = None, deterministic: bool = True,
               output_hidden_states: bool = False, output_attentions: bool = False,
               label_smoothing: float = 0.0) -> Seq2SeqLMOutput:
    cfg = self.config
    if decoder_input_ids is None:
      if labels is None:
        raise ValueError("pass decoder_input_ids or labels (decoder inputs are labels shifted right)")
      decoder_input_ids = losses.shift_tokens_right(labels, cfg.pad_token_id,
                                                    cfg.decoder_start_token_id)
      if decoder_attention_mask is None:
        decoder_attention_mask = (decoder_input_ids != cfg.pad_token_id).astype(jnp.int32)
    enc = self.encode(input_ids, attention_mask, token_type_ids, deterministic,
                      output_hidden_states, output_attentions)
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
    registry.decoder_module(config.decoder, dtype)
    self.config = config
    self.dtype = dtype
    self.module = EncoderDecoderModule(config, dtype)
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
    prefix = f"decoder/{registry.get(self.config.decoder.model_type).decoder_base_prefix}/"
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

  def init(self, rng: int | Array = 0) -> Params:
    """Random params (HF's init: normal(initializer_range), zero biases, unit LayerNorm)."""
    if isinstance(rng, int):
      rng = jax.random.PRNGKey(rng)
    params = jax.jit(lambda r: nn.unbox(self.module.init(r, **self._dummy_inputs())["params"]))(rng)
    return self.tie_params(params)

  # -- apply -------------------------------------------------------------------------------

  def _check_inputs(self, kwargs: dict) -> None:
    enc, dec = self.config.encoder, self.config.decoder
    check_token_ids("input_ids", kwargs.get("input_ids"), enc.vocab_size, enc.max_positions)
    check_mask("attention_mask", kwargs.get("attention_mask"), "input_ids", kwargs.get("input_ids"))
    decode_mode = kwargs.get("decode", False)
    check_token_ids("decoder_input_ids", kwargs.get("decoder_input_ids"), dec.vocab_size,
                    None if decode_mode else dec.max_positions)
    if not decode_mode:
      check_mask("decoder_attention_mask", kwargs.get("decoder_attention_mask"),
                 "decoder_input_ids", kwargs.get("decoder_input_ids"))
    labels = kwargs.get("labels")
    if labels is not None and _is_concrete(labels):
      arr = np.asarray(labels)
      bad = (arr != losses.IGNORE_INDEX) & ((arr < 0) | (arr >= dec.vocab_size))
      if bad.any():
        raise ValueError(f"labels hold ids outside [0, {dec.vocab_size}) other than -100 "
                         f"(e.g. {int(arr[bad][0])}); mask ignored positions with -100")

  def apply(self, variables: dict, *args, method: str | Callable | None = None, **kwargs):
    """linen-style apply on the canonical params; see EncoderDecoderModule for the methods."""
    if args:
      raise TypeError("pass model inputs by keyword (input_ids=..., decoder_input_ids=...)")
    if "params" not in variables:
      raise ValueError("variables must be {'params': params, ...}")
    linen_kwargs = {k: kwargs.pop(k) for k in ("mutable", "rngs") if k in kwargs}
    self._check_inputs(kwargs)
    variables = dict(variables, params=self.untie_params(variables["params"]))
    if isinstance(method, str):
      method = getattr(EncoderDecoderModule, method)
    return self.module.apply(variables, method=method, **linen_kwargs, **kwargs)

  __call__ = apply
