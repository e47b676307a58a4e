r"""Batch prediction with a trained (or any HF-format) encoder-decoder: the command line of
`edjax.predict`.

  python -m experiments.predict --checkpoint=DIR --input=FILE --output=FILE \
      [--num_beams=4 --length_penalty=2.0 --no_repeat_ngram_size=3 --max_length=64 ...]

--checkpoint: an HF EncoderDecoderModel / VisionEncoderDecoderModel directory or an edjax export
  (config.json + flax_params.msgpack); a training run's workdir means its export/. The tokenizer
  comes from --tokenizer (default: the checkpoint dir). A run's export carries the run's eval
  decode settings in generation_config.json, so predict decodes like the run's eval.
--input: one source text per line (UTF-8); an empty line is an error (it has no prediction).
  For a vision checkpoint (ViT / DeiT encoder) every line is an image path (PNG, JPEG, ...;
  relative paths are relative to the input file's folder), preprocessed by --image_processor's
  preprocessor_config.json (default: the checkpoint dir's, else ViTImageProcessor defaults at the
  encoder's image size).
--output: JSONL, one {"input", "output", "score"} object per input line, written atomically (a
  directory or an unwritable path is rejected before anything is generated). "score" is beam
  search's sequence score, or for greedy / sampling the sum of the log-probabilities of the
  generated tokens (EOS included).
--score: --input holds `source<TAB>target` lines; each gets {"input", "target",
  "log_likelihood", "mean_log_likelihood", "num_tokens"} (edjax.score) instead of a generation.
--pairs=FILE.tsv (instead of --input): scores the checkpoint on `source<TAB>target` lines as the
  trainer's eval does (mean token loss + --metrics, default: the run's config.eval.metrics),
  without training or writing an export; prints the metrics and writes them to --output (JSON).
Generation flags (one per `edjax.generation.SETTING_NAMES`) left unset take the checkpoint's
generation_config.json values, then HF's defaults.
An edjax error (a bad flag, input or checkpoint) prints one line `error: ...` and exits 2;
EDJAX_DEBUG=1 shows the traceback.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from absl import app, flags

from edjax import fileio
from edjax import predict as predict_lib
from edjax.convert import CheckpointError
from edjax.model_configs import ConfigError
from edjax.generation import HF_KEYWORDS, SETTING_NAMES, GenerationSettings

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
flags.DEFINE_string("pairs", None, "`source<TAB>target` file to compute the eval metrics on.")
flags.DEFINE_list("metrics", None, "Metrics for --pairs (default: the run's config.eval.metrics).")
flags.DEFINE_boolean("score", False, "Score `source<TAB>target` lines (edjax.score: the targets' "
                     "log-likelihood) instead of generating.")

HELP = {
    "max_length": "Max decoder length incl. the start token.",
    "max_new_tokens": "Max generated tokens (overrides max_length).",
    "min_length": "Min decoder length incl. the start token.",
    "num_beams": "Beam size (1 = greedy / sampling).",
    "do_sample": "Multinomial sampling.",
    "temperature": "Sampling temperature.",
    "top_k": "Sampling top-k.",
    "top_p": "Sampling nucleus top-p.",
    "length_penalty": "Beam length penalty exponent.",
    "early_stopping": "Beam early stopping.",
    "no_repeat_ngram_size": "Ban repeated n-grams of this size.",
    "repetition_penalty": "CTRL repetition penalty.",
    "num_return_sequences": "Outputs per input (beam / sampling).",
    "decoder_start_token_id": "Decoder start id.",
    "eos_token_id": "End-of-sequence id.",
    "pad_token_id": "Padding id.",
    "forced_bos_token_id": "Token forced right after the start token.",
    "forced_eos_token_id": "Token forced at max_length.",
}


def _define_generation_flags() -> None:
  """One flag per generation setting, typed by its GenerationSettings field (None = unset):
  bool | str (early_stopping) -> true / false / never, bool, float, a tuple of ids (eos, forced
  eos, suppress_tokens, begin_suppress_tokens) -> a comma-separated list, bad_words_ids -> id
  sequences separated by commas, ids within one by spaces ("1037 2003,2023"), else integer."""
  types = {HF_KEYWORDS.get(f.name, f.name): str(f.type) for f in dataclasses.fields(GenerationSettings)}
  for name in SETTING_NAMES:
    kind, text = types.get(name, "int"), HELP.get(name, f"edjax.generate's {name}.")
    if kind == "bool | str":
      flags.DEFINE_enum(name, None, ["true", "false", "never"], text)
    elif kind == "bool":
      flags.DEFINE_boolean(name, None, text)
    elif kind == "float":
      flags.DEFINE_float(name, None, text)
    elif kind.startswith("tuple[tuple["):
      flags.DEFINE_string(name, None, text + ' Id sequences: "1037 2003,2023".')
    elif kind.startswith("tuple[int"):
      flags.DEFINE_list(name, None, text + " Comma-separated ids.")
    else:
      flags.DEFINE_integer(name, None, text)


def _ids(name: str, items) -> tuple[int, ...]:
  try:
    return tuple(int(i) for i in items)
  except ValueError:
    raise ConfigError(f"--{name}={','.join(map(str, items))!r}: use integer token ids") from None


def _flag_value(name: str, value):
  """A set flag's value as the `edjax.generate` keyword takes it."""
  if name == "bad_words_ids":
    seqs = [seq.split() for seq in value.split(",") if seq.strip()]
    return tuple(_ids(name, seq) for seq in seqs)
  if isinstance(value, list):
    return _ids(name, value)
  if isinstance(value, str):
    return {"true": True, "false": False}.get(value, value)
  return value


