"""Training-step benchmark: edjax vs transformers PyTorch on the same MiniLM bert2bert and batch.

  .venv/bin/python -m scripts.bench_train [--batch 16 --src_len 64 --tgt_len 48 --steps 5]

(run from the repository root: `-m` puts it on sys.path, for `configs`).

Both run AdamW (lr 5e-5, weight decay 0.01, clipping 1.0) with dropout on, one step per batch,
fp32 (edjax: --dtype bfloat16 for mixed precision). The frameworks' steps alternate (edjax,
PyTorch, edjax, ...: `edjax.testing.timing.timed_interleaved`) so a drift in the machine's speed
reaches both alike. Prints step time (median of --steps after warm-up), tokens/s, achieved
GFLOP/s from an analytic FLOP count (3 x forward matmul FLOPs), the fraction of this machine's
jit fp32 matmul peak (measured here on a 2048^3 matmul), and the edjax / PyTorch ratio.

--data wiki_split (issue #14 item 4) times real WikiSplit batches instead of random full rows:
the same `--batch` padded examples through edjax and PyTorch (which pads), and edjax on
`--batch` packed rows (`edjax.data.packing`, the trainer's `data.pack=True`), reporting real
(non-pad) tokens/s and examples/s: packing changes the work per token, not the step.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

from edjax.testing.timing import timed_interleaved  # noqa: E402


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
  parser.add_argument("--data", default="random", choices=["random", "wiki_split"],
                      help="random: full rows of random ids (no padding); wiki_split: real "
                           "examples, padded vs packed (real tokens/s)")
  parser.add_argument("--examples_per_row", type=int, default=0,
                      help="--data wiki_split: examples per packed row (0: the trainer's auto rule)")
  parser.add_argument("--ablate", action="store_true",
                      help="also time the edjax step with the unfused loss (log_softmax + gather, "
                           "the step before the fused cross-entropy) and with threefry dropout "
                           "masks (before edjax.models.dropout's hashed masks) in the same run")
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

  config = bert2bert.get_config()
  optimizer = opt_lib.make_optimizer(config.optimizer, 1000)
  flops = flops_lib.train_step_flops(model.config, args.batch, args.src_len, args.tgt_len)
  peak = matmul_peak_gflops()
  print(f"# train step: MiniLM bert2bert, batch {args.batch} x ({args.src_len} in, {args.tgt_len} "
        f"out), AdamW, {args.dtype}; {flops / 1e9:.1f} GFLOP per step; jit fp32 matmul peak "
        f"{peak:.0f} GFLOP/s; {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}")

  def edjax_step_fn(batch):
    """One call = one of the trainer's own steps (jitted, state donated), blocking."""
    jbatch = {k: jnp.asarray(v) for k, v in batch.items()}
    step_fn = jax.jit(trainer.make_train_step(model, optimizer, config), donate_argnums=(0,))
    state = dict(step=jnp.array(0, jnp.int32), params=jax.tree_util.tree_map(jnp.copy, params),
                 opt_state=optimizer.init(params), rng=jax.random.PRNGKey(0))

    def one_step():
      nonlocal state
      state, m = step_fn(state, jbatch)
      return jax.block_until_ready(m)
    return one_step

  # transformers PyTorch: the same weights, batch and optimizer (labels -100 on padding).
  hf.train()
  opt = torch.optim.AdamW(hf.parameters(), lr=5e-5, weight_decay=0.01)

  def torch_step_fn(batch):
    """One call = one PyTorch training step (forward, backward, clipping, AdamW)."""
    tb = {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}

    def torch_step():
      out = hf(input_ids=tb["input_ids"], attention_mask=tb["attention_mask"],
               labels=tb["labels"], decoder_attention_mask=tb["decoder_attention_mask"])
      out.loss.backward()
      torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
      opt.step()
      opt.zero_grad(set_to_none=True)
    return torch_step

  if args.data == "wiki_split":
    real_data_report(args, ckpt, edjax_step_fn, torch_step_fn)
    return

  rng = np.random.RandomState(0)
  ids = rng.randint(1000, 29000, (args.batch, args.src_len)).astype(np.int32)
  labels = rng.randint(1000, 29000, (args.batch, args.tgt_len)).astype(np.int32)
  batch = dict(input_ids=ids, attention_mask=np.ones_like(ids), labels=labels,
               decoder_attention_mask=np.ones_like(labels))
  tokens = args.batch * (args.src_len + args.tgt_len)
  steps = {"edjax": edjax_step_fn(batch), "torch": torch_step_fn(batch)}
  if args.ablate:  # the loss as it was: losses.seq2seq_loss (log_softmax tensor + gather)
    from edjax import losses
    from edjax.models import dropout as dropout_lib
    from edjax.train import loss as loss_lib
    fused = loss_lib.summed_token_loss
    loss_lib.summed_token_loss = lambda logits, labels, smoothing=0.0: losses.seq2seq_loss(
        logits, labels, smoothing, return_count=True)
    unfused_step = edjax_step_fn(batch)
    unfused_step()  # traced (and compiled) with the switch on
    loss_lib.summed_token_loss = fused
    dropout_lib.HASHED_MASKS = False  # flax's masks: jax.random.bernoulli (threefry) per element
    threefry_step = edjax_step_fn(batch)
    threefry_step()
    dropout_lib.HASHED_MASKS = True
    steps.update(unfused=unfused_step, threefry=threefry_step)
  timings = timed_interleaved(steps, args.steps)  # steps alternate: edjax, torch, (ablations)
  first, ours = timings["edjax"][1:]
  theirs = timings["torch"][2]
  unfused = timings["unfused"][2] if args.ablate else None
  threefry = timings["threefry"][2] if args.ablate else None
  print("\n| framework | step (s) | tokens/s | GFLOP/s | % of matmul peak | speed-up |")
  print("|---|---:|---:|---:|---:|---:|")
  for name, t in ((f"edjax ({args.dtype}, jit, donated)", ours), ("transformers PyTorch (fp32)", theirs)):
    print(f"| {name} | {t:.3f} | {tokens / t:,.0f} | {flops / t / 1e9:.1f} | "
          f"{100 * flops / t / 1e9 / peak:.0f}% | {theirs / t:.2f}x |")
  print(f"\nedjax first step (trace + compile + run): {first:.1f}s")
  if unfused is not None:
    print(f"edjax with the unfused loss (log_softmax + gather): {unfused:.3f} s/step "
          f"({theirs / unfused:.2f}x PyTorch); fused: {ours:.3f} s/step")
    print(f"edjax with threefry dropout masks (jax.random.bernoulli, as flax's Dropout): "
          f"{threefry:.3f} s/step ({theirs / threefry:.2f}x PyTorch); hashed masks: {ours:.3f} s/step")


