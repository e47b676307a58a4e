"""Public loading / saving: from_pretrained, from_encoder_decoder_pretrained, from_config, save_pretrained.

Directories are HF format (config.json + model.safetensors | sharded safetensors |
pytorch_model.bin [+ generation_config.json]); `save_pretrained` writes the same, so transformers'
`EncoderDecoderModel.from_pretrained` reads our output. An *edjax export* is config.json +
`flax_params.msgpack` (the canonical param tree, flax serialization), read by `from_pretrained` too.
"""

from __future__ import annotations

import json
import logging
import os

import flax.serialization
import flax.traverse_util as traverse_util
import jax
import numpy as np

from edjax import convert, fileio
from edjax import model_configs as configs
from edjax.model_configs import ConfigError, EncoderDecoderConfig
from edjax.convert import CheckpointError
from edjax.models import registry, stacking
from edjax.models.encoder_decoder import EncoderDecoderModel, model_for_config

log = logging.getLogger("edjax")

FLAX_PARAMS_FILE = "flax_params.msgpack"
GENERATION_CONFIG_FILE = "generation_config.json"
SPECIAL_TOKEN_KEYS = ("decoder_start_token_id", "bos_token_id", "eos_token_id", "pad_token_id")


class PathNotFoundError(ConfigError, FileNotFoundError):
  """A checkpoint / tokenizer directory that is not there: a user's mistake (one line in the
  mains), and still a FileNotFoundError for callers that catch that."""


def resolve_path(path: str, what: str = "checkpoint directory") -> str:
  """A local HF-format directory, or a hub id downloaded when the hub can be reached. `what`
  names it in the errors ("checkpoint directory", "tokenizer directory", ...)."""
  path = os.fspath(path)
  if os.path.isdir(path):
    return path
  if os.path.exists(path):
    wants = "config.json" if what == "checkpoint directory" else "its files"
    raise PathNotFoundError(f"{path} is a file; pass the {what} that holds {wants}")
  if path.startswith((".", "/", "~")) or path.count("/") > 1:
    raise PathNotFoundError(f"{what} {path} does not exist")
  try:
    from huggingface_hub import snapshot_download
    return snapshot_download(path, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"])
  except Exception as e:  # offline, unknown repo, or huggingface_hub missing
    raise FileNotFoundError(
        f"{path!r} is not a local directory and could not be fetched from the Hugging Face hub "
        f"({type(e).__name__}: {e}). Download the checkpoint on a machine with internet and pass "
        "its local directory.") from e


def _read_json(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


def _apply_overrides(config, overrides: dict, role: str):
  try:
    return config.replace(**overrides)
  except ConfigError as e:
    raise ConfigError(f"{role}_ overrides: {e}") from None


def _to_flat_np(tree) -> dict[str, np.ndarray]:
  return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(tree, sep="/").items()}


def _expected_shapes(model: EncoderDecoderModel) -> dict[str, tuple]:
  """Shapes of the *untied*, unscanned param tree (the layout the HF rules address)."""
  model = stacking.unscanned_model(model)
  full = model.untie_params(model.param_shapes())
  return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(full, sep="/").items()}


def _fresh_flat(model: EncoderDecoderModel, rng) -> dict:
  """Random init as a flat untied, unscanned tree (the layout `_merge` takes)."""
  return _to_flat_np(stacking.to_unscanned(model, model.untie_params(model.init(rng)), tied=False))


def _merge(model: EncoderDecoderModel, fresh_flat: dict, loaded_flat: dict):
  """Flat untied, unscanned trees (fresh, then loaded on top) -> `model`'s canonical params."""
  flat = dict(fresh_flat)
  flat.update(loaded_flat)
  params = stacking.to_scanned(model, traverse_util.unflatten_dict(flat, sep="/"), tied=False)
  return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), model.tie_params(params))


# ----------------------------------------------------------------------------- from_config


def from_config(config: EncoderDecoderConfig | dict, rng: int | jax.Array = 0, dtype=np.float32):
  """Random-init model and params for a config (object or HF config.json dict)."""
  if isinstance(config, dict):
    config = configs.config_from_dict(config)
    if not isinstance(config, EncoderDecoderConfig):
      raise ConfigError(f"from_config needs an encoder-decoder or vision-encoder-decoder config, "
                        f"got model_type {config.model_type!r}")
  model = model_for_config(config, dtype=dtype)
  return model, model.init(rng)


