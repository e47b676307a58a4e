"""Prints the edjax <-> transformers (PyTorch) parity table (markdown) for the README.

Runs the same comparisons as tests/test_parity.py (shared logic: edjax/testing/parity_cases.py): tiny
random HF EncoderDecoderModels for every {bert, roberta} -> {bert, roberta, gpt2} pair, with and
without enc_to_dec_proj, plus tied bert2bert / roberta2roberta; seeded right-padded batches;
max |diff| over non-padded positions.

  JAX_PLATFORMS=cpu USE_TF=0 python scripts/parity_table.py [--details]
"""

from __future__ import annotations

import argparse
import sys

from edjax.testing import parity_cases as pc


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--details", action="store_true",
                      help="also print decoder hidden / attention diffs per case")
  args = parser.parse_args(argv)
  import transformers
  import edjax  # noqa: F401
  import jax
  import torch
  print(f"transformers {transformers.__version__}, torch {torch.__version__}, "
        f"jax {jax.__version__} ({jax.default_backend()}); fp32; tolerances: logits / hidden "
        f"{pc.LOGITS_TOL:g}, loss {pc.LOSS_TOL:g}\n")
  print(pc.markdown_table())
  failed = []
  for case in pc.CASES:
    d = pc.compare(case)
    if args.details:
      print(f"{case.id}: decoder hidden {max(d.decoder_hidden):.2e}, self-attn "
            f"{max(d.decoder_attentions):.2e}, cross-attn {max(d.cross_attentions):.2e}, "
            f"labels-only logits {d.labels_only_logits:.2e}, left-padded logits "
            f"{d.left_padded_logits:.2e}", file=sys.stderr)
    if (d.logits > pc.LOGITS_TOL or d.encoder_hidden_max > pc.HIDDEN_TOL
        or d.loss > pc.LOSS_TOL):
      failed.append(case.id)
  if failed:
    print(f"\nOUT OF TOLERANCE: {', '.join(failed)}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
