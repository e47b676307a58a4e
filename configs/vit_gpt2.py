r"""Image captioning: a ViT encoder + a GPT-2 decoder with fresh cross-attention, on COCO captions.

  python -m experiments.train --config=configs/vit_gpt2.py[:variant] --workdir=DIR

variants:
  default  google/vit-base-patch16-224-in21k -> gpt2 on tfds `coco_captions` (the 2014 Karpathy
           splits; tfds downloads and prepares ~20 GB on first use), for pods / GPUs: hub ids
           (set --config.model.encoder / .decoder / .data.tokenizer / .data.image_processor to
           local HF dirs when offline), 224 x 224 inputs, bf16, beam 4, BLEU / ROUGE / CIDEr against all
           five reference captions.
  smoke    a tiny random ViT -> tiny GPT-2 (MiniLM's WordPiece vocabulary, so it runs offline),
           on whatever `coco_captions` tfds finds (tests run it under tfds.testing.mock_data).
"""

from configs import common

TINY_VIT = dict(model_type="vit", image_size=32, patch_size=8, num_channels=3, hidden_size=32,
                num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
TINY_GPT2 = dict(model_type="gpt2", vocab_size=30522, n_embd=48, n_layer=2, n_head=4,
                 n_positions=64, resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)


def get_config(variant: str = "default"):
  c = common.get_base_config()
  c.model.encoder = "google/vit-base-patch16-224-in21k"
  c.model.decoder = "gpt2"
  c.data.tokenizer = "gpt2"
  c.data.update(dict(name="coco_captions", train_splits=("train", "restval"), eval_split="val",
                     eval_examples=1000, max_target_length=32, image_processor="", download=True))
  c.total_steps = 20_000
  c.batch_size = 256
  c.compute_dtype = "bfloat16"
  c.optimizer.learning_rate = 1e-4
  c.optimizer.warmup_steps = 1000
  c.log_every_steps = 100
  c.checkpoint_every_steps = 2000
  c.eval_every_steps = 5000
  c.eval.update(dict(batch_size=64, num_generate=1000, num_beams=4, max_length=32,
                     metrics=("bleu", "rouge", "cider")))
  if variant == "default":
    pass
  elif variant == "smoke":
    common.make_smoke(c, TINY_VIT, TINY_GPT2)  # GPT-2 48 wide: adds enc_to_dec_proj
    c.data.update(dict(train_splits=("train",), eval_split="val", eval_examples=8,
                       max_target_length=16, download=False))
    c.eval.update(dict(metrics=("bleu", "rouge", "cider")))
  else:
    raise ValueError(f"unknown variant {variant!r} of configs/vit_gpt2.py: use default or smoke")
  return c
