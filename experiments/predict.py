r"""Batch prediction with a trained (or any HF-format) encoder-decoder.

  python -m experiments.predict --checkpoint=DIR --input=FILE --output=FILE \
      [--num_beams=4 --length_penalty=2.0 --no_repeat_ngram_size=3 --max_length=64 ...]

--checkpoint: an HF EncoderDecoderModel / VisionEncoderDecoderModel directory or an edjax export
  (config.json + flax_params.msgpack). The tokenizer comes from --tokenizer (default: the
  checkpoint dir).
--input: one source text per line (UTF-8); an empty line is an error (it has no prediction).
  For a vision checkpoint (ViT / DeiT encoder) every line is an image path (PNG, JPEG, ...;
  relative paths are relative to the input file's folder), preprocessed by --image_processor's
  preprocessor_config.json (default: the checkpoint dir's, else ViTImageProcessor defaults at the
  encoder's image size).
--output: JSONL, one {"input", "output", "score"} object per input line, written atomically.
Generation flags left unset take the checkpoint's generation_config.json values, then HF's
defaults. Inputs are sorted by length into batches (fewer padded tokens, fewer compilations);
output order equals input order.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "HF-format encoder-decoder dir or edjax export.")
flags.DEFINE_string("input", None, "Text file, one input per line.")
flags.DEFINE_string("output", None, "JSONL file to write.")
flags.DEFINE_string("tokenizer", None, "Tokenizer dir for inputs (default: --checkpoint).")
flags.DEFINE_string("decoder_tokenizer", None, "Tokenizer dir for outputs (default: --tokenizer).")
flags.DEFINE_string("image_processor", None,
                    "Dir with preprocessor_config.json for image inputs (default: --checkpoint).")
flags.DEFINE_integer("batch_size", 8, "Inputs per generate call.")
flags.DEFINE_integer("max_input_length", None, "Truncate inputs (default: encoder positions).")
flags.DEFINE_integer("seed", 0, "PRNG seed for sampling.")
# Generation settings: None = take the checkpoint's / HF's default.
flags.DEFINE_integer("max_length", None, "Max decoder length incl. the start token.")
flags.DEFINE_integer("max_new_tokens", None, "Max generated tokens (overrides max_length).")
flags.DEFINE_integer("min_length", None, "Min decoder length incl. the start token.")
flags.DEFINE_integer("num_beams", None, "Beam size (1 = greedy / sampling).")
flags.DEFINE_boolean("do_sample", None, "Multinomial sampling.")
flags.DEFINE_float("temperature", None, "Sampling temperature.")
flags.DEFINE_integer("top_k", None, "Sampling top-k.")
flags.DEFINE_float("top_p", None, "Sampling nucleus top-p.")
flags.DEFINE_float("length_penalty", None, "Beam length penalty exponent.")
flags.DEFINE_enum("early_stopping", None, ["true", "false", "never"], "Beam early stopping.")
flags.DEFINE_integer("no_repeat_ngram_size", None, "Ban repeated n-grams of this size.")
flags.DEFINE_float("repetition_penalty", None, "CTRL repetition penalty.")
flags.DEFINE_integer("num_return_sequences", None, "Outputs per input (beam / sampling).")
flags.DEFINE_integer("decoder_start_token_id", None, "Decoder start id.")
flags.DEFINE_integer("eos_token_id", None, "End-of-sequence id.")
flags.DEFINE_integer("pad_token_id", None, "Padding id.")

GENERATE_FLAGS = ("max_length", "max_new_tokens", "min_length", "num_beams", "do_sample",
                  "temperature", "top_k", "top_p", "length_penalty", "early_stopping",
                  "no_repeat_ngram_size", "repetition_penalty", "num_return_sequences",
                  "decoder_start_token_id", "eos_token_id", "pad_token_id")


class InputError(ValueError):
  pass


def read_inputs(path: str) -> list[str]:
  """Lines of a UTF-8 file; an unreadable file or an empty line is an InputError."""
  try:
    with open(path, encoding="utf-8") as f:
      lines = f.read().splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise InputError(f"cannot read --input {path}: {e}") from e
  for i, line in enumerate(lines, 1):
    if not line.strip():
      raise InputError(f"--input {path} line {i} is empty: remove it (every line is one input)")
  if not lines:
    raise InputError(f"--input {path} has no lines")
  return lines


def read_images(lines: list[str], input_path: str, processor) -> np.ndarray:
  """float32 pixel_values [n, C, H, W] of the image files named by `lines` (InputError if one
  cannot be read)."""
  from PIL import Image
  base = os.path.dirname(os.path.abspath(input_path))
  images = []
  for i, line in enumerate(lines, 1):
    path = line.strip() if os.path.isabs(line.strip()) else os.path.join(base, line.strip())
    try:
      with Image.open(path) as im:
        images.append(np.asarray(im.convert("RGB")))
    except (OSError, ValueError) as e:
      raise InputError(f"--input line {i}: cannot read image {path} ({e}); each line of a vision "
                       "model's input is an image path") from e
  return processor(images)  # [n, C, H, W]


def generation_kwargs() -> dict:
  out = {}
  for name in GENERATE_FLAGS:
    value = getattr(FLAGS, name)
    if value is not None:
      out[name] = {"true": True, "false": False}.get(value, value) if name == "early_stopping" else value
  return out


def image_processor(checkpoint: str, directory: str | None, model):
  """The ImageProcessor of a vision checkpoint (see the module docstring)."""
  from edjax.processing.images import ImageProcessor
  for path in (directory, checkpoint):
    if path and os.path.exists(os.path.join(path, "preprocessor_config.json")):
      return ImageProcessor.from_dir(path)
  if directory:
    raise InputError(f"--image_processor {directory} has no preprocessor_config.json")
  return ImageProcessor.for_image_size(*model.config.encoder.image_hw)


def predict(checkpoint: str, lines: list[str], tokenizer_dir: str, decoder_tokenizer_dir: str,
            batch_size: int, max_input_length: int | None, seed: int, gen_kwargs: dict,
            progress=sys.stderr, input_path: str = ".", image_processor_dir: str | None = None
            ) -> list[dict]:
  """Generates for every line; returns [{'input', 'output', 'score'}] in input order."""
  import jax

  import edjax
  from edjax.processing.tokenizers import Tokenizer

  model, params = edjax.from_pretrained(checkpoint)
  vision = isinstance(model, edjax.VisionEncoderDecoderModel)
  processor = image_processor(checkpoint, image_processor_dir, model) if vision else None
  tgt_tok = Tokenizer.from_dir(decoder_tokenizer_dir)
  src_tok = None if vision else (
      tgt_tok if decoder_tokenizer_dir == tokenizer_dir else Tokenizer.from_dir(tokenizer_dir))
  max_len = None if vision else (max_input_length or model.config.encoder.max_positions)
  order = list(range(len(lines))) if vision else sorted(range(len(lines)), key=lambda i: len(lines[i]))
  results: list[dict | None] = [None] * len(lines)
  t0, done = time.time(), 0
  rng = jax.random.PRNGKey(seed)
  for start in range(0, len(order), batch_size):
    idx = order[start:start + batch_size]
    rng, key = jax.random.split(rng)
    if vision:
      pixels = read_images([lines[i] for i in idx], input_path, processor)  # [b, C, H, W]
      res = edjax.generate(model, params, pixel_values=pixels, prng_key=key, **gen_kwargs)
    else:
      ids, mask = src_tok.encode_batch([lines[i] for i in idx], max_len)
      res = edjax.generate(model, params, ids, mask, prng_key=key, **gen_kwargs)
    seqs = np.asarray(res.sequences)
    per_input = seqs.shape[0] // len(idx)
    texts = tgt_tok.decode_batch(seqs)
    scores = None if res.scores is None else np.asarray(res.scores).tolist()
    for j, i in enumerate(idx):
      outs = texts[j * per_input:(j + 1) * per_input]
      sc = None if scores is None else scores[j * per_input:(j + 1) * per_input]
      results[i] = {"input": lines[i], "output": outs[0] if per_input == 1 else outs,
                    "score": (sc[0] if per_input == 1 else sc) if sc is not None else None}
    done += len(idx)
    rate = done / max(time.time() - t0, 1e-9)
    print(f"\r[predict] {done}/{len(lines)} inputs, {rate:.2f}/s, "
          f"ETA {(len(lines) - done) / max(rate, 1e-9):.0f}s", end="", file=progress, flush=True)
  print(file=progress)
  return results


def write_jsonl(path: str, rows: list[dict]) -> None:
  """Writes rows to path atomically (temp file in the same dir, then rename)."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".predict-", dir=directory)
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      for row in rows:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def main(argv):
  del argv
  for name in ("checkpoint", "input", "output"):
    if not getattr(FLAGS, name):
      raise app.UsageError(f"--{name} is required")
  try:
    lines = read_inputs(FLAGS.input)
  except InputError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  tokenizer_dir = FLAGS.tokenizer or FLAGS.checkpoint
  try:
    rows = predict(FLAGS.checkpoint, lines, tokenizer_dir, FLAGS.decoder_tokenizer or tokenizer_dir,
                   FLAGS.batch_size, FLAGS.max_input_length, FLAGS.seed, generation_kwargs(),
                   input_path=FLAGS.input, image_processor_dir=FLAGS.image_processor)
  except InputError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  write_jsonl(FLAGS.output, rows)
  print(f"wrote {len(rows)} predictions to {FLAGS.output}", file=sys.stderr)


if __name__ == "__main__":
  app.run(main)
