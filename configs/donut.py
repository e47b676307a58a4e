r"""Donut (DonutSwin encoder + MBart decoder) reading printed text lines, prompted by a task token.

  python -m experiments.train --config=configs/donut.py[:variant] --workdir=DIR

Donut's prompt is one task token: HF sets the model's decoder_start_token_id to the task start
token (`<s_cord-v2>`, `<s_docvqa>`, ...), so training shifts the labels right behind it and
generation starts from it. Here the task is plain reading, `<s_ocr>`, played by an unused entry of
MiniLM's WordPiece vocabulary, `TASK_TOKEN` = "[unused1]" (id 2). The trainer takes the decoder
start id from the decoder tokenizer's start token, so the offline variants train with a
*processor directory* (HF's DonutProcessor.save_pretrained layout), written by `processor_dir`
under the user cache: MiniLM's tokenizer files with the task token as an added special token and
as bos_token (the start id; decoding skips it), and a DonutImageProcessor preprocessor_config.json
(aspect-keeping resize + thumbnail into the encoder's canvas, centred zero padding).
data.tokenizer and data.image_processor both name it; the export copies both, so predict.py and
transformers read the same start token and preprocessing.

variants:
  default  offline, a CPU budget (800 steps): a small random DonutSwin (two stages, 4 x 4 patches
           and windows, width 64 -> 128, on a 32 x 128 canvas) + a small random MBart decoder
           (pre-LN, final LayerNorm; MiniLM's 30522-entry vocabulary) on `rendered_ocr` lines
           rendered at 40 x 140 (the processor resizes them to 32 x 112 and pads to 32 x 128),
           targets spelled one WordPiece piece per character; eval: CER / WER.
  smoke    a tiny random DonutSwin -> tiny random MBart, the same task token, a few steps.
  pod      naver-clova-ix/donut-base (hub id or a local VisionEncoderDecoder dir) as init_from,
           DonutImageProcessor at image_size [2560, 1920] (donut-base's own), bf16, batch 64,
           FSDP over 8 devices, on renders of 96 x 768 lines. With init_from the trainer keeps
           the checkpoint's own decoder_start_token_id (and donut-base's tokenizer has no
           `<s_ocr>`): a new task token there needs a trainer key for the start id and an added,
           resized vocabulary entry (README, Configs). scan_layers + remat=full: one step's
           memory plan is in the README (scripts/plan_memory.py).
  pod_shape  pod with donut-base's architecture given by config dicts (random init, nothing read):
           for scripts/plan_memory.py.
"""

from __future__ import annotations

import hashlib
import json
import os

from configs import common
from edjax import fileio
from edjax.processing.images import ImageProcessor
from edjax.resources import minilm_dir

TASK_TOKEN = "[unused1]"  # <s_ocr>: id 2 in MiniLM's vocab.txt
TASK_TOKEN_ID = 2
SPECIAL_IDS = dict(decoder_start_token_id=TASK_TOKEN_ID, bos_token_id=101, eos_token_id=102,
                   pad_token_id=0, forced_eos_token_id=102)  # MiniLM's [CLS] / [SEP] / [PAD]
CANVAS = (32, 128)  # (height, width) of the encoder's input
RENDER = (40, 140)  # rendered_ocr canvas: another aspect, so the processor resizes and pads

SMALL_DONUT_SWIN = dict(model_type="donut-swin", image_size=list(CANVAS), patch_size=4,
                        num_channels=3, embed_dim=64, depths=[2, 2], num_heads=[2, 4],
                        window_size=4, mlp_ratio=4.0, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, drop_path_rate=0.0)
TINY_DONUT_SWIN = dict(SMALL_DONUT_SWIN, embed_dim=16, depths=[1, 1], num_heads=[2, 2])
SMALL_MBART = dict(model_type="mbart", vocab_size=30522, d_model=256, decoder_layers=4,
                   decoder_attention_heads=4, decoder_ffn_dim=1024, max_position_embeddings=64,
                   dropout=0.1, attention_dropout=0.0, activation_dropout=0.0, scale_embedding=True,
                   **SPECIAL_IDS)
TINY_MBART = dict(SMALL_MBART, d_model=32, decoder_layers=2, decoder_ffn_dim=64, dropout=0.0)
# naver-clova-ix/donut-base's architecture (its config.json), for pod_shape and compile reports
DONUT_BASE_SWIN = dict(model_type="donut-swin", image_size=[2560, 1920], patch_size=4,
                       num_channels=3, embed_dim=128, depths=[2, 2, 14, 2],
                       num_heads=[4, 8, 16, 32], window_size=10, mlp_ratio=4.0)
DONUT_BASE_MBART = dict(model_type="mbart", vocab_size=57525, d_model=1024, decoder_layers=4,
                        decoder_attention_heads=16, decoder_ffn_dim=4096,
                        max_position_embeddings=1536, scale_embedding=True, is_decoder=True,
                        add_cross_attention=True, encoder_layers=4)


def cache_root() -> str:
  """$EDJAX_CACHE_DIR, else $XDG_CACHE_HOME/edjax (~/.cache/edjax): where generated files live."""
  env = os.environ.get("EDJAX_CACHE_DIR")
  if env:
    return env
  xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(xdg, "edjax")


