"""Scanned <-> unscanned param layouts (config `scan_layers=True`).

An unscanned `layers.TransformerStack` holds layers_0 ... layers_{n-1}; a scanned one holds one
`layers` subtree whose arrays have a leading [layers] axis. Everything that reads or writes
params from outside (the HF converter, warm start, edjax exports, `save_pretrained`, random
init) works on the unscanned tree, the layout the HF per-layer rules address; the functions here
convert at that boundary, driven by the param shapes of the two layouts (no name guessing: a
Swin stage's `layers_i` is never stacked because the scanned model has no `layers` path there).

A scanned Swin / DonutSwin stage holds `block_pairs/even` and `block_pairs/odd`: rows k of
blocks_{2k} (unshifted) and blocks_{2k+1} (shifted), the pairs its scan repeats.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import flax.linen as nn
import flax.traverse_util as traverse_util
import jax.numpy as jnp
import numpy as np

from edjax.model_configs import EncoderDecoderConfig, with_runtime_options

Params = Any
_LAYER_SEGMENT = re.compile(r"^(layers|blocks)_(\d+)$")
# scanned path segments -> (unscanned segment name, first index, stride): row k of the stacked
# array is the unscanned segment `{name}_{first + stride * k}`.
STACKED_SEGMENTS = {("layers",): ("layers", 0, 1),
                    ("block_pairs", "even"): ("blocks", 0, 2),
                    ("block_pairs", "odd"): ("blocks", 1, 2)}


def is_scanned(config) -> bool:
  """True when the model config (or either part of a composite) has scan_layers=True."""
  if isinstance(config, EncoderDecoderConfig):
    return is_scanned(config.encoder) or is_scanned(config.decoder)
  return bool(getattr(config, "scan_layers", False))


def unscanned_model(model):
  """The same model with scan_layers=False (cached on `model`): the layout of the HF rules."""
  if not is_scanned(model.config):
    return model
  twin = getattr(model, "_unscanned_twin", None)
  if twin is None:
    twin = type(model)(with_runtime_options(model.config, scan_layers=False), model.dtype)
    twin.generation_defaults = model.generation_defaults
    model._unscanned_twin = twin
  return twin


def _stack(arrays):
  if all(isinstance(a, np.ndarray) for a in arrays):
    return np.stack(arrays)
  return jnp.stack(arrays)


def _stacked_sources(parts: list[str], rows: int):
  """For a scanned path's segments: each candidate list of the unscanned paths of its rows."""
  for j in range(len(parts)):
    for scanned, (name, first, stride) in STACKED_SEGMENTS.items():
      if tuple(parts[j:j + len(scanned)]) == scanned:
        yield ["/".join(parts[:j] + [f"{name}_{first + stride * i}"] + parts[j + len(scanned):])
               for i in range(rows)]


def _stacked_rows(parts: list[str]):
  """For an unscanned path's segments: each candidate (scanned path, row) holding it."""
  for j, segment in enumerate(parts):
    match = _LAYER_SEGMENT.match(segment)
    if not match:
      continue
    for scanned, (name, first, stride) in STACKED_SEGMENTS.items():
      offset = int(match.group(2)) - first
      if match.group(1) == name and offset >= 0 and offset % stride == 0:
        yield "/".join(parts[:j] + list(scanned) + parts[j + 1:]), offset // stride


def stack_flat(flat: Mapping[str, Any], target: Mapping[str, Any]) -> dict[str, Any]:
  """Unscanned flat params {'a/layers_0/b': x, ...} -> the layout of `target` (flat path ->
  shape-bearing leaf of the scanned tree): each target path with a `layers` segment that the
  source holds as layers_0 .. layers_{n-1} gets them stacked on a new axis 0 (a Swin stage's
  block_pairs/even, block_pairs/odd: blocks_0, blocks_2, ... and blocks_1, blocks_3, ...).

  Paths the source already holds are kept as they are (so a stacked tree passes through);
  source paths nothing consumes stay, so a later shape check can report them.
  """
  out, consumed = {}, set()
  for path, leaf in target.items():
    if path in flat:
      out[path] = flat[path]
      consumed.add(path)
      continue
    for sources in _stacked_sources(path.split("/"), np.shape(leaf)[0]):
      if all(s in flat for s in sources):
        out[path] = _stack([flat[s] for s in sources])
        consumed.update(sources)
        break
  out.update({k: v for k, v in flat.items() if k not in consumed and k not in out})
  return out


def unstack_flat(flat: Mapping[str, Any], target: Mapping[str, Any]) -> dict[str, Any]:
  """Inverse of `stack_flat`: scanned flat params -> the unscanned layout of `target` (flat
  path -> leaf): target path a/layers_i/b reads row i of the source's a/layers/b (a Swin
  stage's a/blocks_j/b: row j // 2 of a/block_pairs/even/b or odd/b)."""
  out, consumed = {}, set()
  for path in target:
    if path in flat:
      out[path] = flat[path]
      consumed.add(path)
      continue
    for stacked, row in _stacked_rows(path.split("/")):
      if stacked in flat:
        out[path] = flat[stacked][row]
        consumed.add(stacked)
        break
  out.update({k: v for k, v in flat.items() if k not in consumed and k not in out})
  return out


def _shapes(model, tied: bool) -> dict[str, Any]:
  shapes = model.param_shapes()
  if not tied:
    shapes = model.untie_params(shapes)
  return traverse_util.flatten_dict(nn.unbox(shapes), sep="/")


def to_scanned(model, params: Params, tied: bool = True) -> Params:
  """Unscanned params (canonical tree, or the untied full tree with tied=False) -> `model`'s
  layout; unchanged when the model is not scanned."""
  if not is_scanned(model.config):
    return params
  flat = traverse_util.flatten_dict(params, sep="/")
  return traverse_util.unflatten_dict(stack_flat(flat, _shapes(model, tied)), sep="/")


def to_unscanned(model, params: Params, tied: bool = True) -> Params:
  """`model`'s params (canonical, or untied with tied=False) -> the unscanned layout the HF
  rules and exports use; unchanged when the model is not scanned."""
  if not is_scanned(model.config):
    return params
  flat = traverse_util.flatten_dict(params, sep="/")
  target = _shapes(unscanned_model(model), tied)
  return traverse_util.unflatten_dict(unstack_flat(flat, target), sep="/")
