"""Accelerator benchmark (issue #14 item 5): bf16 train-step MFU and beam search vs transformers.

  bash scripts/bench_device.sh          # on a GPU / TPU host: the shapes below, one table
  bash scripts/bench_device.sh --cpu    # tiny shapes on the CPU: the same code end to end (tested)

Rows (device run):
- train: one bf16 training step (fp32 params, AdamW + clipping, dropout on: the trainer's own
  `edjax.train.step.make_train_step`, jitted, state donated) of a BERT-base-shaped bert2bert
  (12 x 768 both sides) at 512 -> 128 tokens and of a RoBERTa-large-shaped roberta2roberta
  (24 x 1024) at 512 -> 128; every row full (no padding: what packing approaches). MFU = the
  analytic FLOPs of `edjax.train.flops` x steps/s over the device's bf16 peak (`PEAK_FLOPS`).
- generate: beam search, batch 8 and 64 x 4 beams, 128 input tokens -> 64 new tokens (forced by
  min_length = max_length), fp32, on a random-init BERT-base bert2bert made by transformers and
  loaded by edjax from the same files; edjax (jit) vs transformers PyTorch (CUDA), warm medians.
  Both compute true fp32 (`jax_default_matmul_precision=highest`, torch TF32 off). Random weights
  give near-flat logits, so "same sequences" can fail on near ties; it is reported, not required.

Needs only what the lent H200's image has (jax, flax, optax, torch, transformers, safetensors):
no ml-collections, TensorFlow or clu (nothing of the trainer's data / logging stack is imported).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

os.environ.setdefault("USE_TF", "0")

from edjax.testing.timing import timed  # noqa: E402  (imports jax: after the env)

# Layer shapes: HF config.json fields (random init; no checkpoint is read).
BERT_BASE = dict(model_type="bert", vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                 num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512)
ROBERTA_LARGE = dict(model_type="roberta", vocab_size=50265, hidden_size=1024,
                     num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                     max_position_embeddings=514, pad_token_id=1, bos_token_id=0,
                     eos_token_id=2, type_vocab_size=1, layer_norm_eps=1e-5)
TINY_BERT = dict(model_type="bert", vocab_size=1000, hidden_size=64, num_hidden_layers=2,
                 num_attention_heads=4, intermediate_size=128, max_position_embeddings=128)

# (name, layer shape, batch, source length, target length) per mode.
TRAIN_ROWS = {
    "device": [("bert2bert BERT-base 12x768", BERT_BASE, 64, 512, 128),
               ("roberta2roberta RoBERTa-large 24x1024", ROBERTA_LARGE, 32, 512, 128)],
    "cpu": [("bert2bert tiny 2x64", TINY_BERT, 4, 64, 32)],
}
# (batch, beams, source length, new tokens) per mode.
GENERATE_ROWS = {"device": [(8, 4, 128, 64), (64, 4, 128, 64)], "cpu": [(2, 4, 32, 8)]}
GENERATE_SHAPE = {"device": BERT_BASE, "cpu": TINY_BERT}


class _Options(dict):
  """A dict read like a ConfigDict (`opt.learning_rate`, `opt.get("name")`)."""
  __getattr__ = dict.__getitem__


def encoder_decoder_config(shape: dict):
  """The edjax EncoderDecoderConfig of two `shape` stacks (`join_configs` makes the decoder causal
  with cross-attention); start / eos / pad ids are the family's (BERT: [CLS] 101, [SEP] 102, 0)."""
  from edjax.model_configs import config_from_dict, join_configs
  part = config_from_dict(shape)
  start = 101 if part.bos_token_id is None else part.bos_token_id
  eos = 102 if part.eos_token_id is None else part.eos_token_id
  return join_configs(part, part, decoder_start_token_id=start, eos_token_id=eos,
                      pad_token_id=part.pad_token_id)


