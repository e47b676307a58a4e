r"""BertGeneration encoder-decoder pairs (Rothe et al. 2020's own model), and XLM-R2XLM-R.

  python -m experiments.train --config=configs/bertgen2bertgen.py[:variant] --workdir=DIR

The paper's released checkpoints (google/roberta2roberta_L-24_wikisplit,
google/bert2bert_L-24_wmt_de_en, ...) are transformers EncoderDecoderModels whose halves are
`bert-generation` models (BERT layers, no token types, no pooler) with a SentencePiece
`spiece.model`; `Tokenizer.from_dir` reads that file (the encoder's model_type names its ids).

variants:
  default   a small random BertGeneration pair (2 x 128, model_type 'bert-generation') on
            MiniLM's WordPiece vocabulary, WikiSplit tune+validation, eval on test; offline,
            300 steps x 16 on CPU (a few minutes on 2 cores). Random weights at this budget learn
            the data's shape, not to split: it is the recipe's plumbing, not a result.
  smoke     a tiny random BertGeneration pair, a few steps: seconds (tests/test_text_zoo_train.py).
  pod       the paper's WikiSplit model for pods / GPUs: init_from the EncoderDecoder checkpoint
            google/roberta2roberta_L-24_wikisplit (or any local dir of one, e.g. a
            google/bert2bert_L-24_* checkpoint with --config.data.* set for its task), its own
            spiece.model as tokenizer, 128 in / 128 out, batch 128, bf16, beam 4. The optimizer
            is this codebase's AdamW recipe (configs/bert2bert.py:cnn_dailymail: lr 5e-5, warmup,
            linear decay); the paper trained with Adam and an inverse-square-root decay
            (`--config.optimizer.decay=rsqrt`). For summarization set data.name=cnn_dailymail,
            512 in / 128 out and the eval settings of bert2bert.py:cnn_dailymail.
  xlmr2xlmr an XLM-RoBERTa pair warm-started from xlm-roberta-base (its sentencepiece.bpe.model /
            tokenizer.json as tokenizer: <s>=0 <pad>=1 </s>=2 <unk>=3), WikiSplit, for pods.
Hub ids work when the hub is reachable; offline, pass local HF-format directories
(--config.init_from=..., --config.model.encoder=..., --config.data.tokenizer=...).
"""

from configs import common
from edjax.resources import minilm_dir

# BertGeneration halves on MiniLM's vocabulary: pad 0 = [PAD], bos / eos = [CLS] / [SEP].
TINY_BERTGEN = dict(model_type="bert-generation", vocab_size=30522, hidden_size=32,
                    num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                    max_position_embeddings=128, hidden_dropout_prob=0.1,
                    attention_probs_dropout_prob=0.1, pad_token_id=0, bos_token_id=101,
                    eos_token_id=102)
SMALL_BERTGEN = dict(TINY_BERTGEN, hidden_size=128, num_attention_heads=4, intermediate_size=512)


def get_config(variant: str = "default"):
  c = common.get_base_config()
  c.model.encoder = c.model.decoder = ""
  c.model.encoder_config = dict(SMALL_BERTGEN)
  c.model.decoder_config = dict(SMALL_BERTGEN)
  c.data.tokenizer = minilm_dir()
  c.total_steps = 300
  c.batch_size = 16
  c.log_every_steps = 20
  c.checkpoint_every_steps = 100
  c.eval_every_steps = 300
  c.optimizer.learning_rate = 1e-3  # random weights, short budget
  c.optimizer.warmup_steps = 30
  c.data.max_source_length = c.data.max_target_length = 48
  c.data.eval_examples = 100
  c.eval.update(dict(num_generate=50, num_beams=4, max_length=48))

  if variant == "default":
    pass
  elif variant == "smoke":
    common.make_smoke(c, TINY_BERTGEN, TINY_BERTGEN, total_steps=6)
    c.checkpoint_every_steps = 3
  elif variant in ("pod", "xlmr2xlmr"):
    c.model.encoder_config = c.model.decoder_config = {}
    if variant == "pod":
      c.init_from = "google/roberta2roberta_L-24_wikisplit"  # EncoderDecoderModel + spiece.model
      c.data.tokenizer = "google/roberta2roberta_L-24_wikisplit"
    else:
      c.model.encoder = c.model.decoder = "xlm-roberta-base"
      c.data.tokenizer = "xlm-roberta-base"
    c.total_steps = 20_000
    c.batch_size = 128
    c.compute_dtype = "bfloat16"
    c.optimizer.learning_rate = 5e-5
    c.optimizer.warmup_steps = 1000
    c.log_every_steps = 100
    c.checkpoint_every_steps = 2000
    c.eval_every_steps = 5000
    c.data.max_source_length = c.data.max_target_length = 128
    c.data.eval_examples = 1000
    c.eval.update(dict(batch_size=64, num_generate=1000, num_beams=4, max_length=128,
                       length_penalty=1.0, early_stopping=True))
  else:
    raise ValueError(f"unknown variant {variant!r} of configs/bertgen2bertgen.py: use default, "
                     "smoke, pod or xlmr2xlmr")
  return c
