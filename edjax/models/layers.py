"""The one attention / MLP / transformer-block / KV-cache implementation every model shares.

Param layout (logical axis names in brackets, mapped to mesh axes by the config's rules):
  attention  query|key|value: kernel [embed, heads, kv], bias [heads, kv]
             out:             kernel [heads, kv, embed], bias [embed]
  mlp        fc_in: kernel [embed, mlp];  fc_out: kernel [mlp, embed]
  norms      scale / bias [embed]
Architectures differ only in block order (post-LN BERT/RoBERTa/TrOCR, pre-LN GPT-2/ViT), the
activation, epsilon and attention scale: all fields of `BlockConfig`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from edjax.models import beam_slots
from edjax.models.attention import dot_product_attention  # noqa: F401  (re-exported)
from edjax.models.outputs import CausalLMOutput
from edjax.models.dropout import Dropout

Array = jax.Array
Dtype = Any

MASK_VALUE = float(jnp.finfo(jnp.float32).min)  # HF's additive bias for masked positions

ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_fast": functools.partial(jax.nn.gelu, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}


def get_activation(name: str):
  """The activation function named by an HF config (`hidden_act` / `activation_function`)."""
  if name not in ACTIVATIONS:
    raise ValueError(f"unsupported activation {name!r}; edjax knows {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def normal_init(std: float, axes: Sequence[Optional[str]]):
  return nn.with_logical_partitioning(nn.initializers.normal(std), tuple(axes))


def zeros_init(axes: Sequence[Optional[str]]):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), tuple(axes))


def ones_init(axes: Sequence[Optional[str]]):
  return nn.with_logical_partitioning(nn.initializers.ones_init(), tuple(axes))


def layer_norm(eps: float, dtype: Dtype, name: str | None = None) -> nn.LayerNorm:
  """LayerNorm with HF semantics (biased variance, eps inside the sqrt), computed in fp32."""
  return nn.LayerNorm(epsilon=eps, dtype=jnp.float32, param_dtype=jnp.float32,
                      use_fast_variance=False, scale_init=ones_init(("embed",)),
                      bias_init=zeros_init(("embed",)), name=name)


def dense(features: int, axes: tuple[str, str], std: float, dtype: Dtype, name: str | None = None,
          use_bias: bool = True) -> nn.Dense:
  return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32,
                  kernel_init=normal_init(std, axes), bias_init=zeros_init(axes[1:]),
                  name=name)


# ----------------------------------------------------------------------------- masks


def padding_mask(mask: Array) -> Array:
  """[batch, k_len] {0,1} -> [batch, 1, 1, k_len] bool (True = attend).

  A rank-4 mask [batch, 1, q_len, k_len] (a full attention mask, e.g. the block-diagonal mask of
  packed rows from `edjax.models.segments`) is passed through as bool.
  """
  if mask.ndim == 4:
    return mask.astype(bool)
  return mask.astype(bool)[:, None, None, :]


def causal_mask(q_len: int, k_len: int, offset: Array | int = 0) -> Array:
  """[1, 1, q_len, k_len] bool: query i (at absolute position offset+i) sees keys <= offset+i."""
  q_pos = jnp.arange(q_len)[:, None] + offset
  k_pos = jnp.arange(k_len)[None, :]
  return (k_pos <= q_pos)[None, None]


def mask_to_bias(mask: Array | None) -> Array | None:
  """bool mask (True = attend) -> additive fp32 bias with HF's finfo(float32).min."""
  if mask is None:
    return None
  return jnp.where(mask, 0.0, MASK_VALUE).astype(jnp.float32)


def combine_masks(*masks: Array | None) -> Array | None:
  masks = [m for m in masks if m is not None]
  if not masks:
    return None
  out = masks[0]
  for m in masks[1:]:
    out = jnp.logical_and(out, m)
  return out


def advance_decode_position(module: nn.Module, length: int, decode: bool) -> Array | int:
  """Absolute position of the first of `length` new tokens; in decode mode a cache counter.

  The counter lives in the 'cache' collection of `module` ('position_index'); the init call that
  sizes the cache leaves it at 0.
  """
  if not decode:
    return 0
  initialized = module.has_variable("cache", "position_index")
  counter = module.variable("cache", "position_index", lambda: jnp.array(0, jnp.int32))
  offset = counter.value
  if initialized:
    counter.value = offset + length
  return offset


