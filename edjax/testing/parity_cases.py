"""Parity of edjax against transformers (PyTorch) EncoderDecoderModel: the shared comparison logic.

Used by tests/test_parity.py (asserts) and scripts/parity_table.py (README table). One case =
one tiny random HF EncoderDecoderModel (`edjax.testing.hf_utils`), saved with `save_pretrained`, loaded
with `edjax.from_pretrained`, and run by both on the same seeded, right-padded batch.

Every comparison is a max |diff| over *non-padded* positions only (padded encoder positions /
padded decoder query rows are not part of the contract).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import tempfile
from typing import Any

import numpy as np

import edjax
from edjax.testing.hf_utils import hf_encoder_decoder, to_np

ENCODERS = ("bert", "roberta")
DECODERS = ("bert", "roberta", "gpt2")
ENC_HIDDEN = 32
PROJ_DEC_HIDDEN = 48  # != ENC_HIDDEN: the composite needs enc_to_dec_proj

# Thresholds of the parity contract (never loosen).
LOGITS_TOL = 1e-4
HIDDEN_TOL = 1e-4
ATTN_TOL = 1e-4
LOSS_TOL = 1e-5
GRAD_TOL = 1e-4  # d loss / d weight (tied cases)

BATCH, SRC_LEN, TGT_LEN = 3, 9, 7
ENC_LENGTHS = (SRC_LEN, SRC_LEN - 3, 3)  # right padding: row 0 full, rows 1-2 padded
DEC_LENGTHS = (TGT_LEN, TGT_LEN - 2, 2)


@dataclasses.dataclass(frozen=True)
class Case:
  enc: str
  dec: str
  proj: bool = False  # different widths -> enc_to_dec_proj
  tie: bool = False  # tie_encoder_decoder (same architecture only)
  seed: int = 0

  @property
  def id(self) -> str:
    return f"{self.enc}2{self.dec}" + ("-proj" if self.proj else "") + ("-tied" if self.tie else "")

  @property
  def dec_hidden(self) -> int:
    return PROJ_DEC_HIDDEN if self.proj else ENC_HIDDEN


_SPECS = ([(e, d, proj, False) for e in ENCODERS for d in DECODERS for proj in (False, True)]
          + [("bert", "bert", False, True), ("roberta", "roberta", False, True)])
# A distinct seed per case: different random weights (encoders included) and inputs.
CASES: tuple[Case, ...] = tuple(Case(e, d, proj, tie, seed=i) for i, (e, d, proj, tie) in enumerate(_SPECS))
CASES_BY_ID = {c.id: c for c in CASES}


@dataclasses.dataclass
class Built:
  case: Case
  hf: Any  # transformers.EncoderDecoderModel (eval, fp32)
  model: edjax.EncoderDecoderModel
  params: Any


@functools.lru_cache(maxsize=None)
def build(case: Case) -> Built:
  """HF model (built once per case) -> save_pretrained -> edjax.from_pretrained."""
  hf = hf_encoder_decoder(case.enc, case.dec, ENC_HIDDEN, case.dec_hidden, tie=case.tie,
                          seed=case.seed)
  with tempfile.TemporaryDirectory() as d:
    hf.save_pretrained(d)
    model, params = edjax.from_pretrained(d)
  return Built(case, hf, model, params)


# ----------------------------------------------------------------------------- inputs


def make_inputs(hf, seed: int = 0) -> dict[str, np.ndarray]:
  """Seeded right-padded batch; ids in [4, vocab), pads = each model's pad id (RoBERTa: 1)."""
  rng = np.random.default_rng(seed)
  enc_cfg, dec_cfg = hf.config.encoder, hf.config.decoder
  enc_pad, dec_pad = enc_cfg.pad_token_id, hf.config.pad_token_id
  assert enc_pad is not None and enc_pad < 4 and dec_pad < 4
  enc_mask = (np.arange(SRC_LEN)[None] < np.array(ENC_LENGTHS)[:, None]).astype(np.int64)
  dec_mask = (np.arange(TGT_LEN)[None] < np.array(DEC_LENGTHS)[:, None]).astype(np.int64)
  input_ids = rng.integers(4, enc_cfg.vocab_size, (BATCH, SRC_LEN))
  input_ids = np.where(enc_mask == 1, input_ids, enc_pad)
  decoder_input_ids = rng.integers(4, dec_cfg.vocab_size, (BATCH, TGT_LEN))
  decoder_input_ids = np.where(dec_mask == 1, decoder_input_ids, dec_pad)
  labels = rng.integers(4, dec_cfg.vocab_size, (BATCH, TGT_LEN))
  ignore = rng.random((BATCH, TGT_LEN)) < 0.25  # some -100 among real positions
  ignore[:, 0] = False  # every row keeps at least one label
  ignore[0, 2] = ignore[1, 1] = True  # mid-sequence -100: labels-only decoder inputs get a pad
  # between real tokens (RoBERTa decoder positions skip it)
  labels = np.where((dec_mask == 1) & ~ignore, labels, -100)
  assert (labels == -100).any() and ((labels == -100) & (dec_mask == 1)).any()
  return dict(input_ids=input_ids, attention_mask=enc_mask, decoder_input_ids=decoder_input_ids,
              decoder_attention_mask=dec_mask, labels=labels)


