"""Shared defaults of every training config (flat, big_vision style)."""

from __future__ import annotations

import ml_collections

import edjax.data
from edjax.resources import minilm_dir
from edjax.train.partitioning import DEFAULT_RULES


def get_base_config() -> ml_collections.ConfigDict:
  """Defaults: AdamW 5e-5 with warmup + linear decay, fp32, one data-parallel mesh."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 1000
  c.log_every_steps = 50
  c.checkpoint_every_steps = 500
  c.eval_every_steps = 500
  c.batch_size = 32  # global, across hosts and micro-batches
  c.grad_accum_steps = 1  # micro-batches per step (batch_size must divide)
  c.label_smoothing = 0.0
  c.compute_dtype = "float32"  # or "bfloat16" (params and optimizer state stay fp32)
  c.distributed = False  # jax.distributed.initialize() (pods / multi-GPU)
  c.init_from = ""  # HF-format dir, edjax export, or another run's workdir to start from
  c.export_hf = True  # at the end: save_pretrained(...) into workdir/export (HF format)
  # Workdir safety (edjax.train.workdir): a workdir whose checkpoints do not fit this config is an
  # error; True moves that old run into workdir/replaced-<time>/ and starts afresh.
  c.overwrite_workdir = False
  c.resume_step = 0  # > 0: resume from this saved step (e.g. the last healthy one), not the newest
  c.divergence_factor = 10.0  # a step's loss over this x the recent median is not healthy
  # Preemption (edjax.train.preemption): SIGTERM / SIGINT / an orbax preemption sync point save at
  # the current step and exit 143 / 130; processes agree on that step every N steps.
  c.checkpoint_every_minutes = 0.0  # > 0: also save when this long has passed since the last save
  c.preemption_check_every_steps = 1
  # Test hook: after step at_step (0 = off) process `process` (-1 = all) sends itself `signal`.
  c.test_signal = ml_collections.ConfigDict(dict(at_step=0, signal="SIGTERM", process=-1))

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.logical_axis_rules = tuple(DEFAULT_RULES)

  c.optimizer = ml_collections.ConfigDict(dict(
      learning_rate=5e-5, warmup_steps=100, decay="linear", weight_decay=0.01, b1=0.9,
      b2=0.999, eps=1e-8, max_grad_norm=1.0,
      name="adamw"))  # or 'adafactor' (edjax.train.optimizer)
  c.freeze = ()  # regexes of '/'-joined param paths held fixed, e.g. ('encoder/.*',)
  c.profile_steps = ()  # (start, stop): a jax.profiler trace of those steps in workdir/profile
  c.peak_flops = 0.0  # device peak FLOP/s for train/mfu; 0 = edjax.train.flops's table
  c.checkpoint = ml_collections.ConfigDict(dict(max_to_keep=3, async_save=True))

  c.model = ml_collections.ConfigDict(dict(
      encoder="",  # HF-format dir (or hub id when online) of the encoder checkpoint
      decoder="",  # ... of the decoder checkpoint
      tie_encoder_decoder=False,
      random_init=False,  # same architecture as the checkpoints, random weights
      encoder_config=ml_collections.ConfigDict(),  # full HF config dict: model without checkpoint
      decoder_config=ml_collections.ConfigDict(),
      encoder_overrides=ml_collections.ConfigDict(),  # e.g. hidden_dropout_prob
      decoder_overrides=ml_collections.ConfigDict(),
      # How both parts run (edjax.model_configs.RUNTIME_FIELDS): the numbers are the same.
      scan_layers=False,  # layers under nn.scan: params [layers, ...], faster compiles
      remat="none",  # 'full' or a jax.checkpoint_policies name: recompute in the backward pass
      attention_impl="einsum",
  ))
  # The dataset's own defaults (one layer: edjax.data declares them), plus the tokenizers and the
  # tsv keys so `--config.data.name=tsv --config.data.tsv_train=...` works on any recipe.
  c.data = edjax.data.get_config("wiki_split")
  c.data.update(dict(tokenizer="", decoder_tokenizer="", tsv_train="", tsv_eval=""))
  c.eval = ml_collections.ConfigDict(dict(
      batch_size=32, num_generate=200, num_beams=4, max_length=64, min_length=0,
      length_penalty=1.0, no_repeat_ngram_size=0, early_stopping=True,
      metrics=("sari", "bleu", "rouge", "exact_match")))
  return c


def make_smoke(c: ml_collections.ConfigDict, encoder_config: dict, decoder_config: dict,
               total_steps: int = 4) -> ml_collections.ConfigDict:
  """Turns `c` into a seconds-long CPU run of a tiny random model on MiniLM's vocabulary."""
  c.model.encoder = c.model.decoder = ""
  c.model.encoder_config = dict(encoder_config)
  c.model.decoder_config = dict(decoder_config)
  c.data.tokenizer, c.data.decoder_tokenizer = minilm_dir(), ""
  c.compute_dtype = "float32"
  c.total_steps, c.batch_size = total_steps, 4
  c.log_every_steps = 2
  c.checkpoint_every_steps = c.eval_every_steps = total_steps
  c.optimizer.warmup_steps, c.optimizer.learning_rate = 1, 1e-3
  c.data.max_source_length = c.data.max_target_length = 24
  c.data.eval_examples = 8
  c.eval.update(dict(batch_size=8, num_generate=4, num_beams=2, max_length=12))
  c.checkpoint.async_save = False
  return c


def rendered_ocr_recipe(c: ml_collections.ConfigDict, encoder_config: dict,
                        decoder: str) -> ml_collections.ConfigDict:
  """The offline text-line OCR recipe (configs/trocr.py, configs/swin_bert.py): a random image
  encoder of `encoder_config` joined to the warm-started decoder checkpoint `decoder` (MiniLM),
  on 32 x 128 rendered WikiSplit lines with character targets, 800 steps x 32, greedy CER eval."""
  c.model.encoder = ""
  c.model.encoder_config = dict(encoder_config)
  c.model.decoder = decoder
  c.data.tokenizer = decoder
  c.data.update(dict(name="rendered_ocr", num_train=50_000, eval_examples=500, image_height=32,
                     image_width=128, max_words=4, max_chars=24, max_target_length=26,
                     render_seed=0, image_processor="", target_units="characters"))
  c.total_steps = 800
  c.batch_size = 32
  c.log_every_steps = 50
  c.checkpoint_every_steps = 400
  c.eval_every_steps = 400
  c.optimizer.learning_rate = 5e-4
  c.optimizer.warmup_steps = 100
  c.eval.update(dict(batch_size=100, num_generate=500, num_beams=1, max_length=28,
                     metrics=("cer", "wer", "exact_match", "bleu")))
  return c


def rendered_ocr_smoke(c: ml_collections.ConfigDict, encoder_config: dict,
                       decoder_config: dict) -> ml_collections.ConfigDict:
  """`rendered_ocr_recipe` shrunk to a seconds-long CPU run of tiny random models."""
  make_smoke(c, encoder_config, decoder_config, total_steps=6)
  c.data.update(dict(num_train=64, eval_examples=8, max_target_length=26))
  c.eval.update(dict(batch_size=8, num_generate=8, num_beams=2, max_length=12,
                     metrics=("cer", "wer", "exact_match")))
  c.checkpoint_every_steps = 3
  return c