def embed(num: int, features: int, axes: tuple[str, str], std: float, name: str | None = None,
          dtype: Dtype = jnp.float32) -> nn.Embed:
  return nn.Embed(num, features, dtype=dtype, param_dtype=jnp.float32,
                  embedding_init=normal_init(std, axes), name=name)


def tied_logits(hidden: Array, embedding: Array, dtype: Dtype) -> Array:
  """hidden [batch, length, embed] @ embedding[vocab, embed]^T -> fp32 logits [batch, length, vocab]."""
  return jnp.einsum("ble,ve->blv", hidden.astype(dtype), embedding.astype(dtype),
                    preferred_element_type=jnp.float32)


def bias_free_lm_logits(hidden: Array, embedding: Array, head: nn.Module | None,
                        dtype: Dtype) -> Array:
  """GPT-2 / TrOCR LM head: the tied word embedding (head=None) or an untied bias-free dense head.

  hidden [batch, length, embed] -> fp32 logits [batch, length, vocab].
  """
  if head is None:
    return tied_logits(hidden, embedding, dtype)
  return head(hidden).astype(jnp.float32)


# ----------------------------------------------------------------------------- blocks


@dataclasses.dataclass(frozen=True)
class BlockConfig:
  """Everything a transformer block needs, extracted from an architecture config."""

  hidden_size: int
  num_heads: int
  intermediate_size: int
  activation: str
  layer_norm_eps: float
  pre_layer_norm: bool  # GPT-2 / ViT: norm before each sublayer; BERT / TrOCR: after residual
  cross_attention: bool = False
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  activation_dropout_rate: float = 0.0
  scale_attention: bool = True  # divide scores by sqrt(head_dim)
  scale_by_inverse_layer_idx: bool = False  # GPT-2 option: extra 1 / (layer_idx + 1)
  init_std: float = 0.02
  # (query, key, value) projection biases: ViT with qkv_bias=False (TrOCR-base) has none, BEiT's
  # key has none.
  qkv_bias: tuple[bool, bool, bool] = (True, True, True)
  # How the block runs (the model config's RUNTIME_FIELDS, via `runtime_options`): never changes
  # the numbers beyond float rounding, only speed / memory / param layout.
  attention_impl: str = "einsum"
  scan_layers: bool = False
  remat: str = "none"

  @property
  def head_dim(self) -> int:
    if self.hidden_size % self.num_heads:
      raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_heads "
                       f"{self.num_heads}; fix the model config")
    return self.hidden_size // self.num_heads


def runtime_options(config) -> dict:
  """The BlockConfig fields a model config's runtime options set (attention_impl, scan_layers,
  remat; see edjax.model_configs.RUNTIME_FIELDS): `BlockConfig(..., **runtime_options(cfg))`."""
  return dict(attention_impl=getattr(config, "attention_impl", "einsum"),
              scan_layers=getattr(config, "scan_layers", False),
              remat=getattr(config, "remat", "none"))


def kv_to_storage(x: Array) -> Array:
  """K [batch, len, heads, head_dim] -> its decode layout [batch, heads, head_dim, len]."""
  return x.transpose(0, 2, 3, 1)


def v_to_storage(x: Array) -> Array:
  """V [batch, len, heads, head_dim] -> the decode layout [batch, heads, len, head_dim]."""
  return x.transpose(0, 2, 1, 3)


def v_from_storage(x: Array) -> Array:
  """Inverse of `v_to_storage` (the same transpose)."""
  return x.transpose(0, 2, 1, 3)


def kv_from_storage(x: Array) -> Array:
  """Inverse of `kv_to_storage`: [batch, heads, head_dim, len] -> [batch, len, heads, head_dim]."""
  return x.transpose(0, 3, 1, 2)


