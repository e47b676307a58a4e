"""HF (PyTorch-layout) <-> edjax parameter trees.

A checkpoint is converted by *rules*: one HF tensor name <-> one or more edjax param paths, with a
pair of per-tensor hooks (transpose a torch Linear, reshape to heads, split GPT-2's fused qkv).
`*_rules(config, hf_prefix, flax_prefix)` expand the per-architecture tables for a config;
`hf_to_flax` / `flax_to_hf` apply them generically and report missing, unexpected and
mismatched tensors.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Callable, Iterable, Sequence

import numpy as np

from edjax.model_configs import (BertConfig, ConfigError, EncoderDecoderConfig, GPT2Config, TrOCRConfig,
                           ViTConfig)

ToFlax = Callable[[np.ndarray], tuple]
ToHF = Callable[[tuple], np.ndarray]


class CheckpointError(ValueError):
  """A checkpoint that does not fit the model (missing/unexpected keys, wrong shapes)."""


@dataclasses.dataclass(frozen=True)
class Rule:
  hf: str  # HF tensor name
  flax: tuple[str, ...]  # edjax param paths, '/'-joined
  to_flax: ToFlax
  to_hf: ToHF
  aliases: tuple[str, ...] = ()  # other HF names of the same tensor (read, never written)


# ----------------------------------------------------------------------------- hooks

def identity() -> tuple[ToFlax, ToHF]:
  return (lambda a: (a,)), (lambda xs: xs[0])


def linear() -> tuple[ToFlax, ToHF]:
  """torch nn.Linear weight (out, in) <-> Dense kernel (in, out)."""
  return (lambda a: (a.T,)), (lambda xs: xs[0].T)


def to_heads(heads: int, transpose: bool) -> tuple[ToFlax, ToHF]:
  """q/k/v projection (out = heads*head_dim) <-> DenseGeneral kernel (in, heads, head_dim).

  transpose=True for torch Linear (out, in); False for GPT-2 Conv1D, already (in, out).
  """
  def fwd(a):
    a = a.T if transpose else a
    return (a.reshape(a.shape[0], heads, -1),)

  def back(xs):
    k = xs[0].reshape(xs[0].shape[0], -1)
    return k.T if transpose else k
  return fwd, back


def bias_to_heads(heads: int) -> tuple[ToFlax, ToHF]:
  return (lambda a: (a.reshape(heads, -1),)), (lambda xs: xs[0].reshape(-1))


def from_heads(heads: int, transpose: bool) -> tuple[ToFlax, ToHF]:
  """attention output projection (in = heads*head_dim) <-> kernel (heads, head_dim, out)."""
  def fwd(a):
    a = a.T if transpose else a
    return (a.reshape(heads, -1, a.shape[-1]),)

  def back(xs):
    k = xs[0].reshape(-1, xs[0].shape[-1])
    return k.T if transpose else k
  return fwd, back


def split_fused(parts: int, heads: int, is_bias: bool) -> tuple[ToFlax, ToHF]:
  """GPT-2 Conv1D fused projection (in, parts*E) (or bias (parts*E,)) <-> `parts` head tensors."""
  def fwd(a):
    chunks = np.split(a, parts, axis=-1)
    if is_bias:
      return tuple(c.reshape(heads, -1) for c in chunks)
    return tuple(c.reshape(c.shape[0], heads, -1) for c in chunks)

  def back(xs):
    if is_bias:
      return np.concatenate([x.reshape(-1) for x in xs], axis=-1)
    return np.concatenate([x.reshape(x.shape[0], -1) for x in xs], axis=-1)
  return fwd, back


def oihw_to_hwio() -> tuple[ToFlax, ToHF]:
  """torch Conv2d weight (out, in, kh, kw) <-> flax nn.Conv kernel (kh, kw, in, out)."""
  return (lambda a: (a.transpose(2, 3, 1, 0),)), (lambda xs: xs[0].transpose(3, 2, 0, 1))


def _rule(hf: str, flax: str | Sequence[str], hooks: tuple[ToFlax, ToHF], aliases=()) -> Rule:
  flax = (flax,) if isinstance(flax, str) else tuple(flax)
  return Rule(hf, flax, hooks[0], hooks[1], tuple(aliases))


def _norm(hf: str, flax: str, hf_names=("weight", "bias")) -> list[Rule]:
  return [_rule(f"{hf}.{hf_names[0]}", f"{flax}/scale", identity()),
          _rule(f"{hf}.{hf_names[1]}", f"{flax}/bias", identity())]


def _linear(hf: str, flax: str) -> list[Rule]:
  return [_rule(f"{hf}.weight", f"{flax}/kernel", linear()), _rule(f"{hf}.bias", f"{flax}/bias", identity())]


def _conv1d(hf: str, flax: str) -> list[Rule]:
  return [_rule(f"{hf}.weight", f"{flax}/kernel", identity()), _rule(f"{hf}.bias", f"{flax}/bias", identity())]


# HF buffers and tensors that are derived, never parameters: skipped on load. The output
# embeddings of a tied LM head (HF `_tied_weights_keys`) are copies of the word embeddings that
# pytorch_model.bin files hold; with tie_word_embeddings=False a rule reads them first.
IGNORED_HF_KEYS = (
    r"(^|\.)embeddings\.position_ids$",
    r"(^|\.)embeddings\.token_type_ids$",
    r"(^|\.)attn\.(masked_)?bias$",
    r"(^|\.)crossattention\.(masked_)?bias$",
    r"(^|\.)cls\.predictions\.decoder\.weight$",
    r"(^|\.)lm_head\.decoder\.weight$",
    r"(^|\.)lm_head\.weight$",
    r"(^|\.)output_projection\.weight$",
    r"(^|\.)embed_positions\._float_tensor$",
)


def _is_ignored(name: str) -> bool:
  return any(re.search(p, name) for p in IGNORED_HF_KEYS)


# ----------------------------------------------------------------------------- per-architecture tables

def _attention(qkv: str, out: str, flax: str, heads: int,
               names: Sequence[str] = ("query", "key", "value")) -> list[Rule]:
  """torch-Linear q/k/v at `{qkv}.{names}` and output at `{out}` -> the shared Attention."""
  rules = []
  for proj, name in zip(("query", "key", "value"), names):
    rules += [_rule(f"{qkv}.{name}.weight", f"{flax}/{proj}/kernel", to_heads(heads, True)),
              _rule(f"{qkv}.{name}.bias", f"{flax}/{proj}/bias", bias_to_heads(heads))]
  return rules + [_rule(f"{out}.weight", f"{flax}/out/kernel", from_heads(heads, True)),
                  _rule(f"{out}.bias", f"{flax}/out/bias", identity())]


def _bert_attention(hf: str, flax: str, norm: str, heads: int) -> list[Rule]:
  """BERT / RoBERTa `attention` or `crossattention` block: projections + post-LN."""
  return (_attention(f"{hf}.self", f"{hf}.output.dense", flax, heads)
          + _norm(f"{hf}.output.LayerNorm", norm))


def bert_body_rules(config: BertConfig, hf: str, flax: str, pooler: bool) -> list[Rule]:
  """BertModel / RobertaModel. hf / flax are prefixes ending in '.' / '/' (or empty)."""
  h = config.num_attention_heads
  rules = [_rule(f"{hf}embeddings.{n}.weight", f"{flax}embeddings/{n}/embedding", identity())
           for n in ("word_embeddings", "position_embeddings", "token_type_embeddings")]
  rules += _norm(f"{hf}embeddings.LayerNorm", f"{flax}embeddings/LayerNorm")
  for i in range(config.num_hidden_layers):
    src, dst = f"{hf}encoder.layer.{i}", f"{flax}encoder/layers_{i}"
    rules += _bert_attention(f"{src}.attention", f"{dst}/self_attn", f"{dst}/self_attn_norm", h)
    if config.add_cross_attention:
      rules += _bert_attention(f"{src}.crossattention", f"{dst}/cross_attn", f"{dst}/cross_attn_norm", h)
    rules += _linear(f"{src}.intermediate.dense", f"{dst}/mlp/fc_in")
    rules += _linear(f"{src}.output.dense", f"{dst}/mlp/fc_out")
    rules += _norm(f"{src}.output.LayerNorm", f"{dst}/mlp_norm")
  if pooler:
    rules += _linear(f"{hf}pooler.dense", f"{flax}pooler")
  return rules


def vit_body_rules(config: ViTConfig, hf: str, flax: str, pooler: bool) -> list[Rule]:
  """ViTModel / DeiTModel (pre-LN blocks, final `layernorm`, optional pooler)."""
  h = config.num_attention_heads
  emb = f"{hf}embeddings"
  rules = [_rule(f"{emb}.cls_token", f"{flax}embeddings/cls_token", identity())]
  if config.model_type == "deit":
    rules.append(_rule(f"{emb}.distillation_token", f"{flax}embeddings/distillation_token",
                       identity()))
  rules += [_rule(f"{emb}.position_embeddings", f"{flax}embeddings/position_embeddings", identity()),
            _rule(f"{emb}.patch_embeddings.projection.weight",
                  f"{flax}embeddings/patch_embeddings/kernel", oihw_to_hwio()),
            _rule(f"{emb}.patch_embeddings.projection.bias",
                  f"{flax}embeddings/patch_embeddings/bias", identity())]
  for i in range(config.num_hidden_layers):
    src, dst = f"{hf}encoder.layer.{i}", f"{flax}encoder/layers_{i}"
    rules += _attention(f"{src}.attention.attention", f"{src}.attention.output.dense",
                        f"{dst}/self_attn", h)
    rules += _norm(f"{src}.layernorm_before", f"{dst}/self_attn_norm")
    rules += _norm(f"{src}.layernorm_after", f"{dst}/mlp_norm")
    rules += _linear(f"{src}.intermediate.dense", f"{dst}/mlp/fc_in")
    rules += _linear(f"{src}.output.dense", f"{dst}/mlp/fc_out")
  rules += _norm(f"{hf}layernorm", f"{flax}layernorm")
  if pooler:
    rules += _linear(f"{hf}pooler.dense", f"{flax}pooler")
  return rules


def bert_lm_head_rules(config: BertConfig, hf: str, flax: str) -> list[Rule]:
  """BertLMHeadModel's `cls.predictions` / RobertaForCausalLM's `lm_head`."""
  if config.model_type == "roberta":
    head, dense, norm = f"{hf}lm_head", "dense", "layer_norm"
  else:
    head, dense, norm = f"{hf}cls.predictions", "transform.dense", "transform.LayerNorm"
  rules = _linear(f"{head}.{dense}", f"{flax}lm_head/transform")
  rules += _norm(f"{head}.{norm}", f"{flax}lm_head/transform_norm")
  rules.append(_rule(f"{head}.bias", f"{flax}lm_head/bias", identity(), aliases=(f"{head}.decoder.bias",)))
  if not config.tie_word_embeddings:
    rules.append(_rule(f"{head}.decoder.weight", f"{flax}lm_head/decoder/kernel", linear()))
  return rules


def gpt2_body_rules(config: GPT2Config, hf: str, flax: str) -> list[Rule]:
  h = config.n_head
  rules = [_rule(f"{hf}wte.weight", f"{flax}wte/embedding", identity()),
           _rule(f"{hf}wpe.weight", f"{flax}wpe/embedding", identity())]
  for i in range(config.n_layer):
    src, dst = f"{hf}h.{i}", f"{flax}h/layers_{i}"
    qkv = [f"{dst}/self_attn/{p}" for p in ("query", "key", "value")]
    rules += _norm(f"{src}.ln_1", f"{dst}/self_attn_norm")
    rules += [_rule(f"{src}.attn.c_attn.weight", [f"{p}/kernel" for p in qkv], split_fused(3, h, False)),
              _rule(f"{src}.attn.c_attn.bias", [f"{p}/bias" for p in qkv], split_fused(3, h, True)),
              _rule(f"{src}.attn.c_proj.weight", f"{dst}/self_attn/out/kernel", from_heads(h, False)),
              _rule(f"{src}.attn.c_proj.bias", f"{dst}/self_attn/out/bias", identity())]
    if config.add_cross_attention:
      kv = [f"{dst}/cross_attn/{p}" for p in ("key", "value")]
      rules += _norm(f"{src}.ln_cross_attn", f"{dst}/cross_attn_norm")
      rules += [
          _rule(f"{src}.crossattention.q_attn.weight", f"{dst}/cross_attn/query/kernel", to_heads(h, False)),
          _rule(f"{src}.crossattention.q_attn.bias", f"{dst}/cross_attn/query/bias", bias_to_heads(h)),
          _rule(f"{src}.crossattention.c_attn.weight", [f"{p}/kernel" for p in kv], split_fused(2, h, False)),
          _rule(f"{src}.crossattention.c_attn.bias", [f"{p}/bias" for p in kv], split_fused(2, h, True)),
          _rule(f"{src}.crossattention.c_proj.weight", f"{dst}/cross_attn/out/kernel", from_heads(h, False)),
          _rule(f"{src}.crossattention.c_proj.bias", f"{dst}/cross_attn/out/bias", identity())]
    rules += _norm(f"{src}.ln_2", f"{dst}/mlp_norm")
    rules += _conv1d(f"{src}.mlp.c_fc", f"{dst}/mlp/fc_in")
    rules += _conv1d(f"{src}.mlp.c_proj", f"{dst}/mlp/fc_out")
  rules += _norm(f"{hf}ln_f", f"{flax}ln_f")
  return rules


def gpt2_lm_head_rules(config: GPT2Config, hf: str, flax: str) -> list[Rule]:
  if config.tie_word_embeddings:
    return []
  return [_rule(f"{hf}lm_head.weight", f"{flax}lm_head/kernel", linear())]


def trocr_rules(config: TrOCRConfig, hf: str, flax: str) -> list[Rule]:
  """TrOCRForCausalLM: `model.decoder` (BART-style names, post-LN) + `output_projection`."""
  h = config.decoder_attention_heads
  src_root, dst_root = f"{hf}model.decoder", f"{flax}model/decoder"
  rules = [_rule(f"{src_root}.embed_tokens.weight", f"{dst_root}/embed_tokens/embedding", identity())]
  if config.use_learned_position_embeddings:
    rules.append(_rule(f"{src_root}.embed_positions.weight",
                       f"{dst_root}/embed_positions/embedding", identity()))
  if config.layernorm_embedding:
    rules += _norm(f"{src_root}.layernorm_embedding", f"{dst_root}/layernorm_embedding")
  qkv = ("q_proj", "k_proj", "v_proj")
  for i in range(config.decoder_layers):
    src, dst = f"{src_root}.layers.{i}", f"{dst_root}/layers/layers_{i}"
    rules += _attention(f"{src}.self_attn", f"{src}.self_attn.out_proj", f"{dst}/self_attn", h, qkv)
    rules += _norm(f"{src}.self_attn_layer_norm", f"{dst}/self_attn_norm")
    if config.add_cross_attention:
      rules += _attention(f"{src}.encoder_attn", f"{src}.encoder_attn.out_proj",
                          f"{dst}/cross_attn", h, qkv)
      rules += _norm(f"{src}.encoder_attn_layer_norm", f"{dst}/cross_attn_norm")
    rules += _linear(f"{src}.fc1", f"{dst}/mlp/fc_in")
    rules += _linear(f"{src}.fc2", f"{dst}/mlp/fc_out")
    rules += _norm(f"{src}.final_layer_norm", f"{dst}/mlp_norm")
  if not config.tie_word_embeddings:
    rules.append(_rule(f"{hf}output_projection.weight", f"{flax}output_projection/kernel", linear()))
  return rules


BASE_PREFIX = {"bert": "bert", "roberta": "roberta", "gpt2": "transformer"}


def encoder_rules(config, hf: str = "", flax: str = "") -> list[Rule]:
  """Rules of an encoder (BertModel / RobertaModel / ViTModel / DeiTModel, with pooler)."""
  if config.model_type in ("bert", "roberta"):
    return bert_body_rules(config, hf, flax, pooler=True)
  if config.model_type in ("vit", "deit"):
    return vit_body_rules(config, hf, flax, pooler=True)
  raise ConfigError(f"model_type {config.model_type!r} has no encoder conversion rules")


def decoder_rules(config, hf: str = "", flax: str = "") -> list[Rule]:
  """Rules of a causal LM (BertLMHeadModel / RobertaForCausalLM / GPT2LMHeadModel /
  TrOCRForCausalLM)."""
  base = BASE_PREFIX.get(config.model_type)
  if config.model_type in ("bert", "roberta"):
    return (bert_body_rules(config, f"{hf}{base}.", f"{flax}{base}/", pooler=False)
            + bert_lm_head_rules(config, hf, flax))
  if config.model_type == "gpt2":
    return (gpt2_body_rules(config, f"{hf}{base}.", f"{flax}{base}/")
            + gpt2_lm_head_rules(config, hf, flax))
  if config.model_type == "trocr":
    return trocr_rules(config, hf, flax)
  raise ConfigError(f"model_type {config.model_type!r} has no decoder conversion rules")


def encoder_decoder_rules(config: EncoderDecoderConfig) -> list[Rule]:
  """Rules of a full transformers EncoderDecoderModel / VisionEncoderDecoderModel checkpoint
  (both name their parts encoder. / decoder. / enc_to_dec_proj.)."""
  rules = encoder_rules(config.encoder, "encoder.", "encoder/")
  rules += decoder_rules(config.decoder, "decoder.", "decoder/")
  if config.needs_enc_to_dec_proj:
    rules += _linear("enc_to_dec_proj", "enc_to_dec_proj")
  return rules


def hf_buffers(config: EncoderDecoderConfig) -> dict[str, np.ndarray]:
  """Persistent HF buffers with no edjax param that transformers expects in a checkpoint.

  TrOCR's sinusoidal positions register `_float_tensor` (a 1-element dtype carrier, its value
  unused); without it transformers reports a missing key.
  """
  dec = config.decoder
  if dec.model_type == "trocr" and not dec.use_learned_position_embeddings:
    return {"decoder.model.decoder.embed_positions._float_tensor": np.zeros((1,), np.float32)}
  return {}


# ----------------------------------------------------------------------------- apply rules

@dataclasses.dataclass
class LoadReport:
  """What a conversion used, could not find, did not expect, or found with the wrong shape."""

  used: list[str] = dataclasses.field(default_factory=list)  # HF names converted
  missing: list[str] = dataclasses.field(default_factory=list)  # HF names the model needs
  unexpected: list[str] = dataclasses.field(default_factory=list)  # HF names nothing reads
  mismatched: list[str] = dataclasses.field(default_factory=list)  # messages
  initialized: list[str] = dataclasses.field(default_factory=list)  # edjax paths left fresh

  def summary(self, limit: int = 8) -> str:
    def head(xs):
      return ", ".join(xs[:limit]) + (f" ... (+{len(xs) - limit})" if len(xs) > limit else "")
    parts = []
    if self.missing:
      parts.append(f"missing {len(self.missing)}: {head(self.missing)}")
    if self.unexpected:
      parts.append(f"unexpected {len(self.unexpected)}: {head(self.unexpected)}")
    if self.mismatched:
      parts.append(f"shape mismatch {len(self.mismatched)}: {head(self.mismatched)}")
    return "; ".join(parts) or "all tensors matched"


def hf_to_flax(state: dict[str, np.ndarray], rules: Iterable[Rule],
               expected: dict[str, tuple] | None = None) -> tuple[dict[str, np.ndarray], LoadReport]:
  """Converts an HF state dict with `rules`; returns flat {'a/b/kernel': array} and a report.

  `expected` (flat path -> shape) enables the shape check; a mismatch is reported, not raised.
  """
  flat, report, consumed = {}, LoadReport(), set()
  for rule in rules:
    name = next((n for n in (rule.hf, *rule.aliases) if n in state), None)
    if name is None:
      report.missing.append(rule.hf)
      continue
    consumed.update(n for n in (rule.hf, *rule.aliases) if n in state)
    tensor = np.asarray(state[name])
    try:
      arrays = rule.to_flax(tensor)
    except ValueError:
      arrays = None
    shapes_ok = arrays is not None and (expected is None or all(
        p in expected and tuple(a.shape) == tuple(expected[p]) for p, a in zip(rule.flax, arrays)))
    if not shapes_ok:
      want = "?"
      if expected is not None and all(p in expected for p in rule.flax):
        want = tuple(rule.to_hf(tuple(np.zeros(expected[p], np.float32) for p in rule.flax)).shape)
      report.mismatched.append(f"{name}: checkpoint {tuple(tensor.shape)}, model expects {want}")
      continue
    report.used.append(name)
    for path, arr in zip(rule.flax, arrays):
      flat[path] = arr
  report.unexpected = sorted(k for k in state if k not in consumed and not _is_ignored(k))
  return flat, report


def flax_to_hf(flat: dict[str, np.ndarray], rules: Iterable[Rule]) -> dict[str, np.ndarray]:
  """Inverse of hf_to_flax: flat edjax params -> HF state dict (contiguous numpy arrays)."""
  out = {}
  for rule in rules:
    missing = [p for p in rule.flax if p not in flat]
    if missing:
      raise CheckpointError(f"params lack {missing} needed for HF tensor {rule.hf}; "
                            "were these params made for a different config?")
    out[rule.hf] = np.ascontiguousarray(rule.to_hf(tuple(np.asarray(flat[p]) for p in rule.flax)))
  return out


# ----------------------------------------------------------------------------- checkpoint files

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
  from safetensors import safe_open
  out = {}
  with safe_open(path, framework="np") as f:
    for key in f.keys():
      try:
        out[key] = f.get_tensor(key)
      except (TypeError, ValueError):  # bf16 has no numpy dtype: read through flax/jax
        from safetensors.flax import load_file
        out.update({k: np.asarray(v, np.float32) for k, v in load_file(path).items()})
        break
  return out


def _read_torch_bin(path: str) -> dict[str, np.ndarray]:
  try:
    import torch
  except ImportError as e:
    raise CheckpointError(f"{path} is a PyTorch pickle and torch is not installed; install torch "
                          "or convert the checkpoint to model.safetensors") from e
  state = torch.load(path, map_location="cpu", weights_only=True)
  out = {}
  for k, v in state.items():
    v = v.detach()
    out[k] = (v.float() if v.is_floating_point() else v).numpy()
  return out


def read_state_dict(directory: str) -> dict[str, np.ndarray]:
  """All tensors of an HF checkpoint dir: model.safetensors, sharded safetensors, or .bin."""
  for fname in WEIGHT_FILES:
    path = os.path.join(directory, fname)
    if not os.path.exists(path):
      continue
    if fname.endswith(".index.json"):
      with open(path) as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
      reader = _read_safetensors if "safetensors" in fname else _read_torch_bin
      state = {}
      for shard in shards:
        shard_path = os.path.join(directory, shard)
        if not os.path.exists(shard_path):
          raise FileNotFoundError(f"{path} lists shard {shard} but {shard_path} does not exist; "
                                  "download every shard of the checkpoint")
        state.update(_read_weights_file(reader, shard_path))
      return state
    reader = _read_safetensors if fname.endswith(".safetensors") else _read_torch_bin
    return _read_weights_file(reader, path)
  raise FileNotFoundError(f"no weights in {directory}: expected one of {list(WEIGHT_FILES)}")


def _read_weights_file(reader, path: str) -> dict[str, np.ndarray]:
  """Runs `reader` on one weights file; a corrupt or truncated file is a CheckpointError."""
  try:
    return reader(path)
  except (CheckpointError, FileNotFoundError, MemoryError):
    raise
  except Exception as e:  # safetensors' SafetensorError, torch's UnpicklingError, ...
    raise CheckpointError(f"cannot read weights file {path} ({type(e).__name__}: {e}); it is "
                          "corrupt, truncated or not a checkpoint: re-download or re-export it") from e


def with_prefix(state: dict[str, np.ndarray], prefix: str, want: bool) -> dict[str, np.ndarray]:
  """Adds (want=True) or strips (want=False) an HF base-model prefix like 'bert.' as needed.

  Lets a BertModel checkpoint warm-start a BertLMHeadModel and vice versa, as HF does.
  """
  has = any(k.startswith(prefix) for k in state)
  if want and not has:
    return {prefix + k: v for k, v in state.items()}
  if not want and has:
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}
  return state
