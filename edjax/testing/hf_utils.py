"""Builders of tiny random transformers (PyTorch) models: the parity oracle."""

from __future__ import annotations

import numpy as np
import torch
import transformers

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)


def tiny_hf_config(model_type: str, hidden: int = 32, vocab: int = 99, decoder: bool = False,
                   **overrides):
  """A small transformers config of `model_type` ('bert' | 'roberta' | 'gpt2' | 'bart' | 'mbart' |
  'xlm-roberta' | 'camembert' | 'bert-generation' | 'electra')."""
  extra = dict(is_decoder=True, add_cross_attention=True) if decoder else {}
  if model_type == "bert":
    cfg = transformers.BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=37,
                                  max_position_embeddings=64, **extra)
  elif model_type == "roberta":
    cfg = transformers.RobertaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=37,
                                     max_position_embeddings=66, **extra)
  elif model_type == "gpt2":
    cfg = transformers.GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=2, n_head=4,
                                  n_positions=64, bos_token_id=vocab - 1, eos_token_id=vocab - 1,
                                  pad_token_id=0, **extra)
  elif model_type in ("bart", "mbart"):
    cls = transformers.BartConfig if model_type == "bart" else transformers.MBartConfig
    cfg = cls(vocab_size=vocab, d_model=hidden, decoder_layers=2, decoder_attention_heads=4,
              decoder_ffn_dim=37, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=37,
              max_position_embeddings=64, **extra)  # encoder_layers = decoder_layers: HF sizes
    # its decode cache by num_hidden_layers, which BartConfig aliases to encoder_layers
  elif model_type in ("xlm-roberta", "camembert"):
    cls = transformers.XLMRobertaConfig if model_type == "xlm-roberta" else transformers.CamembertConfig
    cfg = cls(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=37, max_position_embeddings=66, **extra)
  elif model_type == "bert-generation":
    cfg = transformers.BertGenerationConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=2,
                                            num_attention_heads=4, intermediate_size=37,
                                            max_position_embeddings=64, **extra)
  elif model_type == "electra":  # embeddings narrower than the layers: embeddings_project
    cfg = transformers.ElectraConfig(vocab_size=vocab, embedding_size=16, hidden_size=hidden,
                                     num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                                     max_position_embeddings=64, **extra)
  else:
    raise ValueError(model_type)
  for k, v in overrides.items():
    setattr(cfg, k, v)
  return cfg


def randomize_(model: torch.nn.Module, seed: int = 0, std: float = 0.2) -> None:
  """Replaces every parameter by seeded noise, LayerNorms and biases included, so that a
  converter that drops or swaps a tensor cannot pass a parity check by luck."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen) * std
      if name.endswith("LayerNorm.weight") or ".ln_" in name or "layer_norm.weight" in name:
        p.copy_(1.0 + noise)
      else:
        p.copy_(noise)


def hf_encoder_decoder(enc_type: str, dec_type: str, enc_hidden: int = 32, dec_hidden: int = 32,
                       tie: bool = False, seed: int = 0, **dec_overrides):
  """A random transformers.EncoderDecoderModel in eval mode (fp32)."""
  torch.manual_seed(seed)
  enc = tiny_hf_config(enc_type, enc_hidden)
  dec = tiny_hf_config(dec_type, dec_hidden, vocab=101 if dec_type == "gpt2" else 99, decoder=True,
                       **dec_overrides)
  cfg = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(
      enc, dec, tie_encoder_decoder=tie)
  cfg.decoder_start_token_id = 2
  cfg.pad_token_id = 0 if dec_type != "roberta" else 1
  cfg.eos_token_id = 3
  model = transformers.EncoderDecoderModel(config=cfg)
  randomize_(model, seed)
  model.tie_weights()
  return model.eval()


def to_np(t) -> np.ndarray:
  return t.detach().cpu().numpy()


def assert_same_sequences(ours: np.ndarray, theirs: np.ndarray, eos: int, pad: int) -> None:
  """Identical tokens up to and including each row's EOS (or HF's length); pad after that.

  HF trims its output to the longest returned row and fills finished rows with
  `pad_token_id or eos_token_id`; edjax returns max_length columns right-padded with pad.
  """
  assert ours.shape[0] == theirs.shape[0], (ours.shape, theirs.shape)
  for a, b in zip(ours, theirs):
    eos_at = np.nonzero(b[1:] == eos)[0]
    end = eos_at[0] + 2 if len(eos_at) else len(b)
    np.testing.assert_array_equal(a[:end], b[:end])
    assert np.all(a[end:] == pad), (a, b)
