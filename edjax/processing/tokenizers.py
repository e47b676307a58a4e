"""Tokenizers from local files via the `tokenizers` library (no transformers needed).

Reads, in order of preference, an HF `tokenizer.json`; a WordPiece `vocab.txt` (BERT); or a
byte-level BPE `vocab.json` + `merges.txt` (GPT-2, RoBERTa). Special tokens come from
`special_tokens_map.json` / `tokenizer_config.json` when present.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors


def _read_json(path: str) -> dict:
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _token_str(value) -> str | None:
  if isinstance(value, dict):  # AddedToken serialisation
    return value.get("content")
  return value


class Tokenizer:
  """A `tokenizers.Tokenizer` plus the special ids that seq2seq code needs.

  Attributes: cls_id / bos_id (sequence start), sep_id / eos_id (sequence end), pad_id, vocab_size.
  """

  def __init__(self, tok: tokenizers.Tokenizer, special: dict[str, str | None]):
    self.tok = tok
    self.tok.no_padding()
    self.tok.no_truncation()
    ids = {k: (tok.token_to_id(v) if v is not None else None) for k, v in special.items()}
    self.bos_id = ids.get("bos_token") if ids.get("bos_token") is not None else ids.get("cls_token")
    self.eos_id = ids.get("eos_token") if ids.get("eos_token") is not None else ids.get("sep_token")
    self.pad_id = ids.get("pad_token") if ids.get("pad_token") is not None else 0
    self.unk_id = ids.get("unk_token")
    self.vocab_size = tok.get_vocab_size()

  @classmethod
  def from_dir(cls, path: str) -> "Tokenizer":
    """Loads the tokenizer files of an HF model directory."""
    if not os.path.isdir(path):
      raise FileNotFoundError(f"tokenizer directory {path} does not exist")
    config = _read_json(os.path.join(path, "tokenizer_config.json"))
    special = {k: _token_str(v) for k, v in _read_json(
        os.path.join(path, "special_tokens_map.json")).items()}
    for k in ("cls_token", "sep_token", "pad_token", "bos_token", "eos_token", "unk_token"):
      if special.get(k) is None and config.get(k) is not None:
        special[k] = _token_str(config[k])
    if os.path.exists(os.path.join(path, "tokenizer.json")):
      tok = tokenizers.Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    elif os.path.exists(os.path.join(path, "vocab.txt")):
      tok = _wordpiece(os.path.join(path, "vocab.txt"), config.get("do_lower_case", True))
      special = {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                 "unk_token": "[UNK]", **{k: v for k, v in special.items() if v}}
    elif os.path.exists(os.path.join(path, "vocab.json")) and os.path.exists(
        os.path.join(path, "merges.txt")):
      tok = _byte_bpe(os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt"),
                      add_prefix_space=config.get("add_prefix_space", False))
      special = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                 **{k: v for k, v in special.items() if v}}
    else:
      raise FileNotFoundError(f"no tokenizer in {path}: expected tokenizer.json, vocab.txt, or "
                              "vocab.json + merges.txt")
    return cls(tok, special)

  def encode_batch(self, texts: Sequence[str], max_length: int,
                   pad_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Texts -> (ids, mask) [batch, pad_to or longest], truncated to max_length, right-padded."""
    encs = self.tok.encode_batch(list(texts))
    rows = [e.ids[:max_length] for e in encs]
    if max_length and any(len(e.ids) > max_length for e in encs) and self.eos_id is not None:
      # keep the end-of-sequence token of truncated inputs, as HF's truncation does
      rows = [r if len(e.ids) <= max_length or e.ids[-1] != self.eos_id else r[:-1] + [self.eos_id]
              for r, e in zip(rows, encs)]
    width = pad_to or max(1, max(len(r) for r in rows))
    return self._pad(rows, width)

  def char_pieces(self, text: str) -> list[int]:
    """`text` as one WordPiece token per character: 'gun' -> g ##u ##n (no special tokens).

    The pieces are entries of the same pretrained vocabulary and decode (`decode_batch`) to the
    same text as the usual tokenization; a word with a character the vocabulary lacks keeps its
    usual tokens. For recognisers (OCR) that must spell words they have rarely seen. WordPiece
    vocabularies only (BERT / MiniLM); a ValueError names the tokenizer otherwise.
    """
    if type(self.tok.model).__name__ != "WordPiece":
      raise ValueError(f"character targets need a WordPiece vocabulary (BERT-style), this "
                       f"tokenizer is {type(self.tok.model).__name__}: use subword targets")
    norm = self.tok.normalizer.normalize_str(text) if self.tok.normalizer is not None else text
    words = ([w for w, _ in self.tok.pre_tokenizer.pre_tokenize_str(norm)]
             if self.tok.pre_tokenizer is not None else norm.split())
    ids: list[int] = []
    for word in words:
      pieces = [self.tok.token_to_id(c if i == 0 else "##" + c) for i, c in enumerate(word)]
      if any(p is None for p in pieces):
        pieces = self.tok.encode(word, add_special_tokens=False).ids
      ids += pieces
    return ids

  def encode_targets(self, texts: Sequence[str], max_length: int,
                     pad_to: int | None = None, characters: bool = False
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Texts -> seq2seq labels (ids, mask) [batch, pad_to or longest], right-padded with pad_id.

    A row is the text's tokens without any special token the tokenizer would add (no leading
    [CLS] / BOS), truncated to max_length - 1, then eos_id ([SEP] for BERT, </s> for RoBERTa,
    <|endoftext|> for GPT-2): HF's label convention, where the model feeds
    `shift_tokens_right(labels, pad_id, decoder_start_token_id=bos_id)` to the decoder. Without an
    eos_id the row is the tokens truncated to max_length. Set ids to -100 where mask == 0 for a loss.
    characters=True spells every word one vocabulary piece per character (`char_pieces`).
    """
    if max_length < 1:
      raise ValueError(f"max_length must be >= 1, got {max_length}")
    if characters:
      tokens = [self.char_pieces(t) for t in texts]
    else:
      tokens = [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]
    if self.eos_id is None:
      rows = [t[:max_length] for t in tokens]
    else:
      rows = [t[:max_length - 1] + [self.eos_id] for t in tokens]
    longest = max((len(r) for r in rows), default=0)
    if pad_to is not None and pad_to < longest:
      raise ValueError(f"pad_to={pad_to} is shorter than the longest row ({longest} ids)")
    width = pad_to or max(1, longest)
    return self._pad(rows, width)

  def _pad(self, rows: list[list[int]], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pads token rows to [len(rows), width] with pad_id; mask 1 on tokens."""
    ids = np.full((len(rows), width), self.pad_id, np.int32)
    mask = np.zeros((len(rows), width), np.int32)
    for i, r in enumerate(rows):
      ids[i, :len(r)] = r
      mask[i, :len(r)] = 1
    return ids, mask

  def decode_batch(self, ids, skip_special_tokens: bool = True) -> list[str]:
    """Token ids [batch, length] -> texts (special tokens and padding dropped)."""
    return self.tok.decode_batch([list(map(int, row)) for row in np.asarray(ids)],
                                 skip_special_tokens=skip_special_tokens)


