"""The conversion engine: HF (PyTorch-layout) state dicts <-> edjax parameter trees.

A checkpoint is converted by *rules*: one HF tensor name <-> one or more edjax param paths, with a
pair of per-tensor hooks (transpose a torch Linear, reshape to heads, split GPT-2's fused qkv).
Each family's rule table lives with its modules (`edjax/models/<family>.py`, registered as
`Architecture.encoder_rules` / `decoder_rules`); this module holds the hooks and small table
builders they share, applies any table in both directions (`hf_to_flax` / `flax_to_hf`, with a
`LoadReport` of used / missing / unexpected / mismatched tensors), and reads checkpoint files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Callable, Iterable, Sequence

import numpy as np

from edjax.model_configs import EncoderDecoderConfig
from edjax.models import registry

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


def rule(hf: str, flax: str | Sequence[str], hooks: tuple[ToFlax, ToHF], aliases=()) -> Rule:
  """One HF tensor <-> one or more '/'-joined param paths, through a (to_flax, to_hf) hook pair."""
  flax = (flax,) if isinstance(flax, str) else tuple(flax)
  return Rule(hf, flax, hooks[0], hooks[1], tuple(aliases))


def norm_rules(hf: str, flax: str, hf_names=("weight", "bias")) -> list[Rule]:
  """A torch LayerNorm (weight, bias) <-> a flax LayerNorm (scale, bias)."""
  return [rule(f"{hf}.{hf_names[0]}", f"{flax}/scale", identity()),
          rule(f"{hf}.{hf_names[1]}", f"{flax}/bias", identity())]


def linear_rules(hf: str, flax: str) -> list[Rule]:
  """A torch nn.Linear <-> a flax Dense."""
  return [rule(f"{hf}.weight", f"{flax}/kernel", linear()), rule(f"{hf}.bias", f"{flax}/bias", identity())]


def conv1d_rules(hf: str, flax: str) -> list[Rule]:
  """A GPT-2 Conv1D (weight already (in, out)) <-> a flax Dense."""
  return [rule(f"{hf}.weight", f"{flax}/kernel", identity()), rule(f"{hf}.bias", f"{flax}/bias", identity())]


def is_ignored(name: str, patterns: Sequence[str]) -> bool:
  """True when an HF tensor name matches one of the `ignored_hf_keys` regexes."""
  return any(re.search(p, name) for p in patterns)


# ----------------------------------------------------------------------------- composite tables


def attention_rules(qkv: str, out: str, flax: str, heads: int,
                    names: Sequence[str] = ("query", "key", "value"),
                    qkv_bias: Sequence[bool] = (True, True, True)) -> list[Rule]:
  """torch-Linear q/k/v at `{qkv}.{names}` and output at `{out}` -> the shared Attention
  (`qkv_bias`: which of the three projections have a bias, as `BlockConfig.qkv_bias`)."""
  rules = []
  for proj, name, has_bias in zip(("query", "key", "value"), names, qkv_bias):
    rules.append(rule(f"{qkv}.{name}.weight", f"{flax}/{proj}/kernel", to_heads(heads, True)))
    if has_bias:
      rules.append(rule(f"{qkv}.{name}.bias", f"{flax}/{proj}/bias", bias_to_heads(heads)))
  return rules + [rule(f"{out}.weight", f"{flax}/out/kernel", from_heads(heads, True)),
                  rule(f"{out}.bias", f"{flax}/out/bias", identity())]


def encoder_decoder_rules(config: EncoderDecoderConfig) -> list[Rule]:
  """Rules of a full transformers EncoderDecoderModel / VisionEncoderDecoderModel checkpoint
  (both name their parts encoder. / decoder. / enc_to_dec_proj.)."""
  rules = registry.encoder_rules(config.encoder, "encoder.", "encoder/")
  rules += registry.decoder_rules(config.decoder, "decoder.", "decoder/")
  if config.needs_enc_to_dec_proj:
    rules += linear_rules("enc_to_dec_proj", "enc_to_dec_proj")
  return rules


def hf_buffers(config: EncoderDecoderConfig) -> dict[str, np.ndarray]:
  """Persistent HF buffers with no edjax param that transformers expects in a composite
  checkpoint (each family declares its own, e.g. TrOCR's sinusoidal `_float_tensor`)."""
  out = {}
  for part in ("encoder", "decoder"):
    arch = registry.get(getattr(config, part).model_type)
    if arch.hf_buffers is not None:
      out.update({f"{part}.{k}": v for k, v in arch.hf_buffers(getattr(config, part)).items()})
  return out


def ignored_hf_keys(*part_configs) -> tuple[str, ...]:
  """Regexes of the HF buffers / derived tensors the families of `part_configs` skip on load."""
  return tuple(p for c in part_configs for p in registry.get(c.model_type).ignored_hf_keys)


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
               expected: dict[str, tuple] | None = None,
               ignored: Sequence[str] = ()) -> tuple[dict[str, np.ndarray], LoadReport]:
  """Converts an HF state dict with `rules`; returns flat {'a/b/kernel': array} and a report.

  `expected` (flat path -> shape) enables the shape check; a mismatch is reported, not raised.
  `ignored`: regexes of HF buffers / derived tensors that are not reported as unexpected (the
  families' `Architecture.ignored_hf_keys`).
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
  report.unexpected = sorted(k for k in state if k not in consumed and not is_ignored(k, ignored))
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
