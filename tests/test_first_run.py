"""First-run experience (issue #15 items 7, 9-15): offline data missing, bad data lines, the
right nouns, the export decodes like the run's eval, no long silences, metrics.jsonl / plot,
files readable by a colleague, scoring a checkpoint on a pairs file."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

import edjax
import edjax.data
from edjax import predict as predict_lib
from edjax.data import pipeline
from edjax.data.registry import DataError
from edjax.processing.tokenizers import Tokenizer
from edjax.resources import minilm_dir
from edjax.train import trainer as train_lib
from edjax.train import writers
from tests.test_train import REPO, smoke_config

RUN = {"total_steps": 4, "checkpoint_every_steps": 2, "eval_every_steps": 2,
       "log_every_steps": 1}


def run_main(*args, env=None):
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                        timeout=600, env=dict(os.environ, **(env or {})))


def files_under(path) -> list[str]:
  return sorted(os.path.relpath(os.path.join(r, f), path) for r, _, fs in os.walk(path) for f in fs)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A tiny finished run (evals at 2 and 4), then resumed from step 2 after checkpoint 4 is
  lost: (workdir, log records of the resumed run)."""
  old = os.umask(0o022)
  try:
    workdir = str(tmp_path_factory.mktemp("first_run") / "run")
    train_lib.train_and_evaluate(smoke_config(**RUN), workdir)
    shutil.rmtree(os.path.join(workdir, "checkpoints", "4"))  # died after logging step 4
    handler = _Collect()
    logging.getLogger().addHandler(handler)
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.INFO)
    try:
      train_lib.train_and_evaluate(smoke_config(**RUN), workdir)
    finally:
      logging.getLogger().removeHandler(handler)
      logging.getLogger().setLevel(level)
  finally:
    os.umask(old)
  return workdir, [r.getMessage() for r in handler.records], handler.records


class _Collect(logging.Handler):
  def __init__(self):
    super().__init__(logging.INFO)
    self.records = []

  def emit(self, record):
    self.records.append(record)


# ----------------------------------------------------------------------------- 7. offline data