# ----------------------------------------------------------------------------- warm start


# Tensors a warm start leaves out by design, logged at INFO (HF's BertLMHeadModel has no pooler
# either: transformers reports it among the unused weights without a warning).
KNOWN_UNUSED_IN_DECODER = ("pooler.",)
UNSAFE_PICKLE_MARKERS = ("Weights only load failed", "Unsupported global", "weights_only")


def read_weights(path: str) -> dict[str, np.ndarray]:
  """`convert.read_state_dict`, with a pickle that torch's weights_only loader refuses (it would
  run code) reported as refused: unsafe, not as a corrupt file."""
  try:
    return convert.read_state_dict(path)
  except CheckpointError as e:
    cause = e.__cause__
    if cause is not None and any(m in str(cause) for m in UNSAFE_PICKLE_MARKERS):
      raise CheckpointError(
          f"refused: unsafe pickle in {path}: it references objects other than tensors "
          "(loading it would run code); get a model.safetensors version of the checkpoint, or "
          "convert it yourself only if you trust its source") from e
    raise


def _load_part(model, role: str, path: str, part_config) -> tuple[dict, convert.LoadReport]:
  """Converts one single-model checkpoint (with or without its base-model prefix) for `role`."""
  arch = registry.get(part_config.model_type)
  state = convert.with_prefix(read_weights(path), arch.base_model_prefix + ".",
                              want=(role == "decoder"))
  rules_fn = registry.encoder_rules if role == "encoder" else registry.decoder_rules
  flat, report = convert.hf_to_flax(state, rules_fn(part_config, "", f"{role}/"),
                                    _expected_shapes(model), ignored=arch.ignored_hf_keys)
  if report.mismatched:
    raise CheckpointError(f"{role} checkpoint {path} does not fit the {part_config.model_type} "
                          f"config: {report.summary()}. Check that config.json matches the weights.")
  not_fresh = [k for k in report.missing if not any(f in k for f in arch.fresh_on_warm_start)]
  if not_fresh:
    raise CheckpointError(
        f"{role} checkpoint {path} lacks {len(not_fresh)} tensors a {part_config.model_type} "
        f"{role} needs (e.g. {not_fresh[:4]}); is it a {part_config.model_type} checkpoint?")
  known = [k for k in report.unexpected if role == "decoder" and any(
      f".{name}" in f".{k}" for name in KNOWN_UNUSED_IN_DECODER)]
  if known:
    log.info("%s checkpoint %s: %d tensors not used by a decoder, as in transformers (%s)", role,
             path, len(known), known[:4])
  other = [k for k in report.unexpected if k not in known]
  if other:
    log.warning("%s checkpoint %s: %d tensors unused (e.g. %s)", role, path, len(other), other[:4])
  return flat, report


