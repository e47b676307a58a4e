"""edjax.predict and its command line experiments.predict: batches lines through edjax.generate,
writes JSONL, clear input errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import edjax
from configs.bert2bert import TINY_BERT
from edjax.model_configs import EncoderDecoderConfig, config_from_dict
from edjax import predict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, minilm_dir):
  """A tiny random bert2bert on MiniLM's vocabulary, saved in HF format with its tokenizer."""
  cfg = EncoderDecoderConfig.from_encoder_decoder_configs(
      config_from_dict(TINY_BERT), config_from_dict(TINY_BERT), decoder_start_token_id=101,
      eos_token_id=102, pad_token_id=0)
  model, params = edjax.from_config(cfg, rng=0)
  directory = str(tmp_path_factory.mktemp("predict") / "ckpt")
  edjax.save_pretrained(model, params, directory)
  for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
    shutil.copyfile(os.path.join(minilm_dir, name), os.path.join(directory, name))
  return directory, model, params


def test_predict_matches_generate_and_keeps_input_order(checkpoint, wiki_sentences):
  directory, model, params = checkpoint
  lines = [s for s, _ in wiki_sentences] + ["a short one ."]
  kwargs = dict(num_beams=2, max_length=8)
  rows = predict.predict(directory, lines, directory, directory, batch_size=2,
                         max_input_length=64, seed=0, gen_kwargs=kwargs, progress=open(os.devnull, "w"))
  assert [r["input"] for r in rows] == lines
  from edjax.processing.tokenizers import Tokenizer
  tok = Tokenizer.from_dir(directory)
  for line, row in zip(lines, rows):  # one input alone gives the same text and score
    ids, mask = tok.encode_batch([line], 64)
    out = edjax.generate(model, params, ids, mask, **kwargs)
    assert row["output"] == tok.decode_batch(np.asarray(out.sequences))[0]
    assert abs(row["score"] - float(out.scores[0])) < 1e-5


def test_cli_writes_jsonl(checkpoint, tmp_path):
  directory, _, _ = checkpoint
  src = tmp_path / "in.txt"
  src.write_text("first sentence .\nsecond , longer sentence here .\n", encoding="utf-8")
  out = tmp_path / "out" / "preds.jsonl"
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.predict", f"--checkpoint={directory}", f"--input={src}",
       f"--output={out}", "--num_beams=3", "--num_return_sequences=2", "--max_length=6"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
  assert [r["input"] for r in rows] == ["first sentence .", "second , longer sentence here ."]
  assert all(len(r["output"]) == 2 and len(r["score"]) == 2 for r in rows)
  assert rows[0]["score"][0] >= rows[0]["score"][1]  # beams come best first
  assert "2/2 inputs" in proc.stderr


@pytest.mark.parametrize("content,fragment", [
    (b"one\n\nthree\n", "line 2 is empty"),
    (b"", "has no lines"),
    (b"\xff\xfe bad utf-8\n", r"line 1: invalid UTF-8 \(byte 0.*save the file as UTF-8"),
])
def test_bad_input_files_give_clear_errors(tmp_path, content, fragment):
  path = tmp_path / "in.txt"
  path.write_bytes(content)
  with pytest.raises(predict.InputError, match=fragment):
    predict.read_inputs(str(path))
  with pytest.raises(predict.InputError, match="cannot read"):
    predict.read_inputs(str(tmp_path / "missing.txt"))


def test_cli_reports_an_empty_line_and_exits_2(checkpoint, tmp_path):
  directory, _, _ = checkpoint
  src = tmp_path / "in.txt"
  src.write_text("ok\n\n", encoding="utf-8")
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.predict", f"--checkpoint={directory}", f"--input={src}",
       f"--output={tmp_path / 'o.jsonl'}"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2 and "line 2 is empty" in proc.stderr
  assert not (tmp_path / "o.jsonl").exists()


def test_cli_has_a_flag_for_every_generation_setting():
  from absl import flags
  from edjax.generation import SETTING_NAMES
  from experiments import predict as cli  # noqa: F401  (defines the flags)
  assert set(SETTING_NAMES) <= set(flags.FLAGS)
  assert flags.FLAGS["early_stopping"].parser.enum_values == ["true", "false", "never"]