def processor_dir(image_size: tuple[int, int], tokenizer_dir: str | None = None,
                  task_token: str = TASK_TOKEN) -> str:
  """A Donut processor directory: DonutImageProcessor(size=image_size) and, when tokenizer_dir is
  given, its tokenizer with `task_token` as an added special token and as bos_token.

  Written atomically (file by file, identical bytes on every call, so concurrent hosts agree) into
  `cache_root()`/donut_processor_<hash of the inputs>; returns its path. The token must already be
  in the vocabulary (no embedding is added).
  """
  files = {"preprocessor_config.json": json.dumps(ImageProcessor.from_dict(
      {"image_processor_type": "DonutImageProcessor",
       "size": {"height": image_size[0], "width": image_size[1]}}).to_dict(), indent=2,
      sort_keys=True) + "\n"}
  if tokenizer_dir:
    files.update(_task_tokenizer_files(tokenizer_dir, task_token))
  digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:12]
  out = os.path.join(cache_root(), f"donut_processor_{digest}")
  for name, text in files.items():
    path = os.path.join(out, name)
    if not os.path.exists(path):
      fileio.atomic_write(path, text)
  return out


def _task_tokenizer_files(tokenizer_dir: str, task_token: str) -> dict[str, str]:
  """tokenizer.json (+ vocab.txt) of `tokenizer_dir` with `task_token` special, and the two
  special-token files naming it bos_token."""
  with open(os.path.join(tokenizer_dir, "tokenizer.json"), encoding="utf-8") as f:
    tok = json.load(f)
  vocab = tok["model"]["vocab"]
  if task_token not in vocab:
    raise ValueError(f"task token {task_token!r} is not in the vocabulary of {tokenizer_dir}")
  added = [t for t in tok["added_tokens"] if t["content"] != task_token]
  added.append(dict(id=vocab[task_token], content=task_token, single_word=False, lstrip=False,
                    rstrip=False, normalized=False, special=True))
  tok["added_tokens"] = sorted(added, key=lambda t: t["id"])
  out = {"tokenizer.json": json.dumps(tok, ensure_ascii=False)}
  for name in ("special_tokens_map.json", "tokenizer_config.json"):
    path = os.path.join(tokenizer_dir, name)
    extra = {}
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        extra = json.load(f)
    extra["bos_token"] = task_token
    out[name] = json.dumps(extra, indent=2, sort_keys=True) + "\n"
  if os.path.exists(os.path.join(tokenizer_dir, "vocab.txt")):
    with open(os.path.join(tokenizer_dir, "vocab.txt"), encoding="utf-8") as f:
      out["vocab.txt"] = f.read()
  return out


def get_config(variant: str = "default"):
  c = common.get_base_config()
  c.model.encoder = c.model.decoder = ""
  c.model.encoder_config = dict(SMALL_DONUT_SWIN)
  c.model.decoder_config = dict(SMALL_MBART)
  c.data.update(dict(name="rendered_ocr", num_train=50_000, eval_examples=500,
                     image_height=RENDER[0], image_width=RENDER[1], max_words=4, max_chars=24,
                     max_target_length=26, render_seed=0, target_units="characters"))
  c.total_steps = 800
  c.batch_size = 32
  c.log_every_steps = 50
  c.checkpoint_every_steps = 400
  c.eval_every_steps = 400
  c.optimizer.learning_rate = 5e-4
  c.optimizer.warmup_steps = 100
  c.eval.update(dict(batch_size=100, num_generate=500, num_beams=1, max_length=28,
                     metrics=("cer", "wer", "exact_match", "bleu")))

  if variant in ("default", "smoke"):
    if variant == "smoke":
      common.make_smoke(c, TINY_DONUT_SWIN, TINY_MBART, total_steps=6)
      c.data.update(dict(num_train=64, eval_examples=8, max_target_length=26))
      c.eval.update(dict(batch_size=8, num_generate=8, num_beams=2, max_length=12,
                         metrics=("cer", "wer", "exact_match")))
      c.checkpoint_every_steps = 3
    # After make_smoke (which names MiniLM): the tokenizer whose start token is the task token.
    c.data.tokenizer = c.data.image_processor = processor_dir(CANVAS, minilm_dir())
    c.data.decoder_tokenizer = ""
  elif variant in ("pod", "pod_shape"):
    c.init_from = "naver-clova-ix/donut-base"  # or a local VisionEncoderDecoder directory
    c.model.encoder_config = c.model.decoder_config = {}
    if variant == "pod_shape":  # donut-base's architecture from config dicts, random init
      c.init_from = ""
      c.model.encoder_config = dict(DONUT_BASE_SWIN)
      c.model.decoder_config = dict(DONUT_BASE_MBART)
    # 2560 x 1920 images (~4.8k encoder tokens after stage 1's 307k): each Swin stage scans its
    # block pairs and recomputes them in the backward pass (README, Memory plan).
    c.model.scan_layers = True
    c.model.remat = "full"
    c.data.tokenizer = "naver-clova-ix/donut-base"
    c.data.image_processor = processor_dir((2560, 1920))  # DonutImageProcessor, donut-base's size
    c.data.update(dict(num_train=500_000, eval_examples=2000, image_height=96, image_width=768,
                       target_units="subwords", max_target_length=48))
    c.total_steps = 20_000
    c.batch_size = 64
    c.compute_dtype = "bfloat16"
    c.mesh.update(dict(data=-1, fsdp=8, tensor=1))
    c.optimizer.learning_rate = 3e-5  # Donut's fine-tuning rate
    c.optimizer.warmup_steps = 500
    c.log_every_steps = 100
    c.checkpoint_every_steps = 2000
    c.eval_every_steps = 2000
    c.eval.update(dict(batch_size=16, num_generate=1000, num_beams=1, max_length=48))
  else:
    raise ValueError(f"unknown variant {variant!r} of configs/donut.py: use default, smoke, pod "
                     "or pod_shape")
  return c
