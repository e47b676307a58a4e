"""Tokenizers from local files via the `tokenizers` library (no transformers needed).

Reads, in order of preference, an HF `tokenizer.json`; a SentencePiece model (`spiece.model`,
`sentencepiece.bpe.model`: BertGeneration, XLM-RoBERTa, CamemBERT checkpoints), converted to a
`tokenizers` object the way transformers' `convert_slow_tokenizer` does; a WordPiece `vocab.txt`
(BERT); or a byte-level BPE `vocab.json` + `merges.txt` (GPT-2, RoBERTa). Special tokens come
from `special_tokens_map.json` / `tokenizer_config.json` when present.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np
import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors

# SentencePiece model files as HF checkpoints ship them (BertGeneration / T5: spiece.model; XLM-R,
# CamemBERT: sentencepiece.bpe.model).
SPM_FILES = ("spiece.model", "sentencepiece.bpe.model", "sentencepiece.model")
# Every file `Tokenizer.from_dir` may read: what an export must copy next to the weights.
TOKENIZER_FILES = ("tokenizer.json", *SPM_FILES, "vocab.txt", "vocab.json", "merges.txt",
                   "special_tokens_map.json", "tokenizer_config.json")
# How a SentencePiece vocabulary maps to the checkpoint's ids, by transformers' tokenizer class
# (tokenizer_config.json) or, failing that, by model_type (config.json):
#   plain      the SentencePiece ids as they are (BertGenerationTokenizer), no special tokens added
#   fairseq    <s>=0 <pad>=1 </s>=2 <unk>=3, then SentencePiece's pieces[3:] (ids + 1), <mask>
#              last; `<s> text </s>` (XLMRobertaTokenizer)
#   camembert  <s>NOTUSED <pad> </s>NOTUSED <unk> <unk>NOTUSED, pieces[1:] (ids + 4), <mask>
#              last; `<s> text </s>` (CamembertTokenizer)
SPM_LAYOUTS = {"BertGenerationTokenizer": "plain", "XLMRobertaTokenizer": "fairseq",
               "CamembertTokenizer": "camembert"}
SPM_MODEL_TYPES = {"bert-generation": "plain", "xlm-roberta": "fairseq", "camembert": "camembert"}
_SPM_SPECIALS = {
    "plain": dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                  sep_token="<::::>"),
    "fairseq": dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                    cls_token="<s>", sep_token="</s>", mask_token="<mask>"),
}
_SPM_SPECIALS["camembert"] = _SPM_SPECIALS["fairseq"]


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

  def __init__(self, tok: tokenizers.Tokenizer, special: dict[str, str | None],
               clean_up_tokenization_spaces: bool = False):
    self.tok = tok
    # transformers' decode then joins " ." -> "." etc. when the checkpoint's tokenizer_config.json
    # says so; the WordPiece decoder already does it (its `cleanup`), the others do not.
    self.clean_up_spaces = bool(clean_up_tokenization_spaces) and not isinstance(
        tok.decoder, decoders.WordPiece)
    self.tok.no_padding()
    self.tok.no_truncation()
    # (additional_special_tokens, a list, names no single id)
    ids = {k: (tok.token_to_id(v) if isinstance(v, str) else None) for k, v in special.items()}
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
    spm_file = next((os.path.join(path, n) for n in SPM_FILES
                     if os.path.exists(os.path.join(path, n))), None)
    if os.path.exists(os.path.join(path, "tokenizer.json")):
      tok = tokenizers.Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    elif spm_file is not None:
      layout = _spm_layout(path, config)
      special = {**_SPM_SPECIALS[layout], **{k: v for k, v in special.items() if v}}
      tok = _sentencepiece(spm_file, layout, config.get("add_prefix_space", True))
      _add_tokens(tok, config.get("added_tokens_decoder", {}), special)
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
      raise FileNotFoundError(f"no tokenizer in {path}: expected tokenizer.json, a SentencePiece "
                              f"model ({' / '.join(SPM_FILES)}), vocab.txt, or vocab.json + "
                              "merges.txt")
    return cls(tok, special, config.get("clean_up_tokenization_spaces", False))

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
    return self._decode([list(map(int, row)) for row in np.asarray(ids)], skip_special_tokens)

  def _decode(self, rows: list[list[int]], skip_special_tokens: bool = True) -> list[str]:
    texts = self.tok.decode_batch(rows, skip_special_tokens=skip_special_tokens)
    return [clean_up_tokenization(t) for t in texts] if self.clean_up_spaces else texts


def roundtrip_texts(texts: Sequence[str], tokenizer: Tokenizer) -> list[str]:
  """Texts as `tokenizer.decode_batch` would print them: decode(encode(text)), no truncation.

  Detokenized predictions are lowercased by uncased vocabularies (MiniLM, bert-base-uncased) and
  respaced by the WordPiece / BPE decoders (WikiSplit's "established , originally" comes back as
  "established, originally"); pass references (and, for SARI, sources) through this so that
  metrics compare like with like and measure the model, not the tokenizer. [UNK] pieces are
  dropped as in predictions.
  """
  encs = tokenizer.tok.encode_batch(list(texts), add_special_tokens=False)
  return tokenizer._decode([e.ids for e in encs], skip_special_tokens=True)


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


def clean_up_tokenization(text: str) -> str:
  """transformers' `clean_up_tokenization`: no space before punctuation and English clitics."""
  for old, new in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                   (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
    text = text.replace(old, new)
  return text


def _spm_layout(path: str, config: dict) -> str:
  """The id layout (SPM_LAYOUTS) of the SentencePiece checkpoint in `path`."""
  name = config.get("tokenizer_class") or ""
  name = name[:-len("Fast")] if name.endswith("Fast") else name
  if name in SPM_LAYOUTS:
    return SPM_LAYOUTS[name]
  model = _read_json(os.path.join(path, "config.json"))
  if model.get("model_type") == "encoder-decoder":
    # an EncoderDecoderModel dir (google/roberta2roberta_L-24_wikisplit ships only config.json
    # and spiece.model): its encoder's type, as transformers' AutoTokenizer picks
    model = model.get("encoder") or {}
  elif model.get("model_type") == "vision-encoder-decoder":  # text is the decoder's
    model = model.get("decoder") or {}
  model_type = model.get("model_type")
  if not name and model_type in SPM_MODEL_TYPES:
    return SPM_MODEL_TYPES[model_type]
  raise ValueError(
      f"{path}: a SentencePiece model of tokenizer_class {name or None!r} (model_type "
      f"{model_type!r}); edjax maps the ids of {sorted(SPM_LAYOUTS)} (model types "
      f"{sorted(SPM_MODEL_TYPES)}): save the tokenizer with transformers' fast tokenizer "
      "(tokenizer.json) to load any other")


def _sentencepiece(model_file: str, layout: str, add_prefix_space: bool) -> tokenizers.Tokenizer:
  """A SentencePiece model file as a `tokenizers.Tokenizer`: transformers' SpmConverter (and its
  XLMRobertaConverter / CamembertConverter vocabularies) on the model's protobuf, so the ids and
  pieces equal transformers' slow (sentencepiece) and fast tokenizers of that checkpoint."""
  try:
    from sentencepiece import sentencepiece_model_pb2
  except ImportError as e:  # pragma: no cover - an install_requires pin
    raise ImportError(f"reading {model_file} needs the sentencepiece package "
                      "(pip install sentencepiece; edjax pins it)") from e
  proto = sentencepiece_model_pb2.ModelProto()
  with open(model_file, "rb") as f:
    proto.ParseFromString(f.read())
  pieces = proto.pieces
  if layout == "fairseq":
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(p.piece, p.score) for p in pieces[3:]] + [("<mask>", 0.0)]
    unk_id = 3
  elif layout == "camembert":
    vocab = [("<s>NOTUSED", 0.0), ("<pad>", 0.0), ("</s>NOTUSED", 0.0), ("<unk>", 0.0),
             ("<unk>NOTUSED", -100.0)]
    vocab += [(p.piece, p.score) for p in pieces[1:]] + [("<mask>", 0.0)]
    unk_id = 3
  else:
    vocab = [(p.piece, p.score) for p in pieces]
    unk_id = proto.trainer_spec.unk_id
  if proto.trainer_spec.model_type == 1:  # unigram
    tok = tokenizers.Tokenizer(models.Unigram(vocab, unk_id=unk_id, byte_fallback=False))
  elif proto.trainer_spec.model_type == 2:  # bpe
    merges = _spm_merges({p.piece: i for i, p in enumerate(pieces)}, vocab)
    tok = tokenizers.Tokenizer(models.BPE({w: i for i, (w, _) in enumerate(vocab)}, merges,
                                          unk_token=proto.trainer_spec.unk_piece, fuse_unk=True,
                                          byte_fallback=False, dropout=None))
  else:
    raise ValueError(f"{model_file}: SentencePiece model_type {proto.trainer_spec.model_type} "
                     "(edjax reads unigram = 1 and bpe = 2)")
  # control pieces are special added tokens, user-defined ones plain added tokens (SpmConverter)
  tok.add_tokens([AddedToken(p.piece, normalized=False, special=p.type == 3)
                  for p in pieces if p.type in (3, 4)])
  charsmap = proto.normalizer_spec.precompiled_charsmap
  norms = [normalizers.Strip(left=False, right=True), normalizers.Replace(Regex(" {2,}"), "\u2581")]
  tok.normalizer = normalizers.Sequence(([normalizers.Precompiled(charsmap)] if charsmap else [])
                                        + norms)
  scheme = "always" if add_prefix_space else "never"
  tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme=scheme)
  tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme=scheme)
  if layout in ("fairseq", "camembert"):
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
  return tok


