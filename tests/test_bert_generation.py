"""BertGeneration (`bert-generation`) as encoder and causal-LM decoder: parity with transformers
4.57.6 PyTorch (BertGenerationEncoder / BertGenerationDecoder).

Tiny random EncoderDecoderModels (every weight seeded noise), equal widths and widths that differ
(enc_to_dec_proj): logits and loss on padded batches, generated sequences, warm start from
BertGenerationEncoder / BertGenerationDecoder directories, the export round trip.
"""

from __future__ import annotations

import pytest
import transformers

import edjax
import text_zoo as tz

# name: (encoder, decoder, encoder width, decoder width)
CASES = {
    "bertgen2bertgen": ("bert-generation", "bert-generation", 32, 32),
    "bertgen2bertgen-proj": ("bert-generation", "bert-generation", 32, 48),
}
# class[-tag]: (model_type, hidden, is an LM, seed)
CLASSES = {
    "BertGenerationEncoder": ("bert-generation", 32, False, 1),
    "BertGenerationDecoder": ("bert-generation", 32, True, 2),
    "BertGenerationEncoder-wide": ("bert-generation", 48, False, 3),
}
WARM = [("BertGenerationEncoder", "BertGenerationDecoder"),
        ("BertGenerationDecoder", "BertGenerationEncoder-wide")]


def _built(name):
  return tz.built(*CASES[name])


def test_config_defaults_are_transformers():
  tz.check_config_defaults(edjax.BertGenerationConfig, transformers.BertGenerationConfig)


@pytest.mark.parametrize("name", list(CASES))
def test_logits_and_loss_match_transformers(name):
  hf, model, params, _ = _built(name)
  assert model.config.needs_enc_to_dec_proj == name.endswith("-proj")
  tz.check_logits(hf, model, params)


@pytest.mark.parametrize("setting", list(tz.GEN_SETTINGS))
@pytest.mark.parametrize("name", list(CASES))
def test_generate_matches_transformers(name, setting):
  tz.check_generate(*_built(name)[:3], setting)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
  return tz.SingleCheckpoints(CLASSES, str(tmp_path_factory.mktemp("single")))


@pytest.mark.parametrize("enc,dec", WARM, ids=[f"{e}-{d}" for e, d in WARM])
def test_warm_start_equals_transformers(ckpts, enc, dec):
  tz.check_warm_start(ckpts[enc], ckpts[dec])


@pytest.mark.parametrize("name", list(CASES))
def test_export_round_trip_loads_in_transformers(name, tmp_path):
  hf, model, params, _ = _built(name)
  tz.check_export(hf, model, params, str(tmp_path))


def test_untied_lm_head_matches_transformers(tmp_path):
  """tie_word_embeddings=False: the output projection is its own tensor, loaded and exported."""
  hf, model, params, _ = tz.built("bert-generation", "bert-generation", 32, 32, 0,
                                  (("tie_word_embeddings", False),))
  assert not model.config.decoder.tie_word_embeddings
  tz.check_logits(hf, model, params)
  tz.check_export(hf, model, params, str(tmp_path))
