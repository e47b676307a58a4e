"""Optimizers from config.optimizer: AdamW (default) or Adafactor, with warmup + linear / rsqrt
decay and global-norm clipping; config.freeze holds params fixed (no optimizer state for them).

config.optimizer.name:
  'adamw'      optax.adamw; weight decay on everything but biases and LayerNorm scales.
  'adafactor'  optax.adafactor with its usual (T5 / t5x) settings: factored second moments for
               matrices with both dims >= 128, decay_rate 0.8, update clipping at RMS 1.0,
               updates scaled by the parameter RMS, no first moment; b1 / b2 / eps /
               weight_decay are AdamW's and unused. The learning rate is the schedule's (t5x
               fine-tunes T5 with a constant 1e-3).
config.freeze: regexes matched (re.fullmatch) against '/'-joined param paths, e.g.
  ('encoder/.*',) freezes the encoder. Frozen params get optax.set_to_zero() under
  optax.multi_transform: their updates are 0 and they carry no optimizer state. A regex that
  matches no param is a ConfigError naming it. Clipping sees only the trained params' gradients.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import flax.traverse_util as traverse_util
import jax
import jax.numpy as jnp
import optax

from edjax.model_configs import ConfigError

NO_DECAY_LEAVES = ("bias", "scale")  # biases and LayerNorm scales (HF: "bias", "LayerNorm.weight")
DECAYS = ("linear", "rsqrt", "constant")
OPTIMIZERS = ("adamw", "adafactor")
TRAINED, FROZEN = "trained", "frozen"


def learning_rate_schedule(learning_rate: float, warmup_steps: int, total_steps: int,
                           decay: str) -> optax.Schedule:
  """Linear warmup to `learning_rate` over `warmup_steps`, then `decay`:

  'linear' to 0 at `total_steps` (HF's get_linear_schedule_with_warmup), 'rsqrt'
  (lr * sqrt(warmup / step), as T5 / big_vision), or 'constant'.
  """
  if decay not in DECAYS:
    raise ConfigError(f"config.optimizer.decay={decay!r}: use one of {DECAYS}")
  warmup = max(int(warmup_steps), 0)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = learning_rate * step / max(warmup, 1)
    if decay == "linear":
      after = learning_rate * jnp.maximum(0.0, (total_steps - step) / max(total_steps - warmup, 1))
    elif decay == "rsqrt":
      after = learning_rate * jnp.sqrt(max(warmup, 1) / jnp.maximum(step, 1.0))
    else:
      after = jnp.asarray(learning_rate, jnp.float32)
    return jnp.where(step < warmup, warm, after)
  return schedule


def decay_mask(params):
  """True for weights that get weight decay: everything but biases and LayerNorm scales."""
  flat = traverse_util.flatten_dict(params)
  return traverse_util.unflatten_dict({k: k[-1] not in NO_DECAY_LEAVES for k in flat})


def param_path(key: tuple) -> str:
  """'/'-joined param path, as config.freeze's regexes see it: 'encoder/bert/embeddings/...'."""
  return "/".join(str(k) for k in key)


def freeze_labels(params, freeze: Sequence[str]):
  """The params' tree with FROZEN where a path fully matches a regex of `freeze`, else TRAINED.

  Raises ConfigError for an invalid regex or one that matches no param."""
  patterns = []
  for pattern in freeze:
    try:
      patterns.append(re.compile(pattern))
    except re.error as e:
      raise ConfigError(f"config.freeze: {pattern!r} is not a regex ({e}); give regexes of "
                        "'/'-joined param paths, e.g. 'encoder/.*'") from None
  flat = traverse_util.flatten_dict(params)
  paths = {k: param_path(k) for k in flat}
  for pattern in patterns:
    if not any(pattern.fullmatch(p) for p in paths.values()):
      some = ", ".join(sorted(paths.values())[:3])
      raise ConfigError(f"config.freeze: {pattern.pattern!r} matches no param path (they are "
                        f"'/'-joined and matched whole, e.g. {some}); fix or drop it")
  return traverse_util.unflatten_dict(
      {k: FROZEN if any(q.fullmatch(p) for q in patterns) else TRAINED for k, p in paths.items()})


def make_optimizer(opt, total_steps: int, freeze: Sequence[str] = ()
                   ) -> optax.GradientTransformation:
  """optax transformation from config.optimizer (see the module docstring) and config.freeze.

  Global-norm clipping, then AdamW (masked weight decay) or Adafactor; with `freeze`, the frozen
  params' labels come from the params' structure at init (optax.multi_transform's label fn)."""
  name = opt.get("name", "adamw")
  if name not in OPTIMIZERS:
    raise ConfigError(f"config.optimizer.name={name!r}: use one of {OPTIMIZERS}")
  schedule = learning_rate_schedule(opt.learning_rate, opt.warmup_steps, total_steps, opt.decay)
  parts = []
  if opt.max_grad_norm and opt.max_grad_norm > 0:
    parts.append(optax.clip_by_global_norm(opt.max_grad_norm))
  if name == "adamw":
    parts.append(optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                             weight_decay=opt.weight_decay, mask=decay_mask))
  else:
    parts.append(optax.adafactor(schedule))
  trained = optax.chain(*parts)
  freeze = tuple(freeze or ())
  if not freeze:
    return trained
  return optax.multi_transform({TRAINED: trained, FROZEN: optax.set_to_zero()},
                               lambda params: freeze_labels(params, freeze))


def state_shardings(opt_shapes, param_shardings, param_shapes, replicated):
  """A sharding per leaf of the optimizer state (abstract `opt_shapes`).

  A leaf is found under its param by the trailing dict keys of its path (optax keeps the params'
  tree inside its states, also under multi_transform's labels); one with its param's shape (Adam
  moments) is sharded like the param, any other (Adafactor's factored row / column moments, its
  (1,) placeholders, counters) is small and replicated. Works without calling `init` on a
  placeholder, which a label fn of the params cannot answer (optax.tree_map_params does)."""
  flat_sh = {tuple(k): v for k, v in traverse_util.flatten_dict(param_shardings).items()}
  flat_shape = {tuple(k): v.shape for k, v in traverse_util.flatten_dict(param_shapes).items()}

  def sharding_of(path, leaf):
    keys = []
    for entry in reversed(path):
      if not isinstance(entry, jax.tree_util.DictKey):
        break
      keys.insert(0, entry.key)
    for start in range(len(keys)):  # the longest trailing run that names a param
      key = tuple(keys[start:])
      if key in flat_sh:
        return flat_sh[key] if flat_shape[key] == leaf.shape else replicated
    return replicated
  return jax.tree_util.tree_map_with_path(sharding_of, opt_shapes)