def test_missing_offline_data_fails_at_once_naming_every_place(tmp_path):
  home, workdir = tmp_path / "home", tmp_path / "run"
  home.mkdir()
  env = {k: v for k, v in os.environ.items() if k != "TFDS_DATA_DIR"}
  env.update(EDJAX_DATA_DIR=str(tmp_path / "nowhere"), HOME=str(home))
  proc = subprocess.run([sys.executable, "-m", "experiments.train",
                         "--config=configs/bert2bert.py:smoke", f"--workdir={workdir}"],
                        cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
  assert proc.returncode != 0
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, proc.stderr[-2000:]
  assert str(tmp_path / "nowhere" / "wiki_split") in errors[0]
  assert "tensorflow_datasets" in errors[0] and "EDJAX_DATA_DIR" in errors[0]
  assert "config.data.data_dir" in errors[0] and "data.download=True" in errors[0]
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert not (home / "tensorflow_datasets").exists()  # nothing prepared, nothing downloaded
  assert not workdir.exists() or [f for f in files_under(workdir) if not f.endswith("lock")] == []


# ----------------------------------------------------------------------------- 9. data files


def _tsv_config(tmp_path, train: bytes, **extra):
  path = tmp_path / "train.tsv"
  path.write_bytes(train)
  ev = tmp_path / "eval.tsv"
  ev.write_bytes(b"a b c\ta b .\n")
  return ml_collections.ConfigDict(dict(name="tsv", tsv_train=str(path), tsv_eval=str(ev),
                                        eval_examples=1, max_source_length=6,
                                        max_target_length=6, **extra)), path


@pytest.mark.parametrize("line, message", [
    (b"\tx y .\n", r"line 2: the source field is empty"),
    (b"x y\t  \n", r"line 2: the target field is empty"),
    (b"x \xff y\tx . y .\n", r"line 2: invalid UTF-8 \(byte 2: b'\\xff'\)"),
])
def test_bad_data_lines_name_the_file_and_line(line, message, tmp_path):
  tok = Tokenizer.from_dir(minilm_dir())
  config, path = _tsv_config(tmp_path, b"good one\tgood . one .\n" + line)
  with pytest.raises(DataError, match=f"{path}.*{message}"):
    edjax.data.build_dataset(config, encoder_tokenizer=tok, decoder_tokenizer=tok,
                             global_batch_size=2, seed=0)


def test_control_characters_are_cleaned_and_truncation_counted_once(tmp_path, caplog):
  tok = Tokenizer.from_dir(minilm_dir())
  config, path = _tsv_config(
      tmp_path, b"one\x00two\tone two .\n" + b"a b c d e f g h\ta .\nshort\ts .\n")
  with caplog.at_level(logging.INFO):
    stream, _ = edjax.data.build_dataset(config, encoder_tokenizer=tok, decoder_tokenizer=tok,
                                         global_batch_size=2, seed=0)
  pairs = list(pipeline.parse_tsv_lines(path.read_bytes().splitlines(), str(path)))
  assert pairs[0] == ("one two", "one two .")  # NUL -> space, as BERT's tokenizer does
  notes = [r.getMessage() for r in caplog.records]
  assert sum("lines had control characters" in m for m in notes) == 1
  cut = [m for m in notes if "were truncated" in m and "train" in m]
  assert len(cut) == 1 and "1 of 3 sources longer than data.max_source_length=6" in cut[0]


def test_predict_input_with_invalid_utf8_is_one_error_line(tmp_path):
  src = tmp_path / "in.txt"
  src.write_bytes(b"fine\nbad \xc3(\n")
  out = tmp_path / "out.jsonl"
  proc = run_main("experiments.predict", f"--checkpoint={minilm_dir()}", f"--input={src}",
                  f"--output={out}", f"--tokenizer={minilm_dir()}")
  assert proc.returncode == 2
  assert f"error: --input {src} line 2: invalid UTF-8" in proc.stderr, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert not out.exists()


# ----------------------------------------------------------------------------- 10. right nouns


def test_messages_say_the_right_noun(run, tmp_path):
  workdir, _, _ = run
  assert predict_lib.resolve_checkpoint(workdir) == os.path.join(workdir, "export")
  bare = tmp_path / "bare"
  (bare / "checkpoints").mkdir(parents=True)
  with pytest.raises(predict_lib.InputError, match="training workdir without export/"):
    predict_lib.resolve_checkpoint(str(bare))
  config = smoke_config(**{"data.tokenizer": str(tmp_path / "no_tok")})
  with pytest.raises(FileNotFoundError, match="^tokenizer directory .*no_tok does not exist"):
    train_lib.train_and_evaluate(config, str(tmp_path / "w"))
  # A pickle that would run code: refused as unsafe, not called corrupt, and it did not run.
  torch = pytest.importorskip("torch")
  evil = tmp_path / "evil"
  evil.mkdir()
  shutil.copy(os.path.join(workdir, "export", "config.json"), evil / "config.json")
  marker = tmp_path / "ran"

  class Payload:
    def __reduce__(self):
      return (os.system, (f"touch {marker}",))
  torch.save({"w": Payload()}, evil / "pytorch_model.bin")
  with pytest.raises(edjax.CheckpointError, match="^refused: unsafe pickle") as e:
    edjax.from_pretrained(str(evil))
  assert "corrupt" not in str(e.value) and not marker.exists()


# ----------------------------------------------------------------------------- 11. export decodes like eval


def test_export_carries_eval_decoding_and_greedy_outputs_get_a_score(run):
  workdir, _, _ = run
  export = os.path.join(workdir, "export")
  with open(os.path.join(export, "generation_config.json")) as f:
    gen = json.load(f)
  ev = smoke_config(**RUN).eval
  for key in ("num_beams", "max_length", "min_length", "length_penalty", "no_repeat_ngram_size",
              "early_stopping"):
    assert gen[key] == ev[key], key
  rows = predict_lib.predict(export, ["the cat sat on the mat and then it left ."], export, export,
                             batch_size=1, max_input_length=None, seed=0,
                             gen_kwargs={"num_beams": 1})
  model, params = edjax.from_pretrained(export)
  tok = Tokenizer.from_dir(export)
  ids, mask = tok.encode_batch([rows[0]["input"]], 64)
  seq = np.asarray(edjax.generate(model, params, ids, mask, num_beams=1).sequences)[0]  # [L]
  labels = seq[1:].copy()
  eos = int(np.flatnonzero(labels == model.config.eos_token_id)[0]) if (
      labels == model.config.eos_token_id).any() else len(labels) - 1
  labels[eos + 1:] = edjax.losses.IGNORE_INDEX
  want = float(edjax.score(model, params, ids, mask, labels=labels[None]).log_likelihood[0])
  assert isinstance(rows[0]["score"], float)
  np.testing.assert_allclose(rows[0]["score"], want, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- 12. no long silences


def test_loading_compiling_resume_and_eta_are_logged(run):
  _, messages, records = run
  text = "\n".join(messages)
  assert "loaded data 'wiki_split'" in text
  assert "model ready in" in text and "resumed from step 2" in text
  assert "first step (compile + run) took" in text
  assert "eval: loss on 8 examples" in text and "eval done in" in text
  assert "ETA (with eval and export)" in text
  pooler = [r for r in records if "pooler" in r.getMessage()]
  assert all(r.levelno < logging.WARNING for r in pooler)


def test_bert_pooler_unused_in_a_decoder_is_info(caplog):
  with caplog.at_level(logging.INFO, logger="edjax"):
    edjax.from_encoder_decoder_pretrained(minilm_dir(), minilm_dir())
  pooler = [r for r in caplog.records if "pooler" in r.getMessage()]
  assert pooler and all(r.levelno == logging.INFO for r in pooler)
  assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# ----------------------------------------------------------------------------- 13. metrics.jsonl


def test_metrics_jsonl_is_strict_json_once_per_step_with_a_plot(run, tmp_path):
  workdir, messages, _ = run
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    lines = f.read().splitlines()
  rows = [json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c}")) for line in lines]
  train_steps = [r["step"] for r in rows if "train/loss" in r]
  assert train_steps == [1, 2, 3, 4]  # the resumed run dropped its stale 3 and 4
  assert [r["step"] for r in rows if "eval/loss" in r] == [2, 4]
  assert all(isinstance(r["wall_time"], float) for r in rows)
  png = os.path.join(workdir, "metrics.png")
  with open(png, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert f"wrote {png}" in messages
  path = str(tmp_path / "m.jsonl")
  w = writers.JsonlWriter(path)
  w.write_scalars(1, {"train/loss": float("nan"), "train/grad_norm": float("inf"), "ok": 1.0})
  with open(path) as f:
    row = json.loads(f.read(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
  assert row["train/loss"] is None and row["nonfinite"] == ["train/loss", "train/grad_norm"]
  assert row["ok"] == 1.0


# ----------------------------------------------------------------------------- 14. umask


def test_run_files_respect_the_umask(run):
  workdir, _, _ = run
  export = os.path.join(workdir, "export")
  assert stat.S_IMODE(os.stat(export).st_mode) == 0o755
  for path in [os.path.join(export, n) for n in os.listdir(export)] + [
      os.path.join(workdir, n) for n in ("metrics.jsonl", "predictions_4.jsonl", "metrics.png",
                                         "config.json")]:
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644, path


# ----------------------------------------------------------------------------- 15. --pairs


def test_pairs_scores_a_checkpoint_with_the_run_metrics_without_writing_an_export(run, tmp_path):
  workdir, _, _ = run
  before = {p: os.stat(os.path.join(workdir, p)).st_mtime_ns for p in files_under(workdir)}
  pairs = tmp_path / "pairs.tsv"
  pairs.write_text("the cat sat on the mat and left .\tthe cat sat . <::::> it left .\n"
                   "a man walked home and slept .\ta man walked home . he slept .\n")
  out = tmp_path / "metrics.json"
  proc = run_main("experiments.predict", f"--checkpoint={workdir}", f"--pairs={pairs}",
                  f"--output={out}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  with open(out) as f:
    metrics = json.load(f)
  assert set(metrics) == {"loss", "sari", "bleu", "rouge1", "rouge2", "rougeL", "rougeLsum",
                          "exact_match", "num_pairs"}
  assert metrics["num_pairs"] == 2 and np.isfinite(metrics["loss"]) and metrics["loss"] > 0
  assert json.loads(proc.stdout) == metrics
  after = {p: os.stat(os.path.join(workdir, p)).st_mtime_ns for p in files_under(workdir)}
  assert after == before  # no new export, no checkpoint, nothing touched