def roundtrip_texts(texts: Sequence[str], tokenizer: Tokenizer) -> list[str]:
  """Texts as `tokenizer.decode_batch` would print them: decode(encode(text)), no truncation.

  Detokenized predictions are lowercased by uncased vocabularies (MiniLM, bert-base-uncased) and
  respaced by the WordPiece / BPE decoders (WikiSplit's "established , originally" comes back as
  "established, originally"); pass references (and, for SARI, sources) through this so that
  metrics compare like with like and measure the model, not the tokenizer. [UNK] pieces are
  dropped as in predictions.
  """
  encs = tokenizer.tok.encode_batch(list(texts), add_special_tokens=False)
  return tokenizer.tok.decode_batch([e.ids for e in encs], skip_special_tokens=True)


def roundtrip_references(references: Sequence, tokenizer: Tokenizer) -> list:
  """`roundtrip_texts` of references: one string per example, or (multi-reference sets such as
  COCO captions) a list of strings per example, each list kept as a list."""
  if not references or isinstance(references[0], str):
    return roundtrip_texts(references, tokenizer) if references else []
  flat = [ref for refs in references for ref in refs]
  decoded = iter(roundtrip_texts(flat, tokenizer) if flat else [])
  return [[next(decoded) for _ in refs] for refs in references]


def _wordpiece(vocab_path: str, lowercase: bool) -> tokenizers.Tokenizer:
  tok = tokenizers.Tokenizer(models.WordPiece.from_file(vocab_path, unk_token="[UNK]"))
  tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")),
                                                 ("[CLS]", tok.token_to_id("[CLS]")))
  tok.decoder = decoders.WordPiece()
  return tok


def _byte_bpe(vocab_path: str, merges_path: str, add_prefix_space: bool) -> tokenizers.Tokenizer:
  tok = tokenizers.Tokenizer(models.BPE.from_file(vocab_path, merges_path))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
  tok.decoder = decoders.ByteLevel()
  return tok
