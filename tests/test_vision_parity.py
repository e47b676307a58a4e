"""VisionEncoderDecoderModel parity: edjax vs transformers 4.57.6 PyTorch on tiny random models.

ViT -> BERT, ViT -> GPT-2 (non-square images, enc_to_dec_proj), ViT -> RoBERTa, DeiT -> TrOCR
(learned positions, scaled embeddings, cross_attention_hidden_size), DeiT -> TrOCR with sinusoidal
positions and an untied output projection, ViT(qkv_bias=False) -> TrOCR (TrOCR-base's shape), ViT ->
MBart (Donut's decoder; enc_to_dec_proj) and DeiT -> BART. Each HF model (every weight seeded noise)
is saved with `save_pretrained`, loaded with `edjax.from_pretrained`, and both run on the same NCHW
pixel_values: logits <= 1e-4, identical greedy and beam sequences, and the export round trip. The
reference loss is computed by hand: transformers 4.57's VisionEncoderDecoderModel shifts the labels
a second time inside its loss (huggingface/transformers#40111).
"""

from __future__ import annotations

import functools
import tempfile

import numpy as np
import pytest
import torch
import transformers

import edjax
from edjax.testing.hf_utils import assert_same_sequences, to_np

LOGITS_TOL = 1e-4
LOSS_TOL = 1e-5
EOS, PAD, START = 3, 0, 2
BATCH, TGT_LEN = 3, 7
DEC_LENGTHS = (TGT_LEN, TGT_LEN - 2, 2)


def _vision_config(kind: str, image_size, hidden: int = 32):
  """kind: 'vit', 'deit' or 'vit-noqkv' (ViT with qkv_bias=False, TrOCR-base's encoder)."""
  cls = transformers.DeiTConfig if kind == "deit" else transformers.ViTConfig
  extra = dict(qkv_bias=False) if kind == "vit-noqkv" else {}
  return cls(image_size=image_size, patch_size=8, num_channels=3, hidden_size=hidden,
             num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, **extra)


def _decoder_config(kind: str, hidden: int, enc_hidden: int, **overrides):
  common = dict(is_decoder=True, add_cross_attention=True)
  if kind == "bert":
    cfg = transformers.BertConfig(vocab_size=99, hidden_size=hidden, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=37,
                                  max_position_embeddings=64, **common)
  elif kind == "roberta":
    cfg = transformers.RobertaConfig(vocab_size=99, hidden_size=hidden, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=37,
                                     max_position_embeddings=66, pad_token_id=PAD, **common)
  elif kind == "gpt2":
    cfg = transformers.GPT2Config(vocab_size=101, n_embd=hidden, n_layer=2, n_head=4,
                                  n_positions=64, bos_token_id=100, eos_token_id=100,
                                  pad_token_id=PAD, **common)
  elif kind == "trocr":
    cfg = transformers.TrOCRConfig(vocab_size=99, d_model=hidden, decoder_layers=2,
                                   decoder_attention_heads=4, decoder_ffn_dim=37,
                                   max_position_embeddings=64, cross_attention_hidden_size=enc_hidden,
                                   scale_embedding=True, pad_token_id=PAD, bos_token_id=START,
                                   eos_token_id=EOS, decoder_start_token_id=START,
                                   activation_function="relu", **common)
  elif kind in ("bart", "mbart"):  # encoder_layers = decoder_layers: HF sizes its cache by it
    cls = transformers.BartConfig if kind == "bart" else transformers.MBartConfig
    cfg = cls(vocab_size=99, d_model=hidden, decoder_layers=2, encoder_layers=2,
              decoder_attention_heads=4, decoder_ffn_dim=37, max_position_embeddings=64,
              scale_embedding=True, pad_token_id=PAD, bos_token_id=START, eos_token_id=EOS,
              decoder_start_token_id=START, forced_eos_token_id=None, **common)
  else:
    raise ValueError(kind)
  for k, v in overrides.items():
    setattr(cfg, k, v)
  return cfg