def wiki_split_batches(tokenizer_dir: str, batch: int, src_len: int, tgt_len: int,
                       examples_per_row: int = 0, examples: int = 4000):
  """WikiSplit `tune` batches for the real-data table: a dict of
  padded: `batch` examples of a seed-0 permutation padded to (src_len, tgt_len), the trainer's
    unpacked batch;
  longest: the same examples padded to the batch's longest source and target (what HF's
    collators give PyTorch, whose eager step takes any shape);
  packed: `batch` rows first-fit packed from the permutation's next window (the trainer's packer,
    `data.pack=True`; examples_per_row 0 = its auto rule);
  and the examples each holds and the examples per row."""
  from edjax.data import packing, pipeline, wiki_split
  from edjax.processing.tokenizers import Tokenizer

  tok = Tokenizer.from_dir(tokenizer_dir)
  pairs = [(s, wiki_split.target_text(t)) for s, t in wiki_split.read_wiki_split("tune")[:examples]]
  data = pipeline.tokenize(pipeline.chunks(pairs), tok, tok, src_len, tgt_len)
  order = np.random.RandomState(0).permutation(len(data))
  padded = data.rows(order[:batch])
  src_max = int(padded["attention_mask"].sum(1).max())
  tgt_max = int(padded["decoder_attention_mask"].sum(1).max())
  longest = {k: v[:, :src_max] if k in ("input_ids", "attention_mask") else v[:, :tgt_max]
             for k, v in padded.items()}
  per_row = examples_per_row or packing.auto_examples_per_row(data.source_len, data.target_len,
                                                              src_len, tgt_len)
  window = order[batch:batch + batch * per_row]
  packed, dropped = packing.pack_rows(data.source_ids[window], data.source_len[window],
                                      data.target_ids[window], data.target_len[window], batch,
                                      tok.pad_id)
  return dict(padded=padded, longest=longest, packed=packed, padded_examples=batch,
              packed_examples=len(window) - dropped, per_row=per_row)


def real_data_report(args, tokenizer_dir: str, edjax_step_fn, torch_step_fn) -> None:
  """Issue #14 item 4: real (non-pad) tokens/s and examples/s on WikiSplit for edjax padded and
  packed and PyTorch padded to max length and to the longest, one table (ratios vs PyTorch's
  faster row)."""
  b = wiki_split_batches(tokenizer_dir, args.batch, args.src_len, args.tgt_len,
                         args.examples_per_row)
  runs = (("edjax, padded to max length", "padded", edjax_step_fn),
          (f"edjax, packed ({b['per_row']} examples / row)", "packed", edjax_step_fn),
          ("transformers PyTorch, padded to max length", "padded", torch_step_fn),
          ("transformers PyTorch, padded to the batch's longest", "longest", torch_step_fn))
  timings = timed_interleaved({name: make(b[key]) for name, key, make in runs}, args.steps)
  rows = []
  for name, key, _ in runs:
    batch = b[key]
    t = timings[name][2]
    real = int(batch["attention_mask"].sum() + batch["decoder_attention_mask"].sum())
    shape = f"{batch['input_ids'].shape[1]} / {batch['labels'].shape[1]}"
    examples = b["packed_examples"] if key == "packed" else b["padded_examples"]
    rows.append((name, shape, t, real, examples))
  base = max(real / t for name, _, t, real, _ in rows if "PyTorch" in name)
  print(f"\nWikiSplit tune, {args.batch} rows, max ({args.src_len} in, {args.tgt_len} out), "
        f"{args.dtype} edjax:")
  print("\n| run | in / out width | step (s) | examples | real tokens (fill) | real tokens/s | "
        "examples/s | vs PyTorch's best |")
  print("|---|---|---:|---:|---:|---:|---:|---:|")
  for name, shape, t, real, examples in rows:
    slots = args.batch * sum(int(w) for w in shape.split(" / "))
    print(f"| {name} | {shape} | {t:.3f} | {examples} | {real} ({100 * real / slots:.0f}%) | "
          f"{real / t:,.0f} | {examples / t:.1f} | {real / t / base:.2f}x |")


if __name__ == "__main__":
  main()
