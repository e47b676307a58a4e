"""XLM-RoBERTa (`xlm-roberta`) and CamemBERT (`camembert`), the RoBERTa family under their own
model_types: parity with transformers 4.57.6 PyTorch (XLMRobertaModel / XLMRobertaForCausalLM,
CamembertModel / CamembertForCausalLM; body `roberta`, head `lm_head`).

Tiny random EncoderDecoderModels (every weight seeded noise): XLM-R -> XLM-R (equal widths) and
CamemBERT -> GPT-2 (widths differ: enc_to_dec_proj): logits and loss on padded batches, generated
sequences, warm start from the single-model classes, the export round trip (which keeps the
model_type, so transformers builds the XLM-R / CamemBERT classes).
"""

from __future__ import annotations

import pytest
import transformers

import edjax
import text_zoo as tz

# name: (encoder, decoder, encoder width, decoder width)
CASES = {
    "xlmr2xlmr": ("xlm-roberta", "xlm-roberta", 32, 32),
    "camembert2gpt2-proj": ("camembert", "gpt2", 32, 48),
}
# class[-tag]: (model_type, hidden, is an LM, seed)
CLASSES = {
    "XLMRobertaModel": ("xlm-roberta", 32, False, 1),
    "XLMRobertaForCausalLM": ("xlm-roberta", 32, True, 2),
    "CamembertModel": ("camembert", 48, False, 3),
    "CamembertForCausalLM": ("camembert", 32, True, 4),
    "GPT2LMHeadModel": ("gpt2", 48, True, 5),
}
WARM = [("XLMRobertaModel", "XLMRobertaForCausalLM"),
        ("XLMRobertaForCausalLM", "XLMRobertaModel"),
        ("CamembertForCausalLM", "CamembertModel"),
        ("CamembertModel", "GPT2LMHeadModel")]


def _built(name):
  return tz.built(*CASES[name])


@pytest.mark.parametrize("ours,theirs", [("XLMRobertaConfig", "XLMRobertaConfig"),
                                         ("CamembertConfig", "CamembertConfig")])
def test_config_defaults_are_transformers(ours, theirs):
  tz.check_config_defaults(getattr(edjax, ours), getattr(transformers, theirs))


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
  back = transformers.EncoderDecoderModel.from_pretrained(str(tmp_path))
  assert type(back.encoder) is type(hf.encoder)  # XLMRobertaModel / CamembertModel
  assert type(back.decoder) is type(hf.decoder)  # XLMRobertaForCausalLM / GPT2LMHeadModel
  assert "roberta" in dict(back.decoder.named_children()) or CASES[name][1] == "gpt2"
