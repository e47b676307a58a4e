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
from edjax.model_configs import ConfigError, EncoderDecoderConfig, VisionEncoderDecoderConfig
from edjax.models import inputs as inputs_lib
from edjax.models import layers, registry, stacking
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
  def modality(self) -> str:
    """'text' or 'image': what the encoder reads (the registry's answer for its model_type)."""
    return registry.get(self.config.encoder.model_type).modality

  def encode(self, input_ids: Array | None = None, attention_mask: Array | None = None,
             token_type_ids: Array | None = None, deterministic: bool = True,
             output_hidden_states: bool = False, output_attentions: bool = False,
             pixel_values: Array | None = None, position_ids: Array | None = None) -> ModelOutput:
    """input_ids [batch, src_len] (text) or pixel_values [batch, C, H, W] (image) -> encoder
    output (last_hidden_state [batch, src_len, enc_hidden]; image: src_len = special + patches).

    Packed rows (`edjax.models.segments`): attention_mask a bool [batch, 1, src_len, src_len] and
    position_ids [batch, src_len] the 0-based positions within each segment."""
    flags = dict(deterministic=deterministic, output_hidden_states=output_hidden_states,
                 output_attentions=output_attentions)
    if self.modality == registry.IMAGE:
      if pixel_values is None:
        raise ValueError(f"the {self.config.encoder.model_type} encoder reads pixel_values "
                         "[batch, channels, height, width], not input_ids")
      return self.encoder(pixel_values, **flags)
    if input_ids is None:
      raise ValueError(f"the {self.config.encoder.model_type} encoder reads input_ids "
                       "[batch, src_len]; pixel_values need a VisionEncoderDecoderModel")
    if position_ids is not None:
      flags["position_ids"] = position_ids
    return self.encoder(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                        **flags)

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
             output_attentions: bool = False,
             decoder_position_ids: Array | None = None) -> CausalLMOutput:
    """decoder_input_ids [batch, tgt_len] -> logits [batch, tgt_len, vocab].

    Pass either encoder_hidden_states (un-projected encoder output) or cross_kv from `cross_kv`.
    decode=True uses the static self-attention cache (mutable 'cache'). Packed rows: the masks are
    bool [batch, 1, tgt_len, k_len] and decoder_position_ids [batch, tgt_len] restart per segment.
    """
    enc = None
    if cross_kv is None:
      if encoder_hidden_states is None:
        raise ValueError("decode needs encoder_hidden_states or cross_kv")
      enc = self.project_encoder_states(encoder_hidden_states)
    return self.decoder(decoder_input_ids, attention_mask=decoder_attention_mask,
                        encoder_hidden_states=enc, encoder_attention_mask=encoder_attention_mask,
                        cross_kv=cross_kv, decode=decode, deterministic=deterministic,
                        output_hidden_states=output_hidden_states,
                        output_attentions=output_attentions, position_ids=decoder_position_ids)

  def __call__(self, input_ids: Array | None = None, attention_mask: Array | None = None,
               decoder_input_ids: Array | None = None,
               decoder_attention_mask: Array | None = None, token_type_ids: Array | None = None,
               labels: Array | None = None, deterministic: bool = True,
               output_hidden_states: bool = False, output_attentions: bool = False,
               label_smoothing: float = 0.0, pixel_values: Array | None = None,
               position_ids: Array | None = None, decoder_position_ids: Array | None = None,
               cross_attention_mask: Array | None = None) -> Seq2SeqLMOutput:
    """Teacher-forced forward: encoder inputs (input_ids + attention_mask, or pixel_values) and
    decoder_input_ids (or labels, shifted right) -> logits [batch, tgt_len, vocab] (+ loss).

    Packed rows (`edjax.models.segments.packed_model_inputs`): attention_mask /
    decoder_attention_mask are bool [batch, 1, len, len] block-diagonal masks, cross_attention_mask
    a bool [batch, 1, tgt_len, src_len] (default: attention_mask as the encoder padding mask), and
    position_ids / decoder_position_ids the 0-based positions within each segment."""
    cfg = self.config
    if decoder_input_ids is None:
      if labels is None:
        raise ValueError("pass decoder_input_ids or labels (decoder inputs are labels shifted right)")
      decoder_input_ids = losses.shift_tokens_right(labels, cfg.pad_token_id,
                                                    cfg.decoder_start_token_id)
      if decoder_attention_mask is None:
        decoder_attention_mask = (decoder_input_ids != cfg.pad_token_id).astype(jnp.int32)
    enc = self.encode(input_ids, attention_mask, token_type_ids, deterministic,
                      output_hidden_states, output_attentions, pixel_values, position_ids)
    if self.modality == registry.IMAGE:
      attention_mask = None  # every patch is attended (HF passes no encoder mask)
    if cross_attention_mask is not None:
      attention_mask = cross_attention_mask
    dec = self.decode(decoder_input_ids, enc.last_hidden_state, attention_mask,
                      decoder_attention_mask, deterministic=deterministic,
                      output_hidden_states=output_hidden_states,
                      output_attentions=output_attentions,
                      decoder_position_ids=decoder_position_ids)
    loss = None
    if labels is not None:
      loss = losses.seq2seq_loss(dec.logits, labels, label_smoothing)
    return Seq2SeqLMOutput(
        logits=dec.logits, loss=loss, encoder_last_hidden_state=enc.last_hidden_state,
        encoder_hidden_states=enc.hidden_states, encoder_attentions=enc.attentions,
        decoder_hidden_states=dec.hidden_states, decoder_attentions=dec.attentions,
        cross_attentions=dec.cross_attentions)


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
    vision = registry.get(config.encoder.model_type).modality == registry.IMAGE
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
    """Inputs that trace every param's shape: the encoder family's dummy inputs + decoder ids."""
    arch = registry.get(self.config.encoder.model_type)
    return dict(arch.dummy_inputs(self.config.encoder, batch),
                decoder_input_ids=jnp.ones((batch, length), jnp.int32))

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

    Per decoder self-attention layer: cached_key [batch, heads, head_dim, max_len] and
    cached_value [batch, heads, max_len, head_dim] (scan_layers: a `layers` axis after batch)
    and cache_index; per decoder:
    position_index. Use it as
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
    if stacking.is_scanned(self.config):  # the unscanned init, stacked: equal for one seed
      return stacking.to_scanned(self, stacking.unscanned_model(self).init(rng))
    params = jax.jit(lambda r: nn.unbox(self.module.init(r, **self._dummy_inputs())["params"]))(rng)
    return self.tie_params(params)

  # -- apply -------------------------------------------------------------------------------

  def check_inputs(self, kwargs: dict) -> None:
    """Clear errors for model inputs that do not fit the config (before any tracing)."""
    enc, dec = self.config.encoder, self.config.decoder
    arch = registry.get(enc.model_type)
    foreign = [k for k in ("input_ids", "attention_mask", "pixel_values")
               if kwargs.get(k) is not None and k not in arch.input_names]
    if foreign:
      if arch.modality == registry.IMAGE:
        raise ValueError(f"a VisionEncoderDecoderModel reads pixel_values [batch, channels, "
                         f"height, width], not {' / '.join(foreign)}")
      raise ValueError(f"pixel_values given to a text model (a {enc.model_type} encoder reads "
                       "input_ids); image models are VisionEncoderDecoderModels")
    if arch.check_inputs is not None:
      arch.check_inputs(enc, kwargs)
    decode_mode = kwargs.get("decode", False)
    inputs_lib.check_token_ids("decoder_input_ids", kwargs.get("decoder_input_ids"),
                               dec.vocab_size, None if decode_mode else dec.max_positions)
    if not decode_mode:
      inputs_lib.check_mask("decoder_attention_mask", kwargs.get("decoder_attention_mask"),
                            "decoder_input_ids", kwargs.get("decoder_input_ids"))
      src = kwargs.get("input_ids")
      inputs_lib.check_mask("cross_attention_mask", kwargs.get("cross_attention_mask"),
                            "decoder_input_ids", kwargs.get("decoder_input_ids"),
                            key_length=None if src is None else np.shape(src)[1])
    inputs_lib.check_position_ids("decoder_position_ids", kwargs.get("decoder_position_ids"),
                                  "decoder_input_ids", kwargs.get("decoder_input_ids"),
                                  dec.max_positions)
    inputs_lib.check_encoder_mask(kwargs.get("encoder_attention_mask"),
                                  kwargs.get("encoder_hidden_states"), kwargs.get("cross_kv"))
    labels = kwargs.get("labels")
    if labels is not None and inputs_lib.is_concrete(labels):
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
    self.check_inputs(kwargs)
    if kwargs.get("decode", False):
      inputs_lib.check_decode_cache(variables, kwargs.get("decoder_input_ids"))
    variables = dict(variables, params=self.untie_params(variables["params"]))
    if isinstance(method, str):
      if method.startswith("_") or not callable(getattr(EncoderDecoderModule, method, None)):
        raise ValueError(f"unknown method {method!r}; use one of {list(self.METHODS)} "
                         "(or None for the full forward pass)")
      method = getattr(EncoderDecoderModule, method)
    return self.module.apply(variables, method=method, **linen_kwargs, **kwargs)

  __call__ = apply


class VisionEncoderDecoderModel(EncoderDecoderModel):
  """transformers.VisionEncoderDecoderModel: an image encoder (e.g. ViT, DeiT) + any text decoder.

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


def model_for_config(config: EncoderDecoderConfig, dtype: jnp.dtype = jnp.float32) -> EncoderDecoderModel:
  """EncoderDecoderModel or VisionEncoderDecoderModel, as the config's class says."""
  if isinstance(config, VisionEncoderDecoderConfig):
    return VisionEncoderDecoderModel(config, dtype=dtype)
  return EncoderDecoderModel(config, dtype=dtype)