class Attention(nn.Module):
  """Multi-head attention: self (optionally causal with a static decode cache) or cross.

  Cross-attention K/V can be computed once with `project_kv(encoder_hidden)` and passed back in
  as `kv=` on every decoding step.
  """

  config: BlockConfig
  layer_idx: int = 0
  dtype: Dtype = jnp.float32

  def setup(self):
    cfg = self.config
    heads, head_dim = cfg.num_heads, cfg.head_dim

    def proj(name, use_bias):
      return nn.DenseGeneral((heads, head_dim), axis=-1, use_bias=use_bias, dtype=self.dtype,
                             param_dtype=jnp.float32,
                             kernel_init=normal_init(cfg.init_std, ("embed", "heads", "kv")),
                             bias_init=zeros_init(("heads", "kv")),
                             name=name)

    q_bias, k_bias, v_bias = cfg.qkv_bias
    self.query, self.key, self.value = (proj("query", q_bias), proj("key", k_bias),
                                        proj("value", v_bias))
    self.out = nn.DenseGeneral(cfg.hidden_size, axis=(-2, -1), dtype=self.dtype,
                               param_dtype=jnp.float32,
                               kernel_init=normal_init(cfg.init_std, ("heads", "kv", "embed")),
                               bias_init=zeros_init(("embed",)),
                               name="out")

  def project_kv(self, source: Array) -> tuple[Array, Array]:
    """[batch, src_len, width] -> key, value [batch, src_len, heads, head_dim]."""
    return self.key(source), self.value(source)

  def _scale(self) -> float:
    cfg = self.config
    scale = cfg.head_dim ** -0.5 if cfg.scale_attention else 1.0
    if cfg.scale_by_inverse_layer_idx:
      scale /= float(self.layer_idx + 1)
    return scale

  @nn.compact  # creates the decode-cache variables
  def __call__(self, hidden: Array, *, mask: Array | None = None, kv: tuple[Array, Array] | None = None,
               kv_source: Array | None = None, decode: bool = False, deterministic: bool = True,
               causal: bool = False, bias: Array | None = None) -> tuple[Array, Array]:
    """hidden [batch, q_len, embed] -> (out [batch, q_len, embed], probs [batch, heads, q, k]).

    mask: bool, broadcastable to [batch, heads, q_len, k_len] (True = attend); in decode mode
      k_len is the cache length.
    kv / kv_source: cross-attention keys and values (precomputed) or their source sequence.
    decode: self-attention with the static cache ('cache' collection: cached_key stored [batch,
      heads, head_dim, max_len], cached_value [batch, heads, max_len, head_dim], cache_index;
      with a beam slot table, `beam_slots.attention`); the first (init) call sizes the
      cache from `hidden`'s length.
    causal: add the causal mask (self-attention of decoders).
    bias: an additive fp32 score bias broadcastable to [batch, heads, q_len, k_len], added after
      the scale together with the mask's bias: a relative-position bias [heads, q, k] (Swin,
      BEiT) or a per-window one [windows, heads, q, k] (Swin's shifted-window mask); None adds
      nothing (the scores are then exactly those of a call without it).
    """
    query = self.query(hidden)  # [batch, q_len, heads, head_dim]
    if kv is not None:
      key, value = kv
    else:
      key, value = self.project_kv(hidden if kv_source is None else kv_source)

    if decode:
      # K stored [batch, heads, head_dim, max_len] and V [batch, heads, max_len, head_dim], the
      # layouts XLA's CPU dots take them in (Q K^T and P V): stored as [batch, max_len, heads,
      # head_dim] they were copied every step (12 copies per beam-search step, a third of its op
      # time; README, Benchmarks). Read back as [batch, max_len, heads, head_dim], the
      # transposes cancel in the compiled program. V's layout also makes its per-step write
      # contiguous (K's is strided); the beam search's cache writes went from 0.18 to 0.10 s.
      is_initialized = self.has_variable("cache", "cached_key")
      cached_key = self.variable("cache", "cached_key", jnp.zeros,
                                 kv_to_storage(key).shape, key.dtype)
      cached_value = self.variable("cache", "cached_value", jnp.zeros,
                                   v_to_storage(value).shape, value.dtype)
      cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
      if is_initialized:
        q_len, max_len = query.shape[1], cached_key.value.shape[-1]
        index = cache_index.value
        stored_key = jax.lax.dynamic_update_slice(
            cached_key.value, kv_to_storage(key).astype(cached_key.value.dtype), (0, 0, 0, index))
        stored_value = jax.lax.dynamic_update_slice(
            cached_value.value, v_to_storage(value).astype(cached_value.value.dtype),
            (0, 0, index, 0))
        cached_key.value, cached_value.value = stored_key, stored_value
        key, value = kv_from_storage(stored_key), v_from_storage(stored_value)
        cache_index.value = index + q_len
        # The new queries sit at positions index.. of the cache: causal against all of it.
        mask = combine_masks(mask, causal_mask(q_len, max_len, offset=index))
        causal = False
        if self.has_variable("cache", beam_slots.NAME):  # beam search: the cache is not reordered
          slots = self.variable("cache", beam_slots.NAME)
          slots.value = beam_slots.write_own_slots(slots.value, index, q_len)
          out, probs = beam_slots.attention(query, stored_key, stored_value, slots.value, mask,
                                            bias, self._scale(), self.dtype,
                                            self.config.attention_impl)
          return self.out(out), probs
    if causal:
      mask = combine_masks(mask, causal_mask(query.shape[1], key.shape[1]))

    dropout_rng = None
    if not deterministic and self.config.attention_dropout_rate > 0.0:
      dropout_rng = self.make_rng("dropout")
    out, probs = dot_product_attention(query, key, value, bias, self._scale(), dropout_rng,
                                       self.config.attention_dropout_rate, self.dtype, mask=mask,
                                       impl=self.config.attention_impl)
    return self.out(out), probs  # [batch, q_len, embed]