def train_row(name: str, shape: dict, batch: int, src: int, tgt: int, steps: int) -> dict:
  """Times `steps` bf16 train steps after a compile step; MFU where the device's peak is known."""
  import jax
  import jax.numpy as jnp

  import edjax
  from edjax.models.encoder_decoder import model_for_config
  from edjax.train import flops as flops_lib
  from edjax.train import optimizer as opt_lib
  from edjax.train.step import make_train_step

  model, params = edjax.from_config(encoder_decoder_config(shape), rng=0)
  model = model_for_config(model.config, dtype=jnp.bfloat16)  # fp32 params, bf16 compute
  optimizer = opt_lib.make_optimizer(
      _Options(name="adamw", learning_rate=1e-4, warmup_steps=0, decay="constant",
               max_grad_norm=1.0, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01), 1000)
  state = dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
               rng=jax.random.PRNGKey(0))
  step = jax.jit(make_train_step(model, optimizer, _Options(grad_accum_steps=1,
                                                            label_smoothing=0.0)),
                 donate_argnums=(0,))
  rng = np.random.default_rng(0)
  low, high = min(1000, shape["vocab_size"] // 2), shape["vocab_size"] - 1  # no special ids
  data = dict(input_ids=rng.integers(low, high, (batch, src)).astype(np.int32),
              attention_mask=np.ones((batch, src), np.int32),
              labels=rng.integers(low, high, (batch, tgt)).astype(np.int32),
              decoder_attention_mask=np.ones((batch, tgt), np.int32))
  data = jax.device_put(data)
  t0 = time.perf_counter()
  state, metrics = step(state, data)
  float(metrics["loss"])
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(steps):
    state, metrics = step(state, data)
  loss = float(metrics["loss"])  # waits for the last step
  step_s = (time.perf_counter() - t0) / steps
  flops = flops_lib.train_step_flops(model.config, batch, src, tgt)
  peak = flops_lib.peak_flops(jax.devices()[0].device_kind, "bfloat16")
  mfu = flops_lib.mfu(flops, 1.0 / step_s, jax.device_count(), peak)
  return dict(name=name, batch=batch, src=src, tgt=tgt, compile_s=compile_s, step_s=step_s,
              tokens_per_s=batch * (src + tgt) / step_s, tflops=flops / step_s / 1e12, mfu=mfu,
              loss=loss)


def generate_rows(shape: dict, rows, repeats: int, device: str) -> list[dict]:
  """Beam search on the same random-init bert2bert in edjax and transformers PyTorch."""
  import jax
  import torch
  import transformers

  import edjax

  jax.config.update("jax_default_matmul_precision", "highest")
  torch.backends.cuda.matmul.allow_tf32 = False
  torch.backends.cudnn.allow_tf32 = False
  torch.manual_seed(0)
  cfg = encoder_decoder_config(shape).to_dict()  # HF's EncoderDecoderConfig dict
  hf_cfg = transformers.EncoderDecoderConfig.from_dict(cfg)
  hf = transformers.EncoderDecoderModel(config=hf_cfg).eval()
  with tempfile.TemporaryDirectory(prefix="edjax-bench-device-") as tmp:
    hf.save_pretrained(tmp)
    model, params = edjax.from_pretrained(tmp)
  hf = hf.to(device)
  out = []
  for batch, beams, src, new in rows:
    ids = np.random.default_rng(batch).integers(min(1000, shape["vocab_size"] // 2),
                                                shape["vocab_size"] - 1, (batch, src)).astype(np.int32)
    mask = np.ones_like(ids)
    gen = dict(num_beams=beams, max_length=new + 1, min_length=new + 1,
               decoder_start_token_id=cfg["decoder_start_token_id"],
               eos_token_id=cfg["eos_token_id"], pad_token_id=cfg["pad_token_id"])
    def run_edjax(ids=ids, mask=mask, gen=gen):
      return np.asarray(edjax.generate(model, params, ids, mask, **gen).sequences)
    ours, ours_first, ours_warm = timed(run_edjax, repeats)

    def run_torch(ids=ids, mask=mask, gen=gen):
      with torch.no_grad():
        seqs = hf.generate(input_ids=torch.tensor(ids, dtype=torch.long, device=device),
                           attention_mask=torch.tensor(mask, dtype=torch.long, device=device),
                           **gen)
      return seqs.cpu().numpy()
    theirs, torch_first, torch_warm = timed(run_torch, repeats)
    same = ours.shape[0] == theirs.shape[0] and np.array_equal(ours[:, :theirs.shape[1]], theirs)
    out.append(dict(batch=batch, beams=beams, src=src, new=new, edjax_first=ours_first,
                    edjax_s=ours_warm, torch_first=torch_first, torch_s=torch_warm,
                    speedup=torch_warm / ours_warm, same=same))
  return out


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--cpu", action="store_true",
                      help="tiny shapes on the CPU (checks the script; no figures to record)")
  parser.add_argument("--steps", type=int, default=10, help="timed train steps per row")
  parser.add_argument("--repeats", type=int, default=3, help="timed generate calls per row")
  parser.add_argument("--skip_generate", action="store_true")
  args = parser.parse_args(argv)
  mode = "cpu" if args.cpu else "device"
  import jax
  if args.cpu:  # before any backend starts (the env variable is read when jax is imported)
    jax.config.update("jax_platforms", "cpu")
  import torch

  device = "cpu" if args.cpu or not torch.cuda.is_available() else "cuda"
  print(f"# bench_device ({mode}): jax {jax.__version__} on {jax.devices()[0].device_kind} x "
        f"{jax.device_count()}; torch {torch.__version__} on {device}"
        + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else ""))

  print("\n| train step (bf16 compute, fp32 params, AdamW) | batch | in -> out | compile (s) | "
        "step (ms) | tokens/s | TFLOP/s | MFU |")
  print("|---|---:|---|---:|---:|---:|---:|---:|")
  for row in TRAIN_ROWS[mode]:
    r = train_row(*row, steps=max(args.steps if not args.cpu else 2, 1))
    mfu = "n/a (no peak for this device)" if r["mfu"] is None else f"{100 * r['mfu']:.1f} %"
    print(f"| {r['name']} | {r['batch']} | {r['src']} -> {r['tgt']} | {r['compile_s']:.1f} | "
          f"{1000 * r['step_s']:.1f} | {r['tokens_per_s']:,.0f} | {r['tflops']:.2f} | {mfu} |",
          flush=True)

  if args.skip_generate:
    return
  print("\n| beam search (fp32) | edjax first (s) | edjax warm (s) | transformers PyTorch warm (s) "
        "| speed-up | same sequences |")
  print("|---|---:|---:|---:|---:|---|")
  for r in generate_rows(GENERATE_SHAPE[mode], GENERATE_ROWS[mode],
                         1 if args.cpu else args.repeats, device):
    print(f"| batch {r['batch']} x {r['beams']} beams, {r['src']} -> {r['new']} | "
          f"{r['edjax_first']:.2f} | {r['edjax_s']:.3f} | {r['torch_s']:.3f} | "
          f"{r['speedup']:.2f}x | {r['same']} |", flush=True)


if __name__ == "__main__":
  main()
