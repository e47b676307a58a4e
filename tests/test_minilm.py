"""The real checkpoint: all-MiniLM-L6-v2 (6 layers x 384, BERT vocab) as encoder and decoder.

Warm-starting reuses every tensor of the file (the decoder all but the pooler, which
BertLMHeadModel has no place for, as in transformers); an HF-made MiniLM bert2bert saved by
transformers loads with `edjax.from_pretrained` and matches transformers on real tokenized
WikiSplit sentences (padded batch): logits within 1e-4, loss within 1e-5.
"""

from __future__ import annotations

import flax.traverse_util as traverse_util
import jax
import numpy as np
import pytest
import torch
import transformers

import edjax
from edjax import convert
from edjax.testing.hf_utils import to_np

CLS, SEP, PAD = 101, 102, 0


@pytest.fixture(scope="module")
def hf_bert2bert(minilm_dir, tmp_path_factory):
  """transformers' own MiniLM bert2bert warm start (seeded), saved by transformers."""
  torch.manual_seed(0)
  model = transformers.EncoderDecoderModel.from_encoder_decoder_pretrained(minilm_dir, minilm_dir)
  model.config.decoder_start_token_id, model.config.pad_token_id = CLS, PAD
  model.config.eos_token_id = SEP
  path = str(tmp_path_factory.mktemp("minilm") / "bert2bert")
  model.save_pretrained(path)
  return model.eval(), path


@pytest.fixture(scope="module")
def batch(minilm_dir, wiki_sentences):
  """Real WikiSplit sentences tokenized by MiniLM's tokenizer: padded sources, -100 labels."""
  tok = transformers.BertTokenizerFast.from_pretrained(minilm_dir)
  src = tok([s for s, _ in wiki_sentences], padding=True, return_tensors="np")
  tgt = tok([t for _, t in wiki_sentences], padding=True, return_tensors="np")
  assert (src["attention_mask"] == 0).any() and (tgt["attention_mask"] == 0).any()  # padded
  labels = np.where(tgt["attention_mask"] == 1, tgt["input_ids"], -100)
  return src["input_ids"].astype(np.int32), src["attention_mask"].astype(np.int32), labels


def test_warm_start_reuses_every_checkpoint_tensor(minilm_dir, hf_bert2bert):
  model, params, info = edjax.from_encoder_decoder_pretrained(minilm_dir, minilm_dir,
                                                              output_loading_info=True)
  state = convert.read_state_dict(minilm_dir)
  assert len(state) >= 100
  tensors = {k for k in state if k != "embeddings.position_ids"}  # a buffer, not a parameter
  assert len(tensors) == len(state) - 1 == 103
  enc, dec = info["encoder"], info["decoder"]
  assert sorted(enc.used) == sorted(tensors)
  assert enc.missing == enc.unexpected == enc.mismatched == []
  pooler = {k for k in tensors if k.startswith("pooler.")}
  assert pooler == {"pooler.dense.weight", "pooler.dense.bias"}
  assert sorted(dec.used) == sorted("bert." + k for k in tensors - pooler)
  assert sorted(dec.unexpected) == sorted("bert." + k for k in pooler)
  # Fresh in the decoder, as in transformers: 6 layers of cross-attention and the LM head transform.
  assert len([m for m in dec.missing if ".crossattention." in m]) == 6 * 10
  assert sorted(m for m in dec.missing if ".crossattention." not in m) == sorted(
      f"cls.predictions.{n}" for n in ("bias", "transform.dense.weight", "transform.dense.bias",
                                       "transform.LayerNorm.weight", "transform.LayerNorm.bias"))
  initialized = set(enc.initialized) | set(dec.initialized)
  assert len(initialized) == 65
  assert all("/cross_attn" in p or p.startswith("decoder/lm_head/") for p in initialized)

  # The values: what transformers' own warm start holds, tensor by tensor, for all reused ones.
  hf, _ = hf_bert2bert
  hf_state = hf.state_dict()
  full = traverse_util.flatten_dict(model.untie_params(params), sep="/")
  ours = convert.flax_to_hf({k: np.asarray(v) for k, v in full.items()},
                            convert.encoder_decoder_rules(model.config))
  reused = ["encoder." + k for k in enc.used] + ["decoder." + k for k in dec.used]
  assert len(reused) == 103 + 101
  for name in reused:
    np.testing.assert_array_equal(ours[name], to_np(hf_state[name]), err_msg=name)
  np.testing.assert_array_equal(ours["decoder.bert.encoder.layer.5.output.dense.weight"],
                                state["encoder.layer.5.output.dense.weight"])


def test_hf_bert2bert_logits_and_loss_match_transformers(hf_bert2bert, batch):
  hf, path = hf_bert2bert
  model, params, report = edjax.from_pretrained(path, output_loading_info=True)
  assert report.missing == report.unexpected == report.mismatched == report.initialized == []
  cfg = model.config
  assert (cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id) == (CLS, PAD, SEP)
  assert (cfg.encoder.num_hidden_layers, cfg.encoder.hidden_size) == (6, 384)
  input_ids, attention_mask, labels = batch

  @jax.jit
  def forward(params, input_ids, attention_mask, labels):
    out = model.apply({"params": params}, input_ids=input_ids, attention_mask=attention_mask,
                      labels=labels)
    return out.logits, out.loss

  logits, loss = forward(params, input_ids, attention_mask, labels)
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(input_ids, dtype=torch.long),
             attention_mask=torch.tensor(attention_mask, dtype=torch.long),
             labels=torch.tensor(labels, dtype=torch.long))
  logits_diff = float(np.abs(np.asarray(logits) - to_np(ref.logits)).max())
  loss_diff = abs(float(loss) - float(ref.loss))
  print(f"MiniLM bert2bert vs transformers: max |logits diff| {logits_diff:.3g}, "
        f"|loss diff| {loss_diff:.3g} (loss {float(ref.loss):.6f})")
  assert logits.shape == (*labels.shape, 30522)
  assert logits_diff <= 1e-4
  assert loss_diff <= 1e-5