# name: (encoder, image size, encoder width, decoder, decoder width, decoder overrides, eos boost)
CASES = {
    "vit2bert": ("vit", 32, 32, "bert", 32, {}, 2.0),
    "vit2gpt2-proj": ("vit", (16, 32), 32, "gpt2", 48, {}, 6.0),
    "vit2roberta": ("vit", 32, 32, "roberta", 32, {}, 2.0),
    "deit2trocr": ("deit", 32, 32, "trocr", 48, {}, 6.0),
    "deit2trocr-sinusoidal": ("deit", 32, 32, "trocr", 48,
                              dict(use_learned_position_embeddings=False, layernorm_embedding=False,
                                   scale_embedding=False, tie_word_embeddings=False), 6.0),
    "vit-noqkv2trocr": ("vit-noqkv", 32, 32, "trocr", 48, {}, 6.0),
    "vit2mbart-proj": ("vit", 32, 32, "mbart", 48, {}, 6.0),
    "deit2bart": ("deit", 32, 32, "bart", 32, {}, 6.0),
}


def _randomize(model: torch.nn.Module, seed: int, std: float = 0.2) -> None:
  """Every parameter seeded noise (norm scales around 1): a dropped or swapped tensor shows."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen) * std
      is_norm = ("norm" in name.lower() or ".ln_" in name) and name.endswith(".weight")
      p.copy_(1.0 + noise if is_norm else noise)


def _boost_eos(hf, amount: float) -> None:
  """Raises the EOS logit so beams finish at different steps (every branch of HF's search)."""
  dec = hf.decoder
  with torch.no_grad():
    if hasattr(dec, "cls"):
      dec.cls.predictions.bias[EOS] += amount
    elif hasattr(dec, "lm_head") and getattr(dec.lm_head, "bias", None) is not None:
      dec.lm_head.bias[EOS] += amount
    elif hasattr(dec, "transformer"):  # GPT-2: tied, bias-free head
      emb, ln = dec.transformer.wte.weight, dec.transformer.ln_f.bias
      emb[EOS] = emb[EOS] + amount * ln / ln.norm()
    elif hasattr(dec, "lm_head"):  # BART / MBart: tied, bias-free head after a LayerNorm
      body = dec.model.decoder
      ln = getattr(body, "layer_norm", None) or body.layers[-1].final_layer_norm  # MBart : BART
      ln = ln.bias
      emb = dec.lm_head.weight
      emb[EOS] = emb[EOS] + amount * ln / ln.norm()
    else:  # TrOCR: the head reads the last layer's final_layer_norm output
      ln = dec.model.decoder.layers[-1].final_layer_norm.bias
      head = dec.output_projection.weight  # the embedding itself when tied
      head[EOS] = head[EOS] + amount * ln / ln.norm()


@functools.lru_cache(maxsize=None)
def built(name: str):
  """(hf model, edjax model, params, checkpoint dir) of a named case."""
  enc_kind, size, enc_hidden, dec_kind, dec_hidden, overrides, boost = CASES[name]
  torch.manual_seed(0)
  cfg = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(
      _vision_config(enc_kind, size, enc_hidden),
      _decoder_config(dec_kind, dec_hidden, enc_hidden, **overrides))
  cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id = START, PAD, EOS
  hf = transformers.VisionEncoderDecoderModel(config=cfg)
  _randomize(hf, seed=len(name))
  hf.tie_weights()
  _boost_eos(hf, boost)
  hf.eval()
  directory = tempfile.mkdtemp(prefix=f"edjax-vision-{name}-")
  hf.save_pretrained(directory)
  model, params = edjax.from_pretrained(directory)
  return hf, model, params, directory


def _inputs(model, seed: int = 0):
  enc = model.config.encoder
  rng = np.random.RandomState(seed)
  pixels = rng.randn(BATCH, enc.num_channels, *enc.image_hw).astype(np.float32)
  labels = rng.randint(4, 99, (BATCH, TGT_LEN))
  dec_mask = (np.arange(TGT_LEN)[None] < np.array(DEC_LENGTHS)[:, None]).astype(np.int64)
  labels = np.where(dec_mask > 0, labels, PAD)
  dec_in = np.concatenate([np.full((BATCH, 1), START), labels[:, :-1]], axis=1)
  return pixels, labels, dec_in, dec_mask


@pytest.mark.parametrize("name", list(CASES))
def test_logits_and_loss_match_transformers(name):
  hf, model, params, _ = built(name)
  assert isinstance(model, edjax.VisionEncoderDecoderModel)
  assert model.config.needs_enc_to_dec_proj == name.endswith("-proj")
  pixels, labels, dec_in, dec_mask = _inputs(model)
  with torch.no_grad():
    ref = hf(pixel_values=torch.tensor(pixels), decoder_input_ids=torch.tensor(dec_in),
             decoder_attention_mask=torch.tensor(dec_mask), output_hidden_states=True)
  out = model.apply({"params": params}, pixel_values=pixels, decoder_input_ids=dec_in,
                    decoder_attention_mask=dec_mask, labels=np.where(dec_mask > 0, labels, -100))
  real = dec_mask.astype(bool)  # padded decoder query rows are not part of the contract
  np.testing.assert_allclose(np.asarray(out.logits)[real], to_np(ref.logits)[real],
                             atol=LOGITS_TOL, rtol=0)
  np.testing.assert_allclose(np.asarray(out.encoder_last_hidden_state),
                             to_np(ref.encoder_last_hidden_state), atol=LOGITS_TOL, rtol=0)
  # The reference loss by hand: mean token cross-entropy of logits vs the (unshifted) labels.
  ce = torch.nn.functional.cross_entropy(ref.logits.reshape(-1, ref.logits.shape[-1]),
                                         torch.tensor(np.where(real, labels, -100)).reshape(-1))
  np.testing.assert_allclose(float(out.loss), float(ce), atol=LOSS_TOL, rtol=0)


GEN_SETTINGS = {
    "greedy": dict(max_length=10),
    "beam": dict(max_length=10, num_beams=3, length_penalty=1.5, num_return_sequences=2),
    "beam-ngram": dict(max_length=12, num_beams=4, no_repeat_ngram_size=2, min_length=5),
}


@pytest.mark.parametrize("setting", list(GEN_SETTINGS))
@pytest.mark.parametrize("name", list(CASES))
def test_generate_matches_transformers(name, setting):
  hf, model, params, _ = built(name)
  pixels = _inputs(model, seed=1)[0]
  kw = GEN_SETTINGS[setting]
  with torch.no_grad():
    ref = hf.generate(pixel_values=torch.tensor(pixels), output_scores=True,
                      return_dict_in_generate=True, **kw)
  out = edjax.generate(model, params, pixel_values=pixels, **kw)
  assert_same_sequences(np.asarray(out.sequences), to_np(ref.sequences), EOS, PAD)
  if kw.get("num_beams", 1) > 1:
    np.testing.assert_allclose(np.asarray(out.scores), to_np(ref.sequences_scores), atol=1e-5,
                               rtol=0)


def test_beams_finish_at_different_steps():
  """The EOS boost makes beam search exercise finished and unfinished hypotheses together."""
  _, model, params, _ = built("deit2trocr")
  seqs = np.asarray(edjax.generate(model, params, pixel_values=_inputs(model, seed=1)[0],
                                   max_length=10, num_beams=3, num_return_sequences=3).sequences)
  lengths = {int(np.argmax(row[1:] == EOS)) + 2 for row in seqs if (row[1:] == EOS).any()}
  assert len(lengths) >= 2, seqs


@pytest.mark.parametrize("name", ["vit2gpt2-proj", "deit2trocr-sinusoidal"])
def test_export_round_trip_loads_in_transformers(name, tmp_path):
  hf, model, params, _ = built(name)
  edjax.save_pretrained(model, params, str(tmp_path))
  back, info = transformers.VisionEncoderDecoderModel.from_pretrained(
      str(tmp_path), output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  assert back.config.architectures == ["VisionEncoderDecoderModel"]
  pixels, _, dec_in, dec_mask = _inputs(model, seed=2)
  with torch.no_grad():
    a = back.eval()(pixel_values=torch.tensor(pixels), decoder_input_ids=torch.tensor(dec_in)).logits
    b = hf(pixel_values=torch.tensor(pixels), decoder_input_ids=torch.tensor(dec_in)).logits
  np.testing.assert_array_equal(to_np(a), to_np(b))  # lossless: the same float32 weights
  model2, params2 = edjax.from_pretrained(str(tmp_path))
  assert type(model2) is edjax.VisionEncoderDecoderModel
  assert model2.config == model.config


def test_decode_with_cache_equals_teacher_forcing():
  """Token-by-token decoding with the static cache (sinusoidal TrOCR positions count from the
  cache) equals one teacher-forced pass."""
  _, model, params, _ = built("deit2trocr-sinusoidal")
  pixels, _, dec_in, _ = _inputs(model, seed=3)
  full = np.asarray(model.apply({"params": params}, pixel_values=pixels,
                                decoder_input_ids=dec_in).logits)
  enc = model.apply({"params": params}, pixel_values=pixels, method="encode").last_hidden_state
  kv = model.apply({"params": params}, encoder_hidden_states=enc, method="cross_kv")
  cache = model.init_cache(BATCH, TGT_LEN)
  steps = []
  for t in range(TGT_LEN):
    out, mutated = model.apply({"params": params, "cache": cache}, decoder_input_ids=dec_in[:, t:t + 1],
                               cross_kv=kv, decode=True, method="decode", mutable=["cache"])
    cache = mutated["cache"]
    steps.append(np.asarray(out.logits[:, 0]))
  np.testing.assert_allclose(np.stack(steps, 1), full, atol=1e-5, rtol=0)


def test_vision_inputs_errors():
  _, model, params, _ = built("vit2bert")
  pixels = _inputs(model)[0]
  with pytest.raises(ValueError, match="NCHW"):
    model.apply({"params": params}, pixel_values=pixels[0], decoder_input_ids=np.ones((1, 2), int))
  with pytest.raises(ValueError, match="channels-last"):
    model.apply({"params": params}, pixel_values=pixels.transpose(0, 2, 3, 1),
                decoder_input_ids=np.ones((3, 2), int))
  with pytest.raises(ValueError, match="image_size"):
    model.apply({"params": params}, pixel_values=pixels[:, :, :16],
                decoder_input_ids=np.ones((3, 2), int))
  with pytest.raises(ValueError, match="not input_ids"):
    model.apply({"params": params}, input_ids=np.ones((3, 4), int),
                decoder_input_ids=np.ones((3, 2), int))
  with pytest.raises(ValueError, match="pixel_values"):
    edjax.generate(model, params, input_ids=np.ones((3, 4), int), max_length=5)


def test_warm_start_from_vit_and_trocr_checkpoints(tmp_path):
  """from_encoder_decoder_pretrained(ViTModel dir, TrOCRForCausalLM dir) == transformers' own."""
  torch.manual_seed(0)
  vit = transformers.DeiTModel(_vision_config("deit", 32)).eval()
  _randomize(vit, seed=11)
  trocr = transformers.TrOCRForCausalLM(_decoder_config("trocr", 48, 32)).eval()
  _randomize(trocr, seed=12)
  trocr.tie_weights()
  vit.save_pretrained(tmp_path / "deit")
  trocr.save_pretrained(tmp_path / "trocr")
  hf = transformers.VisionEncoderDecoderModel.from_encoder_decoder_pretrained(
      str(tmp_path / "deit"), str(tmp_path / "trocr")).eval()
  model, params, info = edjax.from_encoder_decoder_pretrained(
      str(tmp_path / "deit"), str(tmp_path / "trocr"), output_loading_info=True,
      decoder_start_token_id=START, pad_token_id=PAD, eos_token_id=EOS)
  assert isinstance(model.config, edjax.VisionEncoderDecoderConfig)
  assert not info["encoder"].missing and not info["decoder"].missing
  assert info["decoder"].initialized == []  # TrOCR ships its cross-attention; nothing is fresh
  pixels, _, dec_in, _ = _inputs(model, seed=4)
  with torch.no_grad():
    ref = hf(pixel_values=torch.tensor(pixels), decoder_input_ids=torch.tensor(dec_in)).logits
  out = model.apply({"params": params}, pixel_values=pixels, decoder_input_ids=dec_in)
  np.testing.assert_allclose(np.asarray(out.logits), to_np(ref), atol=LOGITS_TOL, rtol=0)


def test_warm_start_vit_with_bert_decoder_initialises_only_cross_attention(tmp_path):
  torch.manual_seed(0)
  vit = transformers.ViTForImageClassification(_vision_config("vit", 32)).eval()  # 'vit.' prefix
  _randomize(vit, seed=13)
  bert = transformers.BertModel(_decoder_config("bert", 32, 32, is_decoder=False,
                                                add_cross_attention=False))
  vit.save_pretrained(tmp_path / "vit")
  bert.save_pretrained(tmp_path / "bert")
  model, params, info = edjax.from_encoder_decoder_pretrained(
      str(tmp_path / "vit"), str(tmp_path / "bert"), output_loading_info=True)
  assert info["encoder"].unexpected == ["classifier.bias", "classifier.weight"]
  fresh = info["decoder"].initialized
  assert fresh and all("cross_attn" in k or "lm_head" in k or "pooler" in k for k in fresh), fresh
  with torch.no_grad():
    ref = vit.vit(torch.tensor(_inputs(model, seed=5)[0])).last_hidden_state
  enc = model.apply({"params": params}, pixel_values=_inputs(model, seed=5)[0], method="encode")
  np.testing.assert_allclose(np.asarray(enc.last_hidden_state), to_np(ref), atol=LOGITS_TOL, rtol=0)