def left_pad(ids: np.ndarray, mask: np.ndarray, pad_id: int) -> dict[str, np.ndarray]:
  """The same rows with their real tokens moved to the end (pads first)."""
  out_ids, out_mask = np.full_like(ids, pad_id), np.zeros_like(mask)
  for i, n in enumerate(mask.sum(axis=1)):
    out_ids[i, ids.shape[1] - n:] = ids[i, :n]
    out_mask[i, ids.shape[1] - n:] = 1
  return dict(input_ids=out_ids, attention_mask=out_mask)


# ----------------------------------------------------------------------------- forwards


@contextlib.contextmanager
def _hf_quiet():
  import transformers
  import warnings
  level = transformers.logging.get_verbosity()
  transformers.logging.set_verbosity_error()
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      yield
  finally:
    transformers.logging.set_verbosity(level)


def hf_forward(hf, inputs: dict, attentions: bool = False, **overrides) -> dict[str, Any]:
  """HF outputs as numpy. attentions=True switches the model to eager attention first (SDPA
  returns no attention weights); otherwise the default (SDPA) implementation runs."""
  import torch
  kwargs = {k: torch.as_tensor(v) for k, v in inputs.items()}
  kwargs.update({k: (None if v is None else torch.as_tensor(v)) for k, v in overrides.items()})
  kwargs = {k: v for k, v in kwargs.items() if v is not None}
  with _hf_quiet(), torch.no_grad():
    if attentions:
      hf.set_attn_implementation("eager")
    try:
      out = hf(**kwargs, output_hidden_states=True, output_attentions=attentions)
    finally:
      if attentions:
        hf.set_attn_implementation("sdpa")
  return _to_numpy(out)


def edjax_forward(built: Built, inputs: dict, attentions: bool = False, **overrides) -> dict[str, Any]:
  kwargs = {k: np.asarray(v, np.int32) for k, v in inputs.items()}
  kwargs.update(overrides)
  kwargs = {k: v for k, v in kwargs.items() if v is not None}
  out = built.model.apply({"params": built.params}, **kwargs, output_hidden_states=True,
                          output_attentions=attentions)
  return _to_numpy(out)


def _to_numpy(out) -> dict[str, Any]:
  fields = ("logits", "loss", "encoder_last_hidden_state", "encoder_hidden_states",
            "encoder_attentions", "decoder_hidden_states", "decoder_attentions", "cross_attentions")
  res = {}
  for f in fields:
    v = getattr(out, f, None)
    if v is None:
      res[f] = None
    elif isinstance(v, (tuple, list)):
      res[f] = tuple(None if x is None else _np(x) for x in v)
    else:
      res[f] = _np(v)
  return res


def _np(x) -> np.ndarray:
  if hasattr(x, "detach"):
    return to_np(x).astype(np.float64)
  return np.asarray(x, np.float64)


# ----------------------------------------------------------------------------- diffs


