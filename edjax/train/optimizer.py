"""AdamW with warmup + linear / rsqrt decay, no weight decay on biases and LayerNorm, clipping."""

from __future__ import annotations

import flax.traverse_util as traverse_util
import jax.numpy as jnp
import optax

from edjax.model_configs import ConfigError

NO_DECAY_LEAVES = ("bias", "scale")  # biases and LayerNorm scales (HF: "bias", "LayerNorm.weight")
DECAYS = ("linear", "rsqrt", "constant")


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


def make_optimizer(opt, total_steps: int) -> optax.GradientTransformation:
  """optax chain from config.optimizer: global-norm clipping, then masked AdamW."""
  schedule = learning_rate_schedule(opt.learning_rate, opt.warmup_steps, total_steps, opt.decay)
  parts = []
  if opt.max_grad_norm and opt.max_grad_norm > 0:
    parts.append(optax.clip_by_global_norm(opt.max_grad_norm))
  parts.append(optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                           weight_decay=opt.weight_decay, mask=decay_mask))
  return optax.chain(*parts)
