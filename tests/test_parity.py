"""Numerical parity of edjax with transformers 4.57.6 PyTorch EncoderDecoderModel.

Every encoder in {bert, roberta} x every decoder in {bert, roberta, gpt2}, with equal widths and
with different widths (enc_to_dec_proj), plus tie_encoder_decoder=True for bert2bert and
roberta2roberta. Each HF model is built once (tests/parity_cases.py caches per case), saved with
`save_pretrained` and loaded with `edjax.from_pretrained`; inputs are seeded right-padded batches
(RoBERTa pads with its pad id 1, so its padding-aware positions matter). Diffs are taken over
non-padded positions only. The comparison logic lives in tests/parity_cases.py, shared with
scripts/parity_table.py.
"""

from __future__ import annotations

import flax.traverse_util as traverse_util
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from edjax.testing import parity_cases as pc  # noqa: E402  (after the importorskips)

CASE_PARAMS = [pytest.param(c, id=c.id) for c in pc.CASES]
TIED_PARAMS = [pytest.param(c, id=c.id) for c in pc.CASES if c.tie]


def _fmt(xs) -> str:
  return "[" + ", ".join(f"{x:.2e}" for x in xs) + "]"


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_logits(case):
  d = pc.compare(case)
  assert d.logits <= pc.LOGITS_TOL, f"{case.id}: logits max|diff| {d.logits:.3e}"
  assert d.labels_only_logits <= pc.LOGITS_TOL, (
      f"{case.id}: logits from labels only (shift_tokens_right) max|diff| {d.labels_only_logits:.3e}")
  assert d.unmasked_logits <= pc.LOGITS_TOL, (
      f"{case.id}: logits without masks max|diff| {d.unmasked_logits:.3e}")
  assert d.left_padded_logits <= pc.LOGITS_TOL, (
      f"{case.id}: logits with left-padded encoder inputs max|diff| {d.left_padded_logits:.3e}")


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_encoder_hidden_states(case):
  d = pc.compare(case)
  n_layers = pc.build(case).hf.config.encoder.num_hidden_layers
  assert len(d.encoder_hidden) == n_layers + 1  # embeddings + every layer, HF order
  assert max(d.encoder_hidden) <= pc.HIDDEN_TOL, (
      f"{case.id}: encoder hidden states max|diff| per state {_fmt(d.encoder_hidden)}")
  assert d.encoder_last_hidden <= pc.HIDDEN_TOL
  assert max(d.left_padded_encoder_hidden) <= pc.HIDDEN_TOL, (
      f"{case.id}: left-padded encoder hidden states {_fmt(d.left_padded_encoder_hidden)}")


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_loss(case):
  d = pc.compare(case)
  assert np.isfinite(d.hf_loss) and d.hf_loss > 0
  assert d.loss <= pc.LOSS_TOL, f"{case.id}: loss |diff| {d.loss:.3e} (HF loss {d.hf_loss:.6f})"
  assert d.labels_only_loss <= pc.LOSS_TOL, (
      f"{case.id}: labels-only loss |diff| {d.labels_only_loss:.3e}")


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_decoder_hidden_states_and_attentions(case):
  d = pc.compare(case)
  cfg = pc.build(case).hf.config
  dec_layers = getattr(cfg.decoder, "num_hidden_layers", None) or cfg.decoder.n_layer
  assert len(d.decoder_hidden) == dec_layers + 1
  assert len(d.decoder_attentions) == len(d.cross_attentions) == dec_layers
  assert len(d.encoder_attentions) == cfg.encoder.num_hidden_layers
  assert max(d.decoder_hidden) <= pc.HIDDEN_TOL, f"decoder hidden {_fmt(d.decoder_hidden)}"
  assert max(d.decoder_attentions) <= pc.ATTN_TOL, f"decoder self-attn {_fmt(d.decoder_attentions)}"
  assert max(d.cross_attentions) <= pc.ATTN_TOL, f"cross-attn {_fmt(d.cross_attentions)}"
  assert max(d.encoder_attentions) <= pc.ATTN_TOL, f"encoder attn {_fmt(d.encoder_attentions)}"


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_enc_to_dec_proj(case):
  built = pc.build(case)
  has_hf = hasattr(built.hf, "enc_to_dec_proj")
  assert has_hf == case.proj
  assert built.model.config.needs_enc_to_dec_proj == case.proj
  if case.proj:
    kernel = built.params["enc_to_dec_proj"]["kernel"]
    assert kernel.shape == (pc.ENC_HIDDEN, pc.PROJ_DEC_HIDDEN)
    assert built.params["enc_to_dec_proj"]["bias"].shape == (pc.PROJ_DEC_HIDDEN,)
    np.testing.assert_array_equal(
        np.asarray(kernel), pc.to_np(built.hf.enc_to_dec_proj.weight).T)
  else:
    assert "enc_to_dec_proj" not in built.params


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_param_count_matches_hf(case):
  """Same number of weights as HF's unique parameters: nothing dropped, tied weights held once."""
  built = pc.build(case)
  assert pc.edjax_param_count(built.params) == pc.hf_unique_param_count(built.hf)


@pytest.mark.parametrize("case", TIED_PARAMS)
def test_tied_weights_held_once(case):
  built = pc.build(case)
  hf, params = built.hf, built.params
  base = hf.decoder.base_model_prefix  # 'bert' / 'roberta'

  # HF: every encoder weight but the pooler is the very same tensor in the decoder body.
  tied = pc.hf_tied_names(hf)
  enc_names = [n for n, _ in hf.encoder.named_parameters()]
  assert sorted(tied) == sorted(n for n in enc_names if not n.startswith("pooler."))
  dec_body = getattr(hf.decoder, base)
  for name in tied:
    a, b = hf.encoder.get_parameter(name), dec_body.get_parameter(name)
    assert a is b and a.data_ptr() == b.data_ptr(), name

  # edjax: the decoder body holds only its own cross-attention; the tied weights live at the
  # encoder paths, once.
  dec_flat = traverse_util.flatten_dict(params["decoder"][base], sep="/")
  assert "embeddings" not in params["decoder"][base]
  own = [k for k in dec_flat if "/cross_attn/" not in k and "/cross_attn_norm/" not in k]
  assert not own, f"decoder body holds tied weights: {own[:6]}"
  assert len(built.model.tied_paths) == len(tied)
  for dec_path, enc_path in built.model.tied_paths:
    assert enc_path.startswith("encoder/") and dec_path.startswith(f"decoder/{base}/")
  enc_flat = traverse_util.flatten_dict(params["encoder"], sep="/")
  np.testing.assert_array_equal(enc_flat["embeddings/word_embeddings/embedding"],
                                pc.to_np(dec_body.embeddings.word_embeddings.weight))


@pytest.mark.parametrize("case", TIED_PARAMS)
def test_tied_gradients(case):
  """d loss / d w of tied weights = sum over both uses, as with HF's shared nn.Parameters."""
  diffs = pc.gradient_diffs(case)
  worst = max(diffs, key=diffs.get)
  assert diffs[worst] <= pc.GRAD_TOL, f"{case.id}: gradient of {worst} differs by {diffs[worst]:.3e}"
  assert any(n.startswith("encoder.embeddings.word_embeddings") for n in diffs)