_define_generation_flags()


def generation_kwargs() -> dict:
  """The generation flags that were set, as `edjax.generate` keywords."""
  out = {}
  for name in SETTING_NAMES:
    value = getattr(FLAGS, name)
    if value is not None:
      out[name] = _flag_value(name, value)
  return out


def main(argv):
  del argv
  for name in ("checkpoint", "pairs" if FLAGS.pairs else "input", "output"):
    if not getattr(FLAGS, name):
      raise app.UsageError(f"--{name} is required")
  try:
    predict_lib.check_dir("checkpoint", FLAGS.checkpoint, "checkpoint directory")
    for name in ("tokenizer", "decoder_tokenizer"):
      if getattr(FLAGS, name):
        predict_lib.check_dir(name, getattr(FLAGS, name), "tokenizer directory")
    checkpoint = predict_lib.resolve_checkpoint(FLAGS.checkpoint)
    tokenizer_dir = FLAGS.tokenizer or checkpoint
    predict_lib.check_arguments(FLAGS.output, FLAGS.batch_size, FLAGS.max_input_length,
                                generation_kwargs())
    if FLAGS.pairs:
      names = FLAGS.metrics or predict_lib.run_metrics(FLAGS.checkpoint)
      if not names:
        raise predict_lib.InputError(
            f"--pairs: {FLAGS.checkpoint} does not come from an edjax run (no config.json with "
            "eval.metrics beside it): pass --metrics=bleu,sari,...")
      pairs = predict_lib.read_pairs(FLAGS.pairs, "pairs")
      results = predict_lib.evaluate_pairs(
          checkpoint, pairs, tokenizer_dir, FLAGS.decoder_tokenizer or tokenizer_dir,
          FLAGS.batch_size, FLAGS.max_input_length, generation_kwargs(), names, FLAGS.seed)
      text = json.dumps(results, indent=2)
      fileio.atomic_write(FLAGS.output, text + "\n")
      print(text)
      print(f"wrote the metrics of {len(pairs)} pairs to {FLAGS.output}", file=sys.stderr)
      return
    if FLAGS.score:
      rows = predict_lib.score(checkpoint, predict_lib.read_pairs(FLAGS.input), tokenizer_dir,
                               FLAGS.decoder_tokenizer or tokenizer_dir, FLAGS.batch_size,
                               FLAGS.max_input_length)
      predict_lib.write_jsonl(FLAGS.output, rows)
      print(f"wrote {len(rows)} scores to {FLAGS.output}", file=sys.stderr)
      return
    lines = predict_lib.read_inputs(FLAGS.input)
    rows = predict_lib.predict(
        checkpoint, lines, tokenizer_dir, FLAGS.decoder_tokenizer or tokenizer_dir,
        FLAGS.batch_size, FLAGS.max_input_length, FLAGS.seed, generation_kwargs(),
        input_path=FLAGS.input, image_processor_dir=FLAGS.image_processor)
  except (predict_lib.InputError, ConfigError, CheckpointError) as e:
    if os.environ.get("EDJAX_DEBUG") == "1":
      raise
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  predict_lib.write_jsonl(FLAGS.output, rows)
  print(f"wrote {len(rows)} predictions to {FLAGS.output}", file=sys.stderr)


if __name__ == "__main__":
  app.run(main)