class Mlp(nn.Module):
  """fc_in -> activation -> (activation dropout) -> fc_out."""

  config: BlockConfig
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    cfg = self.config
    h = dense(cfg.intermediate_size, ("embed", "mlp"), cfg.init_std, self.dtype, "fc_in")(x)
    h = get_activation(cfg.activation)(h)  # [batch, length, mlp]
    h = Dropout(cfg.activation_dropout_rate)(h, deterministic=deterministic)
    return dense(cfg.hidden_size, ("mlp", "embed"), cfg.init_std, self.dtype, "fc_out")(h)


class TransformerLayer(nn.Module):
  """Self-attention, optional cross-attention, MLP; pre- or post-LayerNorm."""

  config: BlockConfig
  layer_idx: int = 0
  dtype: Dtype = jnp.float32

  def setup(self):
    cfg = self.config
    self.self_attn = Attention(cfg, self.layer_idx, self.dtype)
    self.self_attn_norm = layer_norm(cfg.layer_norm_eps, self.dtype)
    if cfg.cross_attention:
      self.cross_attn = Attention(cfg, self.layer_idx, self.dtype)
      self.cross_attn_norm = layer_norm(cfg.layer_norm_eps, self.dtype)
    self.mlp = Mlp(cfg, self.dtype)
    self.mlp_norm = layer_norm(cfg.layer_norm_eps, self.dtype)
    self.dropout = Dropout(cfg.dropout_rate)

  def cross_kv(self, encoder_hidden: Array) -> tuple[Array, Array]:
    return self.cross_attn.project_kv(encoder_hidden)

  def _sublayer(self, x, norm, fn, deterministic):
    """Residual around `fn` with the norm before (pre-LN) or after (post-LN)."""
    if self.config.pre_layer_norm:
      y, probs = fn(norm(x))
      return x + self.dropout(y, deterministic=deterministic), probs
    y, probs = fn(x)
    return norm(x + self.dropout(y, deterministic=deterministic)), probs

  def __call__(self, x: Array, **kwargs) -> tuple[Array, Array, Array | None]:
    """x [batch, length, embed] -> (x, self-attention probs, cross-attention probs or None); the
    keyword arguments of `forward`."""
    return self.forward(x, **kwargs)

  def forward(self, x: Array, *, self_mask: Array | None = None, causal: bool = False,
              encoder_hidden: Array | None = None, cross_kv: tuple[Array, Array] | None = None,
              cross_mask: Array | None = None, decode: bool = False,
              deterministic: bool = True) -> tuple[Array, Array, Array | None]:
    """x [batch, length, embed] -> (x, self-attention probs, cross-attention probs or None)."""
    x = x.astype(self.dtype)
    x, self_probs = self._sublayer(
        x, self.self_attn_norm,
        lambda h: self.self_attn(h, mask=self_mask, decode=decode, causal=causal,
                                 deterministic=deterministic), deterministic)
    cross_probs = None
    if self.config.cross_attention:
      if cross_kv is None and encoder_hidden is None:
        raise ValueError("this decoder has cross-attention: pass encoder_hidden_states "
                         "(or precomputed cross_kv)")
      x, cross_probs = self._sublayer(
          x, self.cross_attn_norm,
          lambda h: self.cross_attn(h, mask=cross_mask, kv=cross_kv, kv_source=encoder_hidden,
                                    deterministic=deterministic), deterministic)
    x, _ = self._sublayer(x, self.mlp_norm,
                          lambda h: (self.mlp(h, deterministic=deterministic), None), deterministic)
    return x, self_probs, cross_probs