def masked_max_diff(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None, axis: int = 1) -> float:
  """max |a - b| over positions where mask == 1. mask [batch, length] indexes a's axes 0 and `axis`
  (axis=1 for [batch, length, ...] states, axis=2 for [batch, heads, q_len, k_len] query rows)."""
  assert a is not None and b is not None, "an output is missing"
  assert a.shape == b.shape, f"shape mismatch {a.shape} vs {b.shape}"
  d = np.abs(a - b)
  if mask is not None:
    d = np.moveaxis(d, axis, 1)[np.asarray(mask) == 1]
  return float(d.max())


def _per_item(a_seq, b_seq, mask, axis=1) -> list[float]:
  assert a_seq is not None and b_seq is not None, "an output tuple is missing"
  assert len(a_seq) == len(b_seq), f"{len(a_seq)} vs {len(b_seq)} items"
  return [masked_max_diff(a, b, mask, axis) for a, b in zip(a_seq, b_seq)]


@dataclasses.dataclass
class Diffs:
  """max |diff| of one case (lists: one entry per layer / hidden state)."""

  logits: float
  loss: float
  hf_loss: float
  encoder_last_hidden: float
  encoder_hidden: list[float]
  decoder_hidden: list[float]
  # labels-only call (decoder inputs = shift_tokens_right(labels), mask derived from pads)
  labels_only_logits: float
  labels_only_loss: float
  # no masks at all (unpadded rows only: row 0)
  unmasked_logits: float
  # encoder inputs left-padded instead of right-padded
  left_padded_logits: float
  left_padded_encoder_hidden: list[float]
  # attentions (eager HF)
  encoder_attentions: list[float] = dataclasses.field(default_factory=list)
  decoder_attentions: list[float] = dataclasses.field(default_factory=list)
  cross_attentions: list[float] = dataclasses.field(default_factory=list)

  @property
  def encoder_hidden_max(self) -> float:
    return max(self.encoder_hidden)


@functools.lru_cache(maxsize=None)
def compare(case: Case) -> Diffs:
  """Runs every comparison of `case` once (cached per process)."""
  built = build(case)
  inputs = make_inputs(built.hf, seed=case.seed)
  enc_mask, dec_mask = inputs["attention_mask"], inputs["decoder_attention_mask"]

  ref = hf_forward(built.hf, inputs)  # default (SDPA) attention: what users run
  ref_att = hf_forward(built.hf, inputs, attentions=True)  # eager: returns attention weights
  got = edjax_forward(built, inputs, attentions=True)

  # left-padded encoder inputs: RoBERTa's padding-aware positions shift the real tokens.
  left_in = dict(inputs, **left_pad(inputs["input_ids"], enc_mask, built.hf.config.encoder.pad_token_id))
  ref_left = hf_forward(built.hf, left_in)
  got_left = edjax_forward(built, left_in)

  # labels only: both derive decoder_input_ids / decoder_attention_mask from labels.
  lab_in = dict(input_ids=inputs["input_ids"], attention_mask=enc_mask, labels=inputs["labels"])
  ref_lab = hf_forward(built.hf, lab_in)
  got_lab = edjax_forward(built, lab_in)
  lab_mask = (inputs["labels"] != -100).astype(np.int64)

  # no masks: only row 0 (no padding) is meaningful.
  nomask_in = dict(input_ids=inputs["input_ids"], decoder_input_ids=inputs["decoder_input_ids"])
  ref_nm = hf_forward(built.hf, nomask_in)
  got_nm = edjax_forward(built, nomask_in)
  row0 = np.zeros_like(dec_mask)
  row0[0] = 1


  return Diffs(
      logits=masked_max_diff(got["logits"], ref["logits"], dec_mask),
      loss=abs(float(got["loss"]) - float(ref["loss"])),
      hf_loss=float(ref["loss"]),
      encoder_last_hidden=masked_max_diff(got["encoder_last_hidden_state"],
                                          ref["encoder_last_hidden_state"], enc_mask),
      encoder_hidden=_per_item(got["encoder_hidden_states"], ref["encoder_hidden_states"], enc_mask),
      decoder_hidden=_per_item(got["decoder_hidden_states"], ref["decoder_hidden_states"], dec_mask),
      labels_only_logits=masked_max_diff(got_lab["logits"], ref_lab["logits"], lab_mask),
      labels_only_loss=abs(float(got_lab["loss"]) - float(ref_lab["loss"])),
      unmasked_logits=masked_max_diff(got_nm["logits"], ref_nm["logits"], row0),
      left_padded_logits=masked_max_diff(got_left["logits"], ref_left["logits"], dec_mask),
      left_padded_encoder_hidden=_per_item(got_left["encoder_hidden_states"],
                                           ref_left["encoder_hidden_states"],
                                           left_in["attention_mask"]),
      encoder_attentions=_per_item(got["encoder_attentions"], ref_att["encoder_attentions"],
                                   enc_mask, axis=2),
      decoder_attentions=_per_item(got["decoder_attentions"], ref_att["decoder_attentions"],
                                   dec_mask, axis=2),
      cross_attentions=_per_item(got["cross_attentions"], ref_att["cross_attentions"],
                                 dec_mask, axis=2),
  )


