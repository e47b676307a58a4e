"""Training-step benchmark: edjax vs transformers PyTorch on the same MiniLM bert2bert and batch.

  .venv/bin/python -m scripts.bench_train [--batch 16 --src_len 64 --tgt_len 48 --steps 5]

(run from the repository root: `-m` puts it on sys.path, for `configs`).

Both run AdamW (lr 5e-5, weight decay 0.01, clipping 1.0) with dropout on, one step per batch,
fp32 (edjax: --dtype bfloat16 for mixed precision). Prints step time (median of --steps after
warm-up), tokens/s, achieved GFLOP/s from an analytic FLOP count (3 x forward matmul FLOPs), the
fraction of this machine's jit fp32 matmul peak (measured here on a 2048^3 matmul), and the
edjax / PyTorch ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
  import jax
  import jax.numpy as jnp
  x = jnp.asarray(np.random.RandomState(0).randn(n, n).astype(np.float32))
  f = jax.jit(lambda a: a @ a)
  f(x).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    f(x).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2 * n ** 3 / best / 1e9


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--src_len", type=int, default=64)
  parser.add_argument("--tgt_len", type=int, default=48)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--ablate", action="store_true",
                      help="also time the edjax step with the unfused loss (log_softmax + gather, "
                           "the step before the fused cross-entropy) in the same run")
  args = parser.parse_args()

  import jax
  import jax.numpy as jnp
  import torch
  import transformers

  import edjax
  from edjax.train import flops as flops_lib
  from configs import bert2bert
  from edjax.train import optimizer as opt_lib
  from edjax.train import trainer

  ckpt = bert2bert.get_config().model.encoder
  torch.manual_seed(0)
  hf = transformers.EncoderDecoderModel.from_encoder_decoder_pretrained(ckpt, ckpt)
  hf.config.decoder_start_token_id, hf.config.pad_token_id, hf.config.eos_token_id = 101, 0, 102
  tmp = tempfile.mkdtemp(prefix="edjax-bench-train-")
  hf.save_pretrained(tmp)
  dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
  model, params = edjax.from_pretrained(tmp, dtype=dtype)

  rng = np.random.RandomState(0)
  ids = rng.randint(1000, 29000, (args.batch, args.src_len)).astype(np.int32)
  labels = rng.randint(1000, 29000, (args.batch, args.tgt_len)).astype(np.int32)
  batch = dict(input_ids=ids, attention_mask=np.ones_like(ids), labels=labels,
               decoder_attention_mask=np.ones_like(labels))
  tokens = args.batch * (args.src_len + args.tgt_len)
  flops = flops_lib.train_step_flops(model.config, args.batch, args.src_len, args.tgt_len)
  peak = matmul_peak_gflops()
  print(f"# train step: MiniLM bert2bert, batch {args.batch} x ({args.src_len} in, {args.tgt_len} "
        f"out), AdamW, {args.dtype}; {flops / 1e9:.1f} GFLOP per step; jit fp32 matmul peak "
        f"{peak:.0f} GFLOP/s; {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}")

  # edjax: the trainer's own train step, jitted with the state donated.
  config = bert2bert.get_config()
  optimizer = opt_lib.make_optimizer(config.optimizer, 1000)
  jbatch = {k: jnp.asarray(v) for k, v in batch.items()}

  def time_edjax_step():
    step_fn = jax.jit(trainer.make_train_step(model, optimizer, config), donate_argnums=(0,))
    state = dict(step=jnp.array(0, jnp.int32), params=jax.tree_util.tree_map(jnp.copy, params),
                 opt_state=optimizer.init(params), rng=jax.random.PRNGKey(0))
    t0 = time.perf_counter()
    state, m = step_fn(state, jbatch)
    jax.block_until_ready(m)
    first = time.perf_counter() - t0
    times = []
    for _ in range(args.steps):
      t0 = time.perf_counter()
      state, m = step_fn(state, jbatch)
      jax.block_until_ready(m)
      times.append(time.perf_counter() - t0)
    return first, statistics.median(times)
  first, ours = time_edjax_step()
  unfused = None
  if args.ablate:  # the loss as it was: losses.seq2seq_loss (log_softmax tensor + gather)
    from edjax import losses
    from edjax.train import loss as loss_lib
    fused = loss_lib.summed_token_loss
    loss_lib.summed_token_loss = lambda logits, labels, smoothing=0.0: losses.seq2seq_loss(
        logits, labels, smoothing, return_count=True)
    _, unfused = time_edjax_step()
    loss_lib.summed_token_loss = fused

  # transformers PyTorch: the same weights, batch and optimizer.
  hf.train()
  opt = torch.optim.AdamW(hf.parameters(), lr=5e-5, weight_decay=0.01)
  tb = {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}

  def torch_step():
    out = hf(input_ids=tb["input_ids"], attention_mask=tb["attention_mask"], labels=tb["labels"],
             decoder_attention_mask=tb["decoder_attention_mask"])
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
  torch_step()
  ttimes = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    torch_step()
    ttimes.append(time.perf_counter() - t0)
  theirs = statistics.median(ttimes)

  print("\n| framework | step (s) | tokens/s | GFLOP/s | % of matmul peak | speed-up |")
  print("|---|---:|---:|---:|---:|---:|")
  for name, t in ((f"edjax ({args.dtype}, jit, donated)", ours), ("transformers PyTorch (fp32)", theirs)):
    print(f"| {name} | {t:.3f} | {tokens / t:,.0f} | {flops / t / 1e9:.1f} | "
          f"{100 * flops / t / 1e9 / peak:.0f}% | {theirs / t:.2f}x |")
  print(f"\nedjax first step (trace + compile + run): {first:.1f}s")
  if unfused is not None:
    print(f"edjax with the unfused loss (log_softmax + gather): {unfused:.3f} s/step "
          f"({theirs / unfused:.2f}x PyTorch); fused: {ours:.3f} s/step")


if __name__ == "__main__":
  main()