# config.remat short names -> jax.checkpoint_policies names (the others are used as they are).
REMAT_ALIASES = {"dots": "dots_saveable",
                 "dots_with_no_batch_dims": "dots_with_no_batch_dims_saveable"}


def remat_module(module_class, policy: str, static_argnums: tuple[int, ...], prevent_cse=True):
  """`module_class` under `nn.remat` with `jax.checkpoint_policies.<policy>` ('full': save
  nothing, recompute the whole block in the backward pass); 'none' returns it unchanged.

  static_argnums count `self` as 0 (flax's convention): the Python flags (deterministic, decode,
  static shapes) of the module's __call__.
  """
  if policy == "none":
    return module_class
  policy = REMAT_ALIASES.get(policy, policy)
  checkpoint_policy = None if policy == "full" else getattr(jax.checkpoint_policies, policy)
  return nn.remat(module_class, policy=checkpoint_policy, static_argnums=static_argnums,
                  prevent_cse=prevent_cse)


class LayerStep(TransformerLayer):
  """A TransformerLayer with the positional signature nn.scan / nn.remat need.

  (x, cross_kv, self_mask, encoder_hidden, cross_mask, causal, decode, deterministic,
  want_hidden, want_attentions) -> (x, (layer input | None, self probs | None, cross probs |
  None)); the last five are Python flags (static under remat, broadcast under scan).
  """

  def __call__(self, x, cross_kv, self_mask, encoder_hidden, cross_mask, causal, decode,
               deterministic, want_hidden, want_attentions):
    y, self_probs, cross_probs = self.forward(
        x, self_mask=self_mask, causal=causal, encoder_hidden=encoder_hidden, cross_kv=cross_kv,
        cross_mask=cross_mask, decode=decode, deterministic=deterministic)
    per_layer = (x if want_hidden else None, self_probs if want_attentions else None,
                 cross_probs if want_attentions else None)
    return y, per_layer

  def project_cross_kv(self, carry, encoder_hidden):
    """Scan body of the stacked cross-attention K/V: (carry, encoder_hidden) -> (carry, kv)."""
    return carry, self.cross_kv(encoder_hidden)


STEP_STATIC_ARGNUMS = (6, 7, 8, 9, 10)  # causal, decode, deterministic, want_hidden, want_attentions


# Cache leaves every layer of a scanned stack holds the same value of: stored once.
SHARED_CACHE_LEAVES = ("cache_index", beam_slots.NAME)


def _cache_to_storage(cache):
  """Scanned cache (layer-major: cached_key [layers, batch, heads, head_dim, max_len], likewise V,
  cache_index [layers]) -> the stored layout (cached_key [batch, layers, heads, head_dim,
  max_len], one scalar cache_index): batch-major rows like an unscanned cache, so beam search
  gathers rows and `check_decode_cache` reads batch and length from the first and last axes."""
  def to_storage(path, x):
    if path[-1].key in SHARED_CACHE_LEAVES:
      return x[0]  # every layer has seen the same tokens (and beams)
    return jnp.moveaxis(x, 0, 1)
  return jax.tree_util.tree_map_with_path(to_storage, cache)


