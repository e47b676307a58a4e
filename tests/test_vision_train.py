"""Vision training end to end: the trocr smoke config (rendered OCR, DeiT -> TrOCR), a small image
encoder joined to the warm-started MiniLM decoder, resume, and predict.py on image files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

import edjax
from configs import trocr as trocr_config
from edjax.data import ocr
from edjax.processing.images import ImageProcessor
from edjax import predict
from edjax.train import trainer as train_lib


def _losses(workdir: str) -> dict[int, float]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("trocr") / "run")
  final = train_lib.train_and_evaluate(trocr_config.get_config("smoke"), workdir)
  return workdir, final


def test_trocr_smoke_trains_evaluates_and_exports(trained):
  workdir, final = trained
  config = trocr_config.get_config("smoke")
  losses = _losses(workdir)
  assert sorted(losses) == list(range(config.log_every_steps, config.total_steps + 1,
                                      config.log_every_steps))
  assert all(np.isfinite(v) for v in losses.values())
  assert final["step"] == config.total_steps
  assert {"eval/loss", "eval/cer", "eval/wer", "eval/exact_match"} <= set(final)
  assert final["eval/cer"] > 0  # a 6-step model does not read text
  export = os.path.join(workdir, "export")
  for name in ("config.json", "model.safetensors", "preprocessor_config.json", "vocab.txt"):
    assert os.path.exists(os.path.join(export, name)), name
  model, _ = edjax.from_pretrained(export)
  assert isinstance(model, edjax.VisionEncoderDecoderModel)
  assert (model.config.encoder.model_type, model.config.decoder.model_type) == ("deit", "trocr")
  # Rerunning the finished run resumes at its last step: no step is trained twice.
  train_lib.train_and_evaluate(config, workdir)
  assert _losses(workdir) == losses


def test_predict_reads_image_files(trained, tmp_path):
  workdir, _ = trained
  export = os.path.join(workdir, "export")
  lines = ["gun loaded with a", "from 2004", "the new Secretariat"]
  data = ocr.RenderedOCR(lines, seed=3, split="eval")
  names = []
  for i in range(len(lines)):
    Image.fromarray(data.image(i)).save(tmp_path / f"line{i}.png")
    names.append(f"line{i}.png")  # relative to the input file's folder
  (tmp_path / "images.txt").write_text("\n".join(names) + "\n")
  kwargs = dict(max_length=8, num_beams=2)
  rows = predict.predict(export, names, export, export, batch_size=2, max_input_length=None,
                         seed=0, gen_kwargs=kwargs, progress=open(os.devnull, "w"),
                         input_path=str(tmp_path / "images.txt"))
  model, params = edjax.from_pretrained(export)
  from edjax.processing.tokenizers import Tokenizer
  tok = Tokenizer.from_dir(export)
  pixels = ImageProcessor.from_dir(export)(data.images(np.arange(3)))
  out = edjax.generate(model, params, pixel_values=pixels, **kwargs)
  assert [r["output"] for r in rows] == tok.decode_batch(np.asarray(out.sequences))
  np.testing.assert_allclose([r["score"] for r in rows], np.asarray(out.scores), atol=1e-5)
  with pytest.raises(predict.InputError, match="cannot read image"):
    predict.predict(export, ["missing.png"], export, export, batch_size=1, max_input_length=None,
                    seed=0, gen_kwargs=kwargs, progress=open(os.devnull, "w"),
                    input_path=str(tmp_path / "images.txt"))


def test_small_image_encoder_joins_pretrained_decoder(minilm_dir):
  """trocr's default model: a random DeiT + the MiniLM decoder; fresh are only the encoder, the
  enc_to_dec_proj, the cross-attention and (as in HF: MiniLM is a BertModel) the LM head
  transform; the MiniLM weights are reused verbatim."""
  enc = edjax.model_configs.config_from_dict(trocr_config.SMALL_DEIT)
  model, params, info = edjax.from_encoder_decoder_pretrained(
      enc, minilm_dir, output_loading_info=True, decoder_start_token_id=101, eos_token_id=102,
      pad_token_id=0)
  assert isinstance(model, edjax.VisionEncoderDecoderModel) and model.config.needs_enc_to_dec_proj
  assert len(info["decoder"].used) == 101 and not info["encoder"].used
  fresh_decoder = [k for k in info["decoder"].initialized if k.startswith("decoder/")]
  assert any("cross_attn" in k for k in fresh_decoder)
  assert all("cross_attn" in k or k.startswith("decoder/lm_head/") for k in fresh_decoder), fresh_decoder
  from edjax import convert
  state = convert.read_state_dict(minilm_dir)
  word = params["decoder"]["bert"]["embeddings"]["word_embeddings"]["embedding"]
  np.testing.assert_array_equal(word, state["embeddings.word_embeddings.weight"])