def from_encoder_decoder_pretrained(encoder_path: str, decoder_path: str, rng: int | jax.Array = 0,
                                    tie_encoder_decoder: bool = False, dtype=np.float32,
                                    output_loading_info: bool = False, **kwargs):
  """Warm-start: encoder and decoder from two HF single-model dirs; cross-attention fresh.

  Either part may instead be a model config (e.g. `edjax.ViTConfig(...)`): that part starts from
  random weights (e.g. a small image encoder joined to a pretrained text decoder).

  kwargs prefixed `encoder_` / `decoder_` override those configs (e.g. `decoder_hidden_dropout_prob`);
  unprefixed `decoder_start_token_id`, `pad_token_id`, `eos_token_id`, `bos_token_id` set the
  composite's special ids (default: the decoder config's own ids).
  With output_loading_info=True also returns {'encoder': LoadReport, 'decoder': LoadReport}.
  """
  enc_over = {k[len("encoder_"):]: v for k, v in kwargs.items() if k.startswith("encoder_")}
  dec_over = {k[len("decoder_"):]: v for k, v in kwargs.items()
              if k.startswith("decoder_") and k != "decoder_start_token_id"}
  top = {k: v for k, v in kwargs.items()
         if not (k.startswith("encoder_") or k.startswith("decoder_")) or k == "decoder_start_token_id"}
  bad = sorted(set(top) - set(SPECIAL_TOKEN_KEYS))
  if bad:
    raise ConfigError(f"unknown argument(s) {bad}: prefix model config overrides with encoder_ or "
                      f"decoder_, composite ids are {list(SPECIAL_TOKEN_KEYS)}")
  def part_config(spec, overrides, role):
    """(path or None, config): a checkpoint dir, or a model config to initialise randomly."""
    if isinstance(spec, configs.HFConfig):
      return None, _apply_overrides(spec, overrides, role)
    path = resolve_path(spec)
    return path, _apply_overrides(configs.load_config_file(path), overrides, role)

  encoder_path, enc_cfg = part_config(encoder_path, enc_over, "encoder")
  decoder_path, dec_cfg = part_config(decoder_path, dec_over, "decoder")
  for role, cfg in (("encoder", enc_cfg), ("decoder", dec_cfg)):
    if isinstance(cfg, EncoderDecoderConfig):
      raise ConfigError(f"{role} path holds an encoder-decoder checkpoint; use from_pretrained")
  if enc_cfg.is_decoder or enc_cfg.add_cross_attention:
    # As HF: a decoder checkpoint (e.g. BertLMHeadModel) used as the encoder is not causal.
    enc_cfg = enc_cfg.replace(is_decoder=False, add_cross_attention=False)
  ids = {k: top.get(k, getattr(dec_cfg, k, None)) for k in SPECIAL_TOKEN_KEYS}
  config = configs.join_configs(enc_cfg, dec_cfg, tie_encoder_decoder=tie_encoder_decoder, **ids)
  model = model_for_config(config, dtype=dtype)
  flat, enc_report = ({}, convert.LoadReport()) if encoder_path is None else _load_part(
      model, "encoder", encoder_path, config.encoder)
  dec_flat, dec_report = ({}, convert.LoadReport()) if decoder_path is None else _load_part(
      model, "decoder", decoder_path, config.decoder)
  flat.update(dec_flat)
  fresh = _fresh_flat(model, rng)  # after the checks: init compiles
  params = _merge(model, fresh, flat)
  info = {"encoder": enc_report, "decoder": dec_report}
  for report in info.values():
    report.initialized = sorted(k for k in fresh if k not in flat)
  return (model, params, info) if output_loading_info else (model, params)


# ----------------------------------------------------------------------------- full checkpoints


def _fill_tied(model: EncoderDecoderModel, flat: dict) -> None:
  """An HF checkpoint of a tied model may store a tied tensor under one of its two names."""
  for dec_path, enc_path in model.tied_paths:
    if dec_path in flat and enc_path not in flat:
      flat[enc_path] = flat[dec_path]
    elif enc_path in flat and dec_path not in flat:
      flat[dec_path] = flat[enc_path]


def from_pretrained(path: str, rng: int | jax.Array = 0, dtype=np.float32, strict: bool = True,
                    output_loading_info: bool = False, **config_overrides):
  """Loads an HF EncoderDecoderModel / VisionEncoderDecoderModel directory or an edjax export.

  strict=True (default): a missing or unexpected tensor is a CheckpointError that lists them;
  strict=False initialises missing tensors randomly and ignores unexpected ones (with a warning).
  config_overrides may name the runtime options (scan_layers, remat, attention_impl): set on
  both parts, the weights are loaded into that layout.
  """
  path = resolve_path(path)
  config = configs.load_config_file(path)
  if not isinstance(config, EncoderDecoderConfig):
    raise ConfigError(f"{path} holds a single {config.model_type} model, not an encoder-decoder; "
                      "use edjax.from_encoder_decoder_pretrained(encoder_dir, decoder_dir)")
  gen_path = os.path.join(path, GENERATION_CONFIG_FILE)
  if os.path.exists(gen_path):  # HF: generation_config.json fills ids the config leaves unset
    gen = _read_json(gen_path)
    fill = {k: gen[k] for k in SPECIAL_TOKEN_KEYS if getattr(config, k) is None and gen.get(k) is not None}
    config = config.replace(**fill)
  runtime = {k: config_overrides.pop(k) for k in configs.RUNTIME_FIELDS if k in config_overrides}
  config = configs.with_runtime_options(config, **runtime)  # scan_layers etc. on both parts
  if config_overrides:
    config = config.replace(**config_overrides)
  model = model_for_config(config, dtype=dtype)
  if os.path.exists(gen_path):  # generate() reads its defaults (num_beams, max_length, ...) here
    model.generation_defaults = _read_json(gen_path)
  msgpack = os.path.join(path, FLAX_PARAMS_FILE)
  if os.path.exists(msgpack):
    with open(msgpack, "rb") as f:
      params = flax.serialization.msgpack_restore(f.read())
    params = stacking.to_scanned(model, params)  # exports hold the unscanned tree
    _check_tree(model, params, msgpack)
    report = convert.LoadReport(used=sorted(_to_flat_np(params)))
    return (model, params, report) if output_loading_info else (model, params)

  rules = convert.encoder_decoder_rules(config)
  flat, report = convert.hf_to_flax(read_weights(path), rules, _expected_shapes(model),
                                    ignored=convert.ignored_hf_keys(config.encoder, config.decoder))
  _fill_tied(model, flat)
  # A tensor absent from the file but filled from its tied twin is not missing.
  by_name = {r.hf: r for r in rules}
  report.missing = [m for m in report.missing if not all(p in flat for p in by_name[m].flax)]
  if report.mismatched:
    raise CheckpointError(f"{path}: {report.summary()}. The weights do not match config.json.")
  if (report.missing or report.unexpected) and strict:
    raise CheckpointError(f"{path}: {report.summary()}. Pass strict=False to initialise missing "
                          "tensors randomly and ignore unexpected ones.")
  if report.missing or report.unexpected:
    log.warning("%s: %s", path, report.summary())
  report.initialized = sorted(k for k in _expected_shapes(model) if k not in flat)
  # Random init (it compiles the whole model) only when something must be initialised.
  fresh = _fresh_flat(model, rng) if report.initialized else {}
  params = _merge(model, fresh, flat)
  return (model, params, report) if output_loading_info else (model, params)


