"""The jitted-to-be train step, apart from the trainer so that light scripts (the device bench,
plan_memory) use the trainer's exact step without its data / logging dependencies."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from edjax.train.loss import token_loss


def make_train_step(model, optimizer, config):
  """(state, batch) -> (new state, metrics). Gradients are token-weighted over all micro-batches,
  so grad_accum_steps=k equals one k-times larger batch. Dropout is keyed by fold_in(rng, step).
  `config` needs `grad_accum_steps` and `label_smoothing` (the training config, or any object with
  them); `state` is {step, params, opt_state, rng}."""
  accum = config.grad_accum_steps

  def grads_of(params, micro, rng):
    f = lambda p: token_loss(model, p, micro, dropout_rng=rng,  # noqa: E731
                             label_smoothing=config.label_smoothing)  # dropout on
    (total, count), grads = jax.value_and_grad(f, has_aux=True)(params)
    return total, count, grads

  def train_step(state, batch):
    rng = jax.random.fold_in(state["rng"], state["step"])
    if accum == 1:
      total, count, grads = grads_of(state["params"], batch, rng)
    else:  # [b, ...] -> [accum, b / accum, ...], scanned
      micro = jax.tree_util.tree_map(lambda x: x.reshape(accum, -1, *x.shape[1:]), batch)
      zeros = jax.tree_util.tree_map(jnp.zeros_like, state["params"])

      def body(carry, xs):
        i, mb = xs
        t, c, g = grads_of(state["params"], mb, jax.random.fold_in(rng, i))
        return (carry[0] + t, carry[1] + c, jax.tree_util.tree_map(jnp.add, carry[2], g)), None
      (total, count, grads), _ = jax.lax.scan(body, (0.0, 0, zeros), (jnp.arange(accum), micro))
    count = jnp.maximum(count, 1)
    grads = jax.tree_util.tree_map(lambda g: g / count, grads)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    new = dict(step=state["step"] + 1, params=params, opt_state=opt_state, rng=state["rng"])
    return new, {"loss": total / count, "grad_norm": optax.global_norm(grads), "tokens": count}
  return train_step
