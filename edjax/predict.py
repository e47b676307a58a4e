"""Batch prediction with a trained (or any HF-format) encoder-decoder: the logic of
`experiments.predict`.

    check_arguments("preds.jsonl", 8, None, {})         # InputError on a bad flag / output path
    lines = read_inputs("in.txt")                      # InputError on an empty line / bad file
    rows = predict(checkpoint, lines, tokenizer_dir, decoder_tokenizer_dir, batch_size=8,
                   max_input_length=None, seed=0, gen_kwargs={"num_beams": 4})
    write_jsonl("preds.jsonl", rows)                   # [{"input", "output", "score"}], atomic
    metrics = evaluate_pairs(checkpoint, read_pairs("pairs.tsv"), tokenizer_dir,
                             decoder_tokenizer_dir, 8, None, {}, ["bleu", "sari"])

For a vision checkpoint (ViT / DeiT encoder) every line is an image path (relative to the input
file's folder), preprocessed by the checkpoint's preprocessor_config.json (or another dir's).
Text inputs are sorted by length into batches (fewer padded tokens, fewer compilations); rows
come back in input order. Generation settings left out of `gen_kwargs` take the checkpoint's
generation_config.json values (an edjax run's export carries its eval decode settings), then HF's
defaults. A run's workdir given as the checkpoint means its export/ (`resolve_checkpoint`).

Bad input lines: invalid UTF-8 and empty lines are InputErrors naming the file and line; control
characters are replaced by spaces (as BERT's tokenizer does; one note says how many lines);
inputs longer than --max_input_length (default: the encoder's positions) are truncated, and one
note says how many.
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import numpy as np

import edjax
from edjax import fileio
from edjax.processing.images import ImageProcessor
from edjax.processing.tokenizers import Tokenizer


class InputError(ValueError):
  """An input file (or a line of it) that cannot be predicted on."""


EXPORT_DIR = "export"
RUN_CONFIG = "config.json"


def is_run_workdir(path: str) -> bool:
  """True for an edjax training workdir (checkpoints/ beside the run's config.json)."""
  return os.path.isdir(os.path.join(path, "checkpoints"))


def resolve_checkpoint(path: str, note=sys.stderr) -> str:
  """`path`, or its export/ when `path` is a training run's workdir (said on `note`); InputError
  for a workdir without an export (the run has not finished, or export_hf=False)."""
  if not os.path.isdir(path) or not is_run_workdir(path):
    return path
  export = os.path.join(path, EXPORT_DIR)
  if os.path.exists(os.path.join(export, "config.json")):
    print(f"[predict] {path} is a training workdir: using its export {export}", file=note)
    return export
  raise InputError(f"--checkpoint {path} is a training workdir without {EXPORT_DIR}/ (the run has "
                   "not finished, or config.export_hf=False): rerun the training to the end with "
                   "export_hf=True, or pass an HF-format model directory")


def check_dir(flag: str, path: str, kind: str) -> None:
  """InputError when a local-looking --flag path is not a directory (before any loading)."""
  if os.path.isdir(path):
    return
  if os.path.exists(path):
    raise InputError(f"--{flag} {path} is a file; pass the {kind} that holds it")
  if path.startswith((".", "/", "~")) or path.count("/") > 1:
    raise InputError(f"--{flag}: {kind} {path} does not exist")


POSITIVE_SETTINGS = ("max_length", "max_new_tokens", "num_beams", "num_return_sequences")


def check_arguments(output: str, batch_size: int, max_input_length: int | None,
                    gen_kwargs: dict) -> None:
  """InputError, naming the flag, for arguments that would fail only after the model is loaded
  and generation ran: a non-positive --batch_size / --max_input_length / length or beam setting,
  an --output that is a directory or cannot be written."""
  if batch_size <= 0:
    raise InputError(f"--batch_size={batch_size}: must be >= 1")
  if max_input_length is not None and max_input_length <= 0:
    raise InputError(f"--max_input_length={max_input_length}: must be >= 1")
  for name in POSITIVE_SETTINGS:
    if gen_kwargs.get(name) is not None and gen_kwargs[name] <= 0:
      raise InputError(f"--{name}={gen_kwargs[name]}: must be >= 1")
  if os.path.isdir(output):
    raise InputError(f"--output {output} is a directory: name a file, e.g. "
                     f"{os.path.join(output, 'predictions.jsonl')}")
  parent = os.path.dirname(os.path.abspath(output))  # created if missing: check what exists
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise InputError(f"--output {output}: {parent} is a file, not a folder")
  if not os.access(parent, os.W_OK) or (os.path.exists(output) and not os.access(output, os.W_OK)):
    raise InputError(f"--output {output} is not writable")


def read_inputs(path: str, flag: str = "input", note=sys.stderr) -> list[str]:
  """Lines of a UTF-8 file; an unreadable file, invalid UTF-8 or an empty line is an InputError
  naming the line. Control characters are replaced by spaces (one note counts the lines)."""
  from edjax.data.pipeline import clean_control_characters
  try:
    with open(path, "rb") as f:
      raw = f.read().splitlines()
  except OSError as e:
    raise InputError(f"cannot read --{flag} {path}: {e}") from e
  lines, cleaned = [], 0
  for i, data in enumerate(raw, 1):
    try:
      line = data.decode("utf-8")
    except UnicodeDecodeError as e:
      raise InputError(f"--{flag} {path} line {i}: invalid UTF-8 (byte {e.start}: "
                       f"{data[e.start:e.start + 1]!r}); save the file as UTF-8") from None
    if not line.strip():
      raise InputError(f"--{flag} {path} line {i} is empty: remove it (every line is one input)")
    clean = "\t".join(clean_control_characters(p) for p in line.split("\t"))
    cleaned += clean != line
    lines.append(clean)
  if not lines:
    raise InputError(f"--{flag} {path} has no lines")
  if cleaned:
    print(f"[predict] {path}: {cleaned} lines had control characters, replaced by spaces",
          file=note)
  return lines


def note_truncated(lengths: list[int], limit: int, flag: str, note=sys.stderr) -> None:
  """One note saying how many inputs were longer than `limit` tokens (and were cut)."""
  cut = sum(n > limit for n in lengths)
  if cut:
    print(f"[predict] {cut} of {len(lengths)} inputs are longer than {limit} tokens ({flag}) "
          "and were truncated", file=note)


def full_lengths(tokenizer: Tokenizer, texts: list[str]) -> list[int]:
  """Token counts of `texts` without truncation (specials included)."""
  return [len(e.ids) for e in tokenizer.tok.encode_batch(list(texts))]


def is_greedy(model, gen_kwargs: dict) -> bool:
  """True when generation runs without beams (greedy or sampling): scores come from
  output_scores, not from beam search."""
  defaults = getattr(model, "generation_defaults", None) or {}
  return int(gen_kwargs.get("num_beams", defaults.get("num_beams", 1)) or 1) == 1


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
        images.append(np.asarray(im.convert("RGB")))  # [h, w, 3] uint8
    except (OSError, ValueError) as e:
      raise InputError(f"--input line {i}: cannot read image {path} ({e}); each line of a vision "
                       "model's input is an image path") from e
  return processor(images)  # [n, C, H, W]


def image_processor(checkpoint: str, directory: str | None, model) -> ImageProcessor:
  """The ImageProcessor of a vision checkpoint: `directory`'s or the checkpoint's
  preprocessor_config.json, else ViTImageProcessor defaults at the encoder's image size."""
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
  """Generates for every line; returns [{'input', 'output', 'score'}] in input order.

  With num_return_sequences > 1, 'output' and 'score' are lists (best first). 'score' is beam
  search's sequence score (HF's sequences_scores); for greedy / sampling the sum over the
  generated tokens (up to and including EOS) of the log-probability of each chosen token under
  the processed scores (`edjax.generate(output_scores=True).scores`). A progress line goes to
  `progress`.
  """
  model, params = edjax.from_pretrained(checkpoint)
  if is_greedy(model, gen_kwargs):
    gen_kwargs = {**gen_kwargs, "output_scores": True}
  vision = isinstance(model, edjax.VisionEncoderDecoderModel)
  processor = image_processor(checkpoint, image_processor_dir, model) if vision else None
  tgt_tok = Tokenizer.from_dir(decoder_tokenizer_dir)
  src_tok = None if vision else (
      tgt_tok if decoder_tokenizer_dir == tokenizer_dir else Tokenizer.from_dir(tokenizer_dir))
  max_len = None if vision else (max_input_length or model.config.encoder.max_positions)
  order = list(range(len(lines))) if vision else sorted(range(len(lines)), key=lambda i: len(lines[i]))
  results: list[dict | None] = [None] * len(lines)
  if not vision:
    note_truncated(full_lengths(src_tok, lines), max_len,
                   f"--max_input_length={max_input_length}" if max_input_length
                   else "the encoder's positions", progress)
  t0, done = time.time(), 0
  rng = jax.random.PRNGKey(seed)
  for start in range(0, len(order), batch_size):
    idx = order[start:start + batch_size]
    rng, key = jax.random.split(rng)
    if vision:
      pixels = read_images([lines[i] for i in idx], input_path, processor)  # [b, C, H, W]
      res = edjax.generate(model, params, pixel_values=pixels, prng_key=key, **gen_kwargs)
    else:
      ids, mask = src_tok.encode_batch([lines[i] for i in idx], max_len)  # [b, len] each
      res = edjax.generate(model, params, ids, mask, prng_key=key, **gen_kwargs)
    seqs = np.asarray(res.sequences)  # [b * num_return_sequences, L]
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


def read_pairs(path: str, flag: str = "input") -> list[tuple[str, str]]:
  """`source<TAB>target` lines of a UTF-8 file (InputError naming the line when one is not)."""
  pairs = []
  for i, line in enumerate(read_inputs(path, flag), 1):
    parts = line.split("\t")
    if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
      raise InputError(f"--{flag} {path} line {i} is not 'source<TAB>target' with both fields "
                       "non-empty (--score and --pairs read pairs)")
    pairs.append((parts[0], parts[1]))
  return pairs


def score(checkpoint: str, pairs: list[tuple[str, str]], tokenizer_dir: str,
          decoder_tokenizer_dir: str, batch_size: int, max_input_length: int | None,
          max_target_length: int | None = None) -> list[dict]:
  """Scores each (source, target) pair with `edjax.score`: [{'input', 'target',
  'log_likelihood', 'mean_log_likelihood', 'num_tokens'}] in input order. Targets are tokenized
  as training does (`Tokenizer.encode_targets`: no start token, eos last)."""
  model, params = edjax.from_pretrained(checkpoint)
  if isinstance(model, edjax.VisionEncoderDecoderModel):
    raise InputError("--score reads text pairs; this checkpoint has an image encoder")
  tgt_tok = Tokenizer.from_dir(decoder_tokenizer_dir)
  src_tok = tgt_tok if decoder_tokenizer_dir == tokenizer_dir else Tokenizer.from_dir(tokenizer_dir)
  max_src = max_input_length or model.config.encoder.max_positions
  max_tgt = max_target_length or model.config.decoder.max_positions
  rows = []
  for start in range(0, len(pairs), batch_size):
    batch = pairs[start:start + batch_size]
    ids, mask = src_tok.encode_batch([s for s, _ in batch], max_src)  # [b, src_len]
    labels, label_mask = tgt_tok.encode_targets([t for _, t in batch], max_tgt)  # [b, tgt_len]
    labels = np.where(label_mask > 0, labels, edjax.losses.IGNORE_INDEX)
    out = edjax.score(model, params, ids, mask, labels=labels)
    for j, (src, tgt) in enumerate(batch):
      rows.append({"input": src, "target": tgt,
                   "log_likelihood": float(out.log_likelihood[j]),
                   "mean_log_likelihood": float(out.mean_log_likelihood[j]),
                   "num_tokens": int(out.num_tokens[j])})
  return rows


def write_jsonl(path: str, rows: list[dict]) -> None:
  """Writes rows to `path` as JSON lines, atomically (a reader never sees half a file)."""
  fileio.atomic_write(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def run_metrics(checkpoint: str) -> list[str] | None:
  """config.eval.metrics of the run a checkpoint comes from (its workdir's config.json: the
  checkpoint itself or the folder above an export), or None when none is found."""
  for directory in (checkpoint, os.path.dirname(os.path.abspath(checkpoint))):
    path = os.path.join(directory, RUN_CONFIG)
    try:
      with open(path, encoding="utf-8") as f:
        run = json.load(f)
    except (OSError, ValueError):
      continue
    metrics = run.get("eval", {}).get("metrics") if isinstance(run.get("eval"), dict) else None
    if metrics:
      return list(metrics)
  return None


def evaluate_pairs(checkpoint: str, pairs: list[tuple[str, str]], tokenizer_dir: str,
                   decoder_tokenizer_dir: str, batch_size: int, max_input_length: int | None,
                   gen_kwargs: dict, metric_names: list[str], seed: int = 0,
                   progress=sys.stderr) -> dict:
  """Scores a checkpoint on (source, target) pairs as the trainer's eval does, without training
  or writing an export: {"loss": mean token loss of the targets (`score`), "<metric>": ...,
  "num_pairs": n}. Predictions come from `predict` (the checkpoint's generation settings, then
  `gen_kwargs`); sources and references go through the decoder tokenizer's encode -> decode like
  the predictions (`edjax.train.evaluate`), targets through `wiki_split.target_text` (as the
  ``tsv`` dataset reads them)."""
  from edjax import metrics as metrics_lib
  from edjax.data.wiki_split import target_text
  from edjax.processing.tokenizers import roundtrip_references, roundtrip_texts
  try:
    metrics_lib.compute_metrics(metric_names, ["a"], ["a"], ["a"])  # names checked before work
  except ValueError as e:
    raise InputError(f"--metrics: {e}") from None
  pairs = [(s, target_text(t)) for s, t in pairs]
  scored = score(checkpoint, pairs, tokenizer_dir, decoder_tokenizer_dir, batch_size,
                 max_input_length)
  tokens = sum(r["num_tokens"] for r in scored)
  loss = -sum(r["log_likelihood"] for r in scored) / max(tokens, 1)
  rows = predict(checkpoint, [s for s, _ in pairs], tokenizer_dir, decoder_tokenizer_dir,
                 batch_size, max_input_length, seed, gen_kwargs, progress=progress)
  preds = [r["output"] if isinstance(r["output"], str) else r["output"][0] for r in rows]
  dec_tok = Tokenizer.from_dir(decoder_tokenizer_dir)
  results = metrics_lib.compute_metrics(
      metric_names, roundtrip_texts([s for s, _ in pairs], dec_tok), preds,
      roundtrip_references([t for _, t in pairs], dec_tok))
  return {"loss": loss, **results, "num_pairs": len(pairs)}