def _spm_merges(spm_vocab: dict[str, int], vocab_scores: list[tuple[str, float]]
                ) -> list[tuple[str, str]]:
  """BPE merges of a SentencePiece BPE model, ordered by piece score (transformers'
  `generate_merges` with vocab_scores)."""
  scores = dict(vocab_scores)
  merges = []
  for merge, score in scores.items():
    local = [(merge[:i], merge[i:], score) for i in range(1, len(merge))
             if merge[:i] in spm_vocab and merge[i:] in spm_vocab]
    merges += sorted(local, key=lambda x: (spm_vocab[x[0]], spm_vocab[x[1]]))
  merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
  return [(a, b) for a, b, _ in merges]


def _add_tokens(tok: tokenizers.Tokenizer, added: dict, special: dict[str, str | None]) -> None:
  """The checkpoint's added tokens (tokenizer_config.json's added_tokens_decoder, at their ids),
  then its special tokens, as transformers' tokenizers register them: special tokens are never
  split and are dropped by decode(skip_special_tokens=True)."""
  for idx, entry in sorted(((int(k), v) for k, v in added.items()), key=lambda kv: kv[0]):
    token = AddedToken(entry["content"], single_word=entry.get("single_word", False),
                       lstrip=entry.get("lstrip", False), rstrip=entry.get("rstrip", False),
                       normalized=entry.get("normalized", False),
                       special=entry.get("special", False))
    (tok.add_special_tokens if entry.get("special", False) else tok.add_tokens)([token])
    if tok.token_to_id(entry["content"]) != idx:
      raise ValueError(f"added token {entry['content']!r} has id {idx} in tokenizer_config.json "
                       f"but {tok.token_to_id(entry['content'])} in the SentencePiece vocabulary")
  names = {str(v.get("content")) for v in added.values()}
  tok.add_special_tokens([AddedToken(v, normalized=False, special=True)
                          for v in dict.fromkeys(
                              v for v in special.values() if isinstance(v, str))
                          if v not in names])
