r"""RoBERTaShare: RoBERTa encoder and decoder with tied weights (Rothe et al. 2020), for pods.

  python -m experiments.train --config=configs/roberta_share.py[:variant] --workdir=DIR

variants:
  default  roberta-base as encoder and decoder, tie_encoder_decoder=True, WikiSplit (hub ids: set
           --config.model.encoder / .decoder / .data.tokenizer to local HF dirs when offline).
  smoke    tiny random RoBERTaShare on MiniLM's WordPiece vocabulary (pad id 0, so RoBERTa's
           padding-offset positions start at 1), a few steps, for tests.
  large_512  the paper's RoBERTa-large shape (24 x 1024, random init from a config dict, no
           checkpoint) at 512 source / 128 target tokens, batch 128: for scripts/plan_memory.py.
"""

from configs import common

TINY_ROBERTA = dict(model_type="roberta", vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=64, max_position_embeddings=130,
                    pad_token_id=0, type_vocab_size=1, layer_norm_eps=1e-5)


ROBERTA_LARGE = dict(model_type="roberta", vocab_size=50265, hidden_size=1024,
                     num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                     max_position_embeddings=514, pad_token_id=1, type_vocab_size=1,
                     layer_norm_eps=1e-5)


def get_config(variant: str = "default"):
  c = common.get_base_config()
  c.model.encoder = c.model.decoder = "roberta-base"
  c.model.tie_encoder_decoder = True
  c.data.tokenizer = "roberta-base"
  c.total_steps = 20_000
  c.batch_size = 128
  c.compute_dtype = "bfloat16"
  c.data.max_source_length = c.data.max_target_length = 128
  c.eval.max_length = 128
  if variant == "default":
    pass
  elif variant == "smoke":
    common.make_smoke(c, TINY_ROBERTA, TINY_ROBERTA)
  elif variant == "large_512":
    c.model.encoder = c.model.decoder = ""
    c.model.encoder_config = dict(ROBERTA_LARGE)
    c.model.decoder_config = dict(ROBERTA_LARGE)
    c.data.max_source_length, c.data.max_target_length = 512, 128
  else:
    raise ValueError(f"unknown variant {variant!r} of configs/roberta_share.py: use default, smoke "
                     "or large_512")
  return c
