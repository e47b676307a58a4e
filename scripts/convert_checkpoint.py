"""Converts encoder-decoder checkpoints between HF format and edjax exports, or warm-starts one.

Three ways in, two ways out:

  # an HF EncoderDecoderModel directory -> edjax export (config.json + flax_params.msgpack)
  python scripts/convert_checkpoint.py --hf_dir=bert2bert_hf --out=bert2bert_edjax --to=edjax

  # an edjax export (or an HF directory, re-saved) -> HF directory that transformers'
  # EncoderDecoderModel.from_pretrained reads (config.json, model.safetensors, generation_config.json)
  python scripts/convert_checkpoint.py --in_dir=bert2bert_edjax --out=bert2bert_hf --to=hf

  # warm start: two single-model HF directories (BertModel, RobertaForCausalLM, GPT2LMHeadModel, ...)
  # composed with fresh cross-attention, written in either format
  python scripts/convert_checkpoint.py --encoder=bert-base-uncased --decoder=gpt2 \\
      --decoder_start_token_id=50256 --pad_token_id=50256 --eos_token_id=50256 --out=bert2gpt2 --to=hf
  python scripts/convert_checkpoint.py --encoder=roberta-base --decoder=roberta-base \\
      --tie_encoder_decoder --out=roberta_share --to=edjax

`--hf_dir` is an alias of `--in_dir`. The loading report (tensors used, missing, unexpected,
freshly initialised) is printed; a strict load of a full checkpoint fails on any missing or
unexpected tensor unless `--no-strict`. Paths may be hub ids when the hub can be reached.
"""

from __future__ import annotations

import argparse
import os
import time

import edjax


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
  parser.add_argument("--in_dir", "--hf_dir", dest="in_dir",
                      help="HF EncoderDecoderModel directory or edjax export to convert")
  parser.add_argument("--encoder", help="single-model HF directory of the encoder (warm start)")
  parser.add_argument("--decoder", help="single-model HF directory of the decoder (warm start)")
  parser.add_argument("--tie_encoder_decoder", action="store_true",
                      help="warm start: share encoder and decoder weights (BERTShare)")
  for name in ("decoder_start_token_id", "pad_token_id", "eos_token_id", "bos_token_id"):
    parser.add_argument(f"--{name}", type=int, default=None,
                        help=f"warm start: the composite's {name} (default: the decoder's)")
  parser.add_argument("--seed", type=int, default=0, help="RNG seed of freshly initialised params")
  parser.add_argument("--strict", action=argparse.BooleanOptionalAction, default=True,
                      help="--no-strict initialises missing tensors and ignores unexpected ones")
  parser.add_argument("--out", required=True, help="output directory (replaced atomically)")
  parser.add_argument("--to", required=True, choices=("hf", "edjax"),
                      help="hf: config.json + model.safetensors; edjax: config.json + "
                           "flax_params.msgpack")
  args = parser.parse_args(argv)
  warm = args.encoder is not None or args.decoder is not None
  if warm and args.in_dir:
    parser.error("pass either --in_dir/--hf_dir or --encoder and --decoder, not both")
  if warm and not (args.encoder and args.decoder):
    parser.error("a warm start needs both --encoder and --decoder")
  if not warm and not args.in_dir:
    parser.error("pass --in_dir/--hf_dir, or --encoder and --decoder")
  if not warm and (args.tie_encoder_decoder or any(
      getattr(args, n) is not None for n in ("decoder_start_token_id", "pad_token_id",
                                             "eos_token_id", "bos_token_id"))):
    parser.error("--tie_encoder_decoder and token ids apply to a warm start (--encoder/--decoder)")
  return args


def format_report(name: str, report) -> str:
  return (f"{name}: used {len(report.used)}, missing {len(report.missing)}, "
          f"unexpected {len(report.unexpected)}, mismatched {len(report.mismatched)} "
          f"({report.summary()})")


def main(argv=None) -> None:
  args = parse_args(argv)
  start = time.time()
  if args.in_dir:
    model, params, report = edjax.from_pretrained(args.in_dir, rng=args.seed, strict=args.strict,
                                                  output_loading_info=True)
    print(format_report(f"loaded {args.in_dir}", report))
    initialized = report.initialized
  else:
    ids = {n: getattr(args, n) for n in ("decoder_start_token_id", "pad_token_id", "eos_token_id",
                                         "bos_token_id") if getattr(args, n) is not None}
    model, params, reports = edjax.from_encoder_decoder_pretrained(
        args.encoder, args.decoder, rng=args.seed, tie_encoder_decoder=args.tie_encoder_decoder,
        output_loading_info=True, **ids)
    for part in ("encoder", "decoder"):
      print(format_report(part, reports[part]))
    initialized = sorted(set(reports["encoder"].initialized) | set(reports["decoder"].initialized))
  more = f" ... (+{len(initialized) - 6})" if len(initialized) > 6 else ""
  shown = ", ".join(initialized[:6]) + more
  print(f"initialized {len(initialized)} params freshly" + (f": {shown}" if initialized else ""))
  print(f"model: {model!r}; decoder_start_token_id={model.config.decoder_start_token_id}, "
        f"pad_token_id={model.config.pad_token_id}, eos_token_id={model.config.eos_token_id}")
  if model.config.decoder_start_token_id is None:
    print("note: decoder_start_token_id is None; training and generation need one "
          "(--decoder_start_token_id, e.g. the tokenizer's [CLS] or bos id)")
  if args.to == "hf":
    edjax.save_pretrained(model, params, args.out)
  else:
    edjax.export_params(model, params, args.out)
  print(f"wrote {args.to} checkpoint to {args.out} ({', '.join(sorted(os.listdir(args.out)))}) "
        f"in {time.time() - start:.1f}s")


if __name__ == "__main__":
  main()
