r"""BERT encoder + GPT-2 decoder (BERT2GPT in Rothe et al. 2020), for pods.

  python -m experiments.train --config=configs/bert2gpt2.py[:variant] --workdir=DIR

variants:
  default  bert-base-cased -> gpt2 on WikiSplit (hub ids: set --config.model.encoder / .decoder /
           .data.tokenizer / .data.decoder_tokenizer to local HF dirs when offline; an unreachable
           hub id fails with a clear message).
  smoke    tiny random BERT -> tiny GPT-2 (both on MiniLM's WordPiece vocabulary so that it runs
           offline), a few steps, for tests.
"""

from configs import common
from configs.bert2bert import TINY_BERT

TINY_GPT2 = dict(model_type="gpt2", vocab_size=30522, n_embd=48, n_layer=2, n_head=4,
                 n_positions=128, resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)


def get_config(variant: str = "default"):
  c = common.get_base_config()
  c.model.encoder = "bert-base-cased"
  c.model.decoder = "gpt2"
  c.data.tokenizer = "bert-base-cased"
  c.data.decoder_tokenizer = "gpt2"
  c.total_steps = 20_000
  c.batch_size = 128
  c.compute_dtype = "bfloat16"
  c.data.max_source_length = 128
  c.data.max_target_length = 128
  c.eval.max_length = 128
  if variant == "default":
    pass
  elif variant == "smoke":
    common.make_smoke(c, TINY_BERT, TINY_GPT2)  # GPT-2 48 wide: adds enc_to_dec_proj
  else:
    raise ValueError(f"unknown variant {variant!r} of configs/bert2gpt2.py: use default or smoke")
  return c
