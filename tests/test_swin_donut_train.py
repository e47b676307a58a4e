"""Swin -> BERT and Donut (DonutSwin -> MBart) smoke training end to end: train a few steps on the
rendered OCR lines, evaluate, resume without retraining, export with preprocessor_config.json,
and predict on PNG files (edjax.predict) equal to edjax.generate on the same pixels."""

from __future__ import annotations

import json
import os

import flax.traverse_util as traverse_util
import numpy as np
import pytest
from PIL import Image

import edjax
from configs import donut as donut_config
from configs import swin_bert as swin_bert_config
from edjax import predict
from edjax.data import ocr
from edjax.model_configs import with_runtime_options
from edjax.models.encoder_decoder import model_for_config
from edjax.processing.images import ImageProcessor
from edjax.processing.tokenizers import Tokenizer
from edjax.train import trainer as train_lib

LINES = ["gun loaded with a", "from 2004", "the new Secretariat"]


def losses_of(workdir: str) -> dict[int, float]:
  """{step: train/loss} of a run's metrics.jsonl."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def check_trained(workdir: str, final: dict, config, model_types: tuple[str, str]):
  """Losses logged and finite, eval ran, export loads as the expected VisionEncoderDecoder, and a
  rerun of the finished run resumes (no step trained twice)."""
  losses = losses_of(workdir)
  assert sorted(losses) == list(range(config.log_every_steps, config.total_steps + 1,
                                      config.log_every_steps))
  assert all(np.isfinite(v) for v in losses.values())
  assert final["step"] == config.total_steps
  assert {"eval/loss", "eval/cer", "eval/wer"} <= set(final)
  export = os.path.join(workdir, "export")
  for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
    assert os.path.exists(os.path.join(export, name)), name
  model, _ = edjax.from_pretrained(export)
  assert isinstance(model, edjax.VisionEncoderDecoderModel)
  assert (model.config.encoder.model_type, model.config.decoder.model_type) == model_types
  train_lib.train_and_evaluate(config, workdir)
  assert losses_of(workdir) == losses
  return model


def predict_pngs(export: str, tmp_path, height: int, width: int):
  """(predict rows, generate output, tokenizer) for LINES rendered to PNG files."""
  data = ocr.RenderedOCR(LINES, seed=3, split="eval", height=height, width=width)
  names = []
  for i in range(len(LINES)):
    Image.fromarray(data.image(i)).save(tmp_path / f"line{i}.png")
    names.append(f"line{i}.png")  # relative to the input file's folder
  (tmp_path / "images.txt").write_text("\n".join(names) + "\n")
  kwargs = dict(max_length=8, num_beams=2)
  rows = predict.predict(export, names, export, export, batch_size=2, max_input_length=None,
                         seed=0, gen_kwargs=kwargs, progress=open(os.devnull, "w"),
                         input_path=str(tmp_path / "images.txt"))
  model, params = edjax.from_pretrained(export)
  tok = Tokenizer.from_dir(export)
  pixels = ImageProcessor.from_dir(export)(data.images(np.arange(len(LINES))))
  out = edjax.generate(model, params, pixel_values=pixels, **kwargs)
  assert [r["output"] for r in rows] == tok.decode_batch(np.asarray(out.sequences))
  np.testing.assert_allclose([r["score"] for r in rows], np.asarray(out.scores), atol=1e-5)
  return rows, out, tok


# ----------------------------------------------------------------------------- swin -> bert


@pytest.fixture(scope="module")
def swin_trained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("swin_bert") / "run")
  final = train_lib.train_and_evaluate(swin_bert_config.get_config("smoke"), workdir)
  return workdir, final


def test_swin_bert_smoke_trains_resumes_and_exports(swin_trained):
  workdir, final = swin_trained
  model = check_trained(workdir, final, swin_bert_config.get_config("smoke"), ("swin", "bert"))
  assert model.config.decoder_start_token_id == 101  # MiniLM's [CLS]
  with open(os.path.join(workdir, "export", "preprocessor_config.json")) as f:
    assert json.load(f)["image_processor_type"] == "ViTImageProcessor"  # HF's swin default


def test_swin_bert_predicts_png_files(swin_trained, tmp_path):
  workdir, _ = swin_trained
  _, out, _ = predict_pngs(os.path.join(workdir, "export"), tmp_path, 32, 128)
  assert (np.asarray(out.sequences)[:, 0] == 101).all()


def test_swin_bert_variants_build():
  for variant in ("default", "pod", "pod384"):
    c = swin_bert_config.get_config(variant)
    assert c.data.name == "rendered_ocr"
  pod = swin_bert_config.get_config("pod")
  assert pod.model.encoder == "microsoft/swin-base-patch4-window7-224-in22k"
  assert pod.model.decoder == "bert-base-uncased" and pod.compute_dtype == "bfloat16"
  with pytest.raises(ValueError, match="unknown variant"):
    swin_bert_config.get_config("nope")


# ----------------------------------------------------------------------------- donut


@pytest.fixture(scope="module")
def donut_trained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("donut") / "run")
  final = train_lib.train_and_evaluate(donut_config.get_config("smoke"), workdir)
  return workdir, final


def test_donut_smoke_trains_with_the_task_token_and_exports(donut_trained):
  workdir, final = donut_trained
  config = donut_config.get_config("smoke")
  model = check_trained(workdir, final, config, ("donut-swin", "mbart"))
  # Training shifted the labels behind the task token: it is the model's decoder start id.
  assert model.config.decoder_start_token_id == donut_config.TASK_TOKEN_ID
  export = os.path.join(workdir, "export")
  processor = ImageProcessor.from_dir(export)
  assert processor.image_processor_type == "DonutImageProcessor"
  assert processor.output_size == donut_config.CANVAS
  with open(os.path.join(export, "generation_config.json")) as f:
    assert json.load(f)["decoder_start_token_id"] == donut_config.TASK_TOKEN_ID
  tok = Tokenizer.from_dir(export)
  assert tok.bos_id == donut_config.TASK_TOKEN_ID
  assert tok.tok.id_to_token(donut_config.TASK_TOKEN_ID) == donut_config.TASK_TOKEN == "[unused1]"


def test_donut_predictions_start_with_the_task_token(donut_trained, tmp_path):
  workdir, _ = donut_trained
  rows, out, tok = predict_pngs(os.path.join(workdir, "export"), tmp_path, *donut_config.RENDER)
  seqs = np.asarray(out.sequences)
  assert (seqs[:, 0] == donut_config.TASK_TOKEN_ID).all()
  assert all("[unused1]" not in r["output"] for r in rows)  # a special token: not decoded
  # Eval generation in training started from it too.
  with open(os.path.join(workdir, f"predictions_{donut_config.get_config('smoke').total_steps}"
                         ".jsonl")) as f:
    assert sum(1 for _ in f) > 0


def test_donut_variants_build():
  default = donut_config.get_config("default")
  assert default.model.encoder_config["model_type"] == "donut-swin"
  assert default.model.decoder_config["model_type"] == "mbart"
  assert default.model.decoder_config["decoder_start_token_id"] == donut_config.TASK_TOKEN_ID
  assert Tokenizer.from_dir(default.data.tokenizer).bos_id == donut_config.TASK_TOKEN_ID
  pod = donut_config.get_config("pod")
  assert pod.init_from == "naver-clova-ix/donut-base" and pod.compute_dtype == "bfloat16"
  pod_processor = ImageProcessor.from_dir(pod.data.image_processor)
  assert pod_processor.kind == "donut" and pod_processor.output_size == (2560, 1920)
  assert pod.model.scan_layers and pod.model.remat == "full"  # README, Memory plan
  # pod_shape: donut-base's architecture from config dicts, scanned stages in block pairs
  shape = donut_config.get_config("pod_shape")
  assert not shape.init_from and shape.model.scan_layers and shape.model.remat == "full"
  both = train_lib.random_init_config(shape).replace(decoder_start_token_id=0, pad_token_id=1,
                                                     eos_token_id=2)
  model = model_for_config(with_runtime_options(both, **train_lib.model_runtime_options(shape)))
  assert model.config.encoder.image_hw == (2560, 1920) and model.config.encoder.hidden_size == 1024
  flat = traverse_util.flatten_dict(model.param_shapes(), sep="/")
  stage3 = [v for k, v in flat.items()
            if "layers_2/block_pairs/odd/" in k and k.endswith("fc_in/kernel")]
  assert [np.shape(v)[0] for v in stage3] == [7]  # 14 blocks scanned as 7 pairs
  with pytest.raises(ValueError, match="unknown variant"):
    donut_config.get_config("nope")