def _check_tree(model: EncoderDecoderModel, params, where: str) -> None:
  want = {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(model.param_shapes(), sep="/").items()}
  got = {k: tuple(np.shape(v)) for k, v in traverse_util.flatten_dict(params, sep="/").items()}
  missing, unexpected = sorted(set(want) - set(got)), sorted(set(got) - set(want))
  wrong = [f"{k}: {got[k]} vs {want[k]}" for k in want if k in got and got[k] != want[k]]
  if missing or unexpected or wrong:
    raise CheckpointError(f"{where} does not fit its config.json: missing {missing[:4]}, "
                          f"unexpected {unexpected[:4]}, wrong shapes {wrong[:4]}")


# ----------------------------------------------------------------------------- saving


def _json_bytes(d: dict) -> bytes:
  return (json.dumps(d, indent=2, sort_keys=False) + "\n").encode()


def generation_config_dict(config: EncoderDecoderConfig, defaults: dict | None = None) -> dict:
  """generation_config.json: the model's generation defaults plus the config's special ids."""
  ids = {k: getattr(config, k) for k in SPECIAL_TOKEN_KEYS if getattr(config, k) is not None}
  return {**(defaults or {}), **ids}


def save_pretrained(model: EncoderDecoderModel, params, out_dir: str) -> None:
  """Writes config.json + model.safetensors + generation_config.json in HF format, atomically."""
  from safetensors.numpy import save_file
  config = model.config
  _check_tree(model, params, "params")
  full = _to_flat_np(stacking.to_unscanned(model, model.untie_params(jax.device_get(params)),
                                           tied=False))
  state = convert.flax_to_hf(full, convert.encoder_decoder_rules(config))
  state.update(convert.hf_buffers(config))
  state = {k: np.ascontiguousarray(v.astype(np.float32) if v.dtype.kind == "f" else v)
           for k, v in state.items()}
  config_dict = config.to_dict()
  config_dict.setdefault("architectures", [type(model).__name__])
  files = {
      "model.safetensors": lambda p: save_file(state, p, metadata={"format": "pt"}),
      GENERATION_CONFIG_FILE: _json_bytes(generation_config_dict(config, model.generation_defaults)),
      "config.json": _json_bytes(config_dict),
  }
  fileio.atomic_write_dir(out_dir, files)


def export_params(model: EncoderDecoderModel, params, out_dir: str) -> None:
  """edjax export: config.json + flax_params.msgpack (canonical tree), atomically."""
  _check_tree(model, params, "params")
  params = stacking.to_unscanned(model, params)  # exports are layout-free: scanned or not
  data = flax.serialization.msgpack_serialize(jax.tree_util.tree_map(np.asarray, jax.device_get(params)))
  generation = generation_config_dict(model.config, model.generation_defaults)
  files = {FLAX_PARAMS_FILE: data, GENERATION_CONFIG_FILE: _json_bytes(generation),
           "config.json": _json_bytes(model.config.to_dict())}
  fileio.atomic_write_dir(out_dir, files)