def _cache_from_storage(cache, num_layers: int):
  """Inverse of `_cache_to_storage`."""
  def from_storage(path, x):
    if path[-1].key in SHARED_CACHE_LEAVES:
      return jnp.broadcast_to(x, (num_layers,) + x.shape)
    return jnp.moveaxis(x, 1, 0)
  return jax.tree_util.tree_map_with_path(from_storage, cache)


def scanned_layers(config: BlockConfig, num_layers: int):
  """LayerStep (remat'ed as config.remat says) under nn.scan over `num_layers` layers.

  Params get a leading `layers` axis (logical name 'layers'); the decode cache is scanned too and
  stored batch-major (`_cache_to_storage`). Per-layer inputs: cross_kv (stacked K/V or None);
  broadcast: masks, encoder states and the flags.
  """
  step = remat_module(LayerStep, config.remat, STEP_STATIC_ARGNUMS, prevent_cse=False)
  broadcast = (nn.broadcast,) * 8
  scan_kwargs = dict(variable_axes={"params": 0, "cache": 0},
                     split_rngs={"params": True, "dropout": True}, length=num_layers,
                     metadata_params={nn.PARTITION_NAME: "layers"})
  scanned = nn.scan(step, methods={
      "__call__": dict(in_axes=(0,) + broadcast, **scan_kwargs),
      "project_cross_kv": dict(in_axes=(nn.broadcast,), **scan_kwargs)})
  return nn.map_variables(scanned, "cache", trans_in_fn=lambda c: _cache_from_storage(c, num_layers),
                          trans_out_fn=_cache_to_storage, mutable=True)


class TransformerStack(nn.Module):
  """`num_layers` TransformerLayers named layers_0 ... layers_{n-1}, or (config.scan_layers)
  one scanned `layers` module whose params carry a leading [layers] axis; each layer under
  nn.remat when config.remat is not 'none'. Both give the same numbers;
  `edjax.models.stacking` converts params between the two layouts."""

  config: BlockConfig
  num_layers: int
  dtype: Dtype = jnp.float32

  def setup(self):
    cfg = self.config
    if cfg.scan_layers:
      if cfg.scale_by_inverse_layer_idx:
        from edjax.model_configs import ConfigError
        raise ConfigError("scale_attn_by_inverse_layer_idx=True needs each layer's index, which a "
                          "scanned stack does not have: set scan_layers=False for this model")
      self.layers = scanned_layers(cfg, self.num_layers)(cfg, 0, self.dtype)
    else:
      step = remat_module(LayerStep, cfg.remat, STEP_STATIC_ARGNUMS)
      self.layers = [step(cfg, i, self.dtype) for i in range(self.num_layers)]

  def cross_kv(self, encoder_hidden: Array):
    """Per-layer cross-attention (key, value), each [batch, src_len, heads, head_dim]; scanned:
    one stacked (key, value), each [layers, batch, src_len, heads, head_dim]."""
    if self.config.scan_layers:
      return self.layers.project_cross_kv(None, encoder_hidden)[1]
    return tuple(layer.cross_kv(encoder_hidden) for layer in self.layers)

  def __call__(self, x: Array, *, attention_mask: Array | None = None, causal: bool = False,
               encoder_hidden: Array | None = None, cross_kv=None,
               encoder_attention_mask: Array | None = None, decode: bool = False,
               deterministic: bool = True, output_hidden_states: bool = False,
               output_attentions: bool = False):
    """x [batch, length, embed] -> (x, hidden_states | None, self_attentions | None,
    cross_attentions | None).

    attention_mask [batch, k_len] {0,1} (decode mode: k_len = cache length) and
    encoder_attention_mask [batch, src_len] are padding masks (1 = real token); the stack turns
    them into attention masks here, once for every layer. hidden_states holds the input of every
    layer and the last layer's output (HF order); scanned or not, every output is per layer.
    """
    self_mask = None if attention_mask is None else padding_mask(attention_mask)
    cross_mask = None if encoder_attention_mask is None else padding_mask(encoder_attention_mask)
    flags = (causal, decode, deterministic, output_hidden_states, output_attentions)
    if self.config.scan_layers:
      if not self.config.pre_layer_norm:
        # A scan carry keeps one dtype. A post-LN block ends in a LayerNorm whose fp32 params make
        # its output fp32 for a bf16 input (the unscanned stack turns fp32 after its first layer
        # the same way), so the carry starts there; a pre-LN block's residual keeps x's dtype.
        x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
      x, (inputs, self_attns, cross_attns) = self.layers(
          x, cross_kv, self_mask, encoder_hidden, cross_mask, *flags)  # stacked [layers, ...]
      unstack = lambda a: tuple(a[i] for i in range(self.num_layers))  # noqa: E731
      hidden_states = unstack(inputs) + (x,) if output_hidden_states else None
      self_attns = unstack(self_attns) if output_attentions else None
      cross_attns = unstack(cross_attns) if output_attentions and self.config.cross_attention else None
      return x, hidden_states, self_attns, cross_attns
    hidden_states, self_attns, cross_attns = [], [], []
    for i, layer in enumerate(self.layers):
      x, (layer_input, self_probs, cross_probs) = layer(
          x, None if cross_kv is None else cross_kv[i], self_mask, encoder_hidden, cross_mask,
          *flags)
      hidden_states.append(layer_input)
      self_attns.append(self_probs)
      cross_attns.append(cross_probs)
    if output_hidden_states:
      hidden_states.append(x)
    return (x, tuple(hidden_states) if output_hidden_states else None,
            tuple(self_attns) if output_attentions else None,
            tuple(cross_attns) if output_attentions and self.config.cross_attention else None)


