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
    minilm = common.minilm_dir()
    c.model.encoder = c.model.decoder = ""
    c.data.tokenizer, c.data.decoder_tokenizer = minilm, ""
    c.model.encoder_config = dict(TINY_BERT)
    c.model.decoder_config = dict(TINY_GPT2)  # 48 wide: the composite adds enc_to_dec_proj
    c.compute_dtype = "float32"
    c.total_steps, c.batch_size = 4, 4
    c.log_every_steps, c.checkpoint_every_steps, c.eval_every_steps = 2, 4, 4
    c.optimizer.warmup_steps, c.optimizer.learning_rate = 1, 1e-3
    c.data.max_source_length = c.data.max_target_length = 24
    c.data.eval_examples = 8
    c.eval.update(dict(batch_size=8, num_generate=4, num_beams=2, max_length=12))
    c.checkpoint.async_save = False
  else:
    raise ValueError(f"unknown variant {variant!r} of configs/bert2gpt2.py: use default or smoke")
  return c
