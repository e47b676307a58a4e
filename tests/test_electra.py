"""ELECTRA (`electra`, embedding_size != hidden_size: `embeddings_project`) as encoder
(ElectraModel) and causal-LM decoder (ElectraForCausalLM, the generator head): parity with
transformers 4.57.6 PyTorch.

Tiny random EncoderDecoderModels (every weight seeded noise), equal widths and widths that differ
(enc_to_dec_proj): logits and loss on padded batches, generated sequences, warm start from
ElectraModel / ElectraForCausalLM / ElectraForMaskedLM directories, the export round trip.
"""

from __future__ import annotations

import pytest
import transformers

import edjax
import text_zoo as tz

# name: (encoder, decoder, encoder width, decoder width); tiny ELECTRA embeddings are 16 wide.
CASES = {
    "electra2electra": ("electra", "electra", 32, 32),
    "electra2electra-proj": ("electra", "electra", 32, 48),
}
# class[-tag]: (model_type, hidden, is an LM, seed)
CLASSES = {
    "ElectraModel": ("electra", 32, False, 1),
    "ElectraForCausalLM": ("electra", 32, True, 2),
    "ElectraModel-wide": ("electra", 48, False, 3),
    "ElectraForMaskedLM": ("electra", 32, True, 4),
}
WARM = [("ElectraModel", "ElectraForCausalLM"),
        ("ElectraForCausalLM", "ElectraModel-wide"),
        ("ElectraModel", "ElectraForMaskedLM")]


def _built(name):
  return tz.built(*CASES[name])


def test_config_defaults_are_transformers():
  tz.check_config_defaults(edjax.ElectraConfig, transformers.ElectraConfig)


@pytest.mark.parametrize("name", list(CASES))
def test_logits_and_loss_match_transformers(name):
  hf, model, params, _ = _built(name)
  assert model.config.encoder.embedding_size != model.config.encoder.hidden_size
  assert model.config.needs_enc_to_dec_proj == name.endswith("-proj")
  assert "embeddings_project" in params["encoder"]
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


def test_equal_widths_have_no_embeddings_project():
  """embedding_size == hidden_size: HF builds no embeddings_project, neither do we."""
  cfg = edjax.ElectraConfig(vocab_size=99, embedding_size=32, hidden_size=32, num_hidden_layers=1,
                            num_attention_heads=4, intermediate_size=37)
  model, params = edjax.from_config(edjax.EncoderDecoderConfig.from_encoder_decoder_configs(
      cfg, cfg.replace(is_decoder=True, add_cross_attention=True)))
  assert "embeddings_project" not in params["encoder"]
  assert "embeddings_project" not in params["decoder"]["electra"]


def test_untied_lm_head_matches_transformers(tmp_path):
  """tie_word_embeddings=False: the output projection is its own tensor, loaded and exported."""
  hf, model, params, _ = tz.built("electra", "electra", 32, 32, 0, (("tie_word_embeddings", False),))
  assert not model.config.decoder.tie_word_embeddings
  tz.check_logits(hf, model, params)
  tz.check_export(hf, model, params, str(tmp_path))