# ----------------------------------------------------------------------------- causal LM


class CausalLM(nn.Module):
  """The one causal-LM decoder shape every family shares: a body, then an LM head.

  A family subclasses it with `setup` (its body and head submodules, under HF's names), `body()`
  (the module that embeds and runs the stack) and `lm_logits(hidden)`. The call signature, the
  output and the cross-attention K/V path live here once (`interfaces.CausalDecoder`).
  """

  config: Any
  dtype: Dtype = jnp.float32

  def body(self) -> nn.Module:
    """The decoder body: (input_ids, *, attention_mask, encoder_hidden_states, ...) -> ModelOutput."""
    raise NotImplementedError

  def lm_logits(self, hidden: Array) -> Array:
    """hidden [batch, length, hidden] -> fp32 logits [batch, length, vocab]."""
    raise NotImplementedError

  def cross_kv(self, encoder_hidden_states: Array):
    """Per layer (key, value) [batch, src_len, heads, head_dim] from encoder states, computed once
    per input for decoding."""
    return self.body().cross_kv(encoder_hidden_states)

  def __call__(self, input_ids: Array, *, attention_mask: Array | None = None,
               encoder_hidden_states: Array | None = None,
               encoder_attention_mask: Array | None = None, cross_kv=None, decode: bool = False,
               deterministic: bool = True, output_hidden_states: bool = False,
               output_attentions: bool = False, position_ids: Array | None = None):
    """input_ids [batch, length] -> CausalLMOutput (logits [batch, length, vocab] fp32).

    attention_mask [batch, length] (decode mode: [batch, max_len]) or a full bool mask
    [batch, 1, length, k_len]; pass encoder_hidden_states [batch, src_len, width] or cross_kv from
    `cross_kv`; decode=True uses the static cache. position_ids [batch, length] (packed rows):
    0-based positions within each segment, passed to the body only when given.
    """
    extra = {} if position_ids is None else {"position_ids": position_ids}
    out = self.body()(input_ids, attention_mask=attention_mask, **extra,
                      encoder_hidden_states=encoder_hidden_states,
                      encoder_attention_mask=encoder_attention_mask, cross_kv=cross_kv,
                      decode=decode, deterministic=deterministic,
                      output_hidden_states=output_hidden_states,
                      output_attentions=output_attentions)
    return CausalLMOutput(logits=self.lm_logits(out.last_hidden_state),
                          hidden_states=out.hidden_states, attentions=out.attentions,
                          cross_attentions=out.cross_attentions)