# ----------------------------------------------------------------------------- weight structure


def hf_unique_param_count(hf) -> int:
  """Elements of the HF model's parameters, each shared (tied) tensor counted once."""
  return sum(p.numel() for p in hf.parameters())


def edjax_param_count(params) -> int:
  import jax
  return sum(int(np.prod(np.shape(x))) for x in jax.tree_util.tree_leaves(params))


def hf_tied_names(hf) -> list[str]:
  """Encoder parameter names that are the *same tensor* as the decoder body's (HF tying)."""
  base = getattr(hf.decoder, hf.decoder.base_model_prefix)
  dec_params = dict(base.named_parameters())
  return [n for n, p in hf.encoder.named_parameters() if n in dec_params and dec_params[n] is p]


@functools.lru_cache(maxsize=None)
def gradient_diffs(case: Case) -> dict[str, float]:
  """max |d loss / d w| diff per HF parameter name (every name, tied ones under both names).

  HF: loss.backward() on the padded batch (a shared nn.Parameter accumulates both uses).
  edjax: jax.grad w.r.t. the canonical (tied) tree, mapped to HF names by the converter's rules.
  """
  import jax
  import torch
  from flax import traverse_util
  from edjax import convert

  built = build(case)
  inputs = make_inputs(built.hf, seed=case.seed)
  hf = built.hf
  hf.zero_grad(set_to_none=True)
  with _hf_quiet():
    loss = hf(**{k: torch.as_tensor(v) for k, v in inputs.items()}).loss
  loss.backward()
  ref = {n: (np.zeros(tuple(p.shape)) if p.grad is None else to_np(p.grad).astype(np.float64))
         for n, p in hf.named_parameters(remove_duplicate=False)}
  hf.zero_grad(set_to_none=True)

  kwargs = {k: np.asarray(v, np.int32) for k, v in inputs.items()}
  grads = jax.jit(jax.grad(lambda p: built.model.apply({"params": p}, **kwargs).loss))(built.params)
  full = traverse_util.flatten_dict(built.model.untie_params(jax.device_get(grads)), sep="/")
  got = convert.flax_to_hf({k: np.asarray(v, np.float64) for k, v in full.items()},
                           convert.encoder_decoder_rules(built.model.config))
  missing = sorted(set(n for n, p in hf.named_parameters()) - set(got))
  # HF's LM-head decoder weight is the (tied) word embedding: no rule of its own.
  missing = [n for n in missing if not n.endswith(("predictions.decoder.weight", "lm_head.decoder.weight"))]
  assert not missing, f"no edjax gradient for HF parameters {missing[:6]}"
  return {n: float(np.max(np.abs(got[n] - ref[n]))) for n in got if n in ref}


# ----------------------------------------------------------------------------- table


def markdown_table(cases=CASES) -> str:
  rows = ["| pair | enc_to_dec_proj | tied | logits max\\|diff\\| | encoder hidden max\\|diff\\| "
          "| loss \\|diff\\| |",
          "|---|---|---|---|---|---|"]
  for case in cases:
    d = compare(case)
    rows.append(f"| {case.enc}2{case.dec} | {'yes' if case.proj else 'no'} | "
                f"{'yes' if case.tie else 'no'} | {d.logits:.2e} | {d.encoder_hidden_max:.2e} | "
                f"{d.loss:.2e} |")
  return "\n".join(rows)
