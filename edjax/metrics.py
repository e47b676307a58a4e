"""Text-generation metrics over lists of strings: BLEU, SARI, ROUGE, exact match, CER / WER, CIDEr.

Every function takes plain Python strings (already detokenized model outputs) and returns floats.
BLEU, SARI, ROUGE and exact match are on a 0-100 scale; CER and WER keep jiwer's scale, a fraction
(0 = perfect; can exceed 1 when the prediction has many insertions).

- `bleu`: sacrebleu corpus BLEU, default settings (tokenizer '13a', exp smoothing), one or more
  references per example.
- `sari`: our own port of SARI (Xu et al., 2016, TACL) following the semantics of Google's
  `sari_hook.get_sari_score` (tensor2tensor, also used by LaserTagger's WikiSplit scoring):
  whitespace tokens, n = 1..4, n-gram *sets*, a reference n-gram weighted by the fraction of
  (non-empty) references that contain it, 0/0 := 1, sentence scores averaged over the corpus.
- `rouge`: rouge-score ROUGE-1/2/L/Lsum F-measure with the Porter stemmer, averaged over examples
  (with several references: the best one per example and key, rouge-score's `score_multi`).
- `exact_match`: percent of predictions equal to their reference (any of them, with several) after
  whitespace normalisation.
- `cer` / `wer`: jiwer corpus-level character / word error rate (total edits / reference length),
  one reference per example.

References: one string per example, or (bleu, rouge, exact_match, sari, cider) a list of reference
strings per example, e.g. the five captions of a COCO image; the two forms may be mixed (a string
counts as a one-element list).

WikiSplit targets separate sentences with ' <::::> ' (`edjax.data.wiki_split.DELIMITER`); run
`normalize_split_delimiter` on predictions, references and sources before scoring (see its
docstring).
"""

from __future__ import annotations

import re
from typing import Sequence

import jiwer
import sacrebleu
from rouge_score import rouge_scorer

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
METRIC_NAMES = ("bleu", "sari", "rouge", "exact_match", "cer", "wer", "cider")


def normalize_split_delimiter(text: str, sep: str = " ") -> str:
  """Replaces WikiSplit's sentence delimiter '<::::>' by `sep` and collapses whitespace.

  'A was born . <::::> He died .' -> 'A was born . He died .' (sep=' ', the default). This is what
  LaserTagger's published WikiSplit scoring (`score_lib`, Malmi et al. 2019; Rothe and Severyn
  co-wrote it and the warm-starting paper) does before SARI and exact match: sentences stay
  separated by a space, and the delimiter itself is not scored (SARI does not reward adding it).
  The sentence boundary stays visible through the final punctuation token ('.'). Pass sep='\\n'
  to get one sentence per line (the form ROUGE-Lsum splits on). The delimiter is found with or
  without the surrounding spaces; empty pieces are dropped, and within each piece runs of
  whitespace become one space.
  """
  # The delimiter's home is the WikiSplit module; imported here so that `import edjax.metrics`
  # stays free of the data stack (tfds, tf.data).
  from edjax.data.wiki_split import MARK
  pieces = (" ".join(piece.split()) for piece in text.split(MARK))
  return sep.join(piece for piece in pieces if piece)


def _check(predictions: Sequence[str], references: Sequence, sources: Sequence[str] | None = None):
  """Raises ValueError for empty input or lists of different lengths."""
  if isinstance(predictions, str) or isinstance(references, str):
    raise ValueError("predictions and references must be lists of strings, not a single string")
  lengths = {"predictions": len(predictions), "references": len(references)}
  if sources is not None:
    if isinstance(sources, str):
      raise ValueError("sources must be a list of strings, not a single string")
    lengths["sources"] = len(sources)
  if len(set(lengths.values())) != 1:
    raise ValueError(f"list lengths differ: {lengths}; one entry per example is needed in each")
  if lengths["predictions"] == 0:
    raise ValueError("no examples: predictions and references are empty")


def _single_references(references: Sequence) -> list[str]:
  """The references as one string per example (raises ValueError on a list of references)."""
  for i, ref in enumerate(references):
    if not isinstance(ref, str):
      raise ValueError(f"reference {i} is {type(ref).__name__}, not str: this metric takes "
                       "exactly one reference string per example (bleu, rouge, exact_match and "
                       "sari take several)")
  return list(references)


def _is_multi(references: Sequence) -> bool:
  """Whether any example has a list of references (rather than one string)."""
  return any(not isinstance(ref, str) for ref in references)


def _multi_references(references: Sequence) -> list[list[str]]:
  """Each example's references as a non-empty list of strings (a string -> [string])."""
  out = []
  for i, ref in enumerate(references):
    refs = [ref] if isinstance(ref, str) else ref
    if not isinstance(refs, (list, tuple)) or not refs or not all(isinstance(r, str) for r in refs):
      raise ValueError(f"reference {i} must be a string or a non-empty list of strings, got "
                       f"{ref!r:.80}")
    out.append(list(refs))
  return out


def bleu(predictions: Sequence[str], references: Sequence) -> float:
  """sacrebleu corpus BLEU (0-100), default settings: tokenizer '13a', 'exp' smoothing, cased.

  One reference string per example: the value of the CLI `sacrebleu REF_FILE -i HYP_FILE`. Lists
  of references: sacrebleu's multi-reference BLEU, `corpus_bleu(predictions, streams)` with
  stream j = every example's j-th reference, None where an example has fewer (sacrebleu skips
  those), i.e. the CLI with one REF_FILE per stream.
  """
  _check(predictions, references)
  if not _is_multi(references):
    refs = _single_references(references)
    return float(sacrebleu.corpus_bleu(list(predictions), [refs], tokenize="13a").score)
  ref_lists = _multi_references(references)
  num_streams = max(len(refs) for refs in ref_lists)
  streams = [[refs[j] if j < len(refs) else None for refs in ref_lists] for j in range(num_streams)]
  return float(sacrebleu.corpus_bleu(list(predictions), streams, tokenize="13a").score)


def _ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
  """The set of distinct n-grams of a token list (empty when it is shorter than n)."""
  return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def _f_beta(true_positives: float, selected: float, relevant: float, beta: float) -> float:
  """F-beta with 0/0 := 1 for precision and recall; beta = 0 gives precision alone."""
  precision = true_positives / selected if selected > 0 else 1.0
  if beta == 0:
    return precision
  recall = true_positives / relevant if relevant > 0 else 1.0
  if precision <= 0 or recall <= 0:
    return 0.0
  b2 = beta * beta
  return (1 + b2) * precision * recall / (b2 * precision + recall)


def sari_components(source: str, prediction: str, references: Sequence[str], max_n: int = 4,
                    deletion_beta: float = 0.0) -> tuple[float, float, float, float]:
  """SARI of one example on a 0-1 scale: (sari, keep, add, delete), each averaged over n=1..max_n.

  Texts are split on whitespace. For each n, with S, C = the n-gram sets of source and prediction
  and w(g) = fraction of the references (those with at least one n-gram) that contain g:
    keep   = F1(tp = sum_{g in S&C} w(g), selected = |S&C|, relevant = sum_{g in S} w(g))
    delete = F_beta(tp = sum_{g in S-C} (1 - w(g)), selected = |S-C|,
                    relevant = sum_{g in S} (1 - w(g))), precision alone for beta = 0
    add    = F1(tp = |(C-S) & R|, selected = |C-S|, relevant = |R-S|), R = union of references
  with 0/0 := 1 for each precision / recall, and SARI = (keep + add + delete) / 3.
  """
  src, pred = source.split(), prediction.split()
  refs = [ref.split() for ref in references]
  keep = add = delete = 0.0
  for n in range(1, max_n + 1):
    s, c = _ngrams(src, n), _ngrams(pred, n)
    ref_sets = [r for r in (_ngrams(tokens, n) for tokens in refs) if r]
    weight: dict[tuple[str, ...], float] = {}
    for ref_set in ref_sets:
      for gram in ref_set:
        weight[gram] = weight.get(gram, 0) + 1
    for gram in weight:
      weight[gram] /= len(ref_sets)
    kept, deleted, added = s & c, s - c, c - s
    keep += _f_beta(sum(weight.get(g, 0.0) for g in kept), len(kept),
                    sum(weight.get(g, 0.0) for g in s), beta=1)
    delete += _f_beta(sum(1.0 - weight.get(g, 0.0) for g in deleted), len(deleted),
                      sum(1.0 - weight.get(g, 0.0) for g in s), beta=deletion_beta)
    add += _f_beta(len(added & weight.keys()), len(added), len(weight.keys() - s), beta=1)
  keep, add, delete = keep / max_n, add / max_n, delete / max_n
  return (keep + add + delete) / 3.0, keep, add, delete


def sari(sources: Sequence[str], predictions: Sequence[str], references: Sequence,
         deletion_beta: float = 0.0, lowercase: bool = False) -> float:
  """Corpus SARI on a 0-100 scale: the mean of the per-example scores of `sari_components`.

  references: one string per example, or a list of reference strings per example. Texts should be
  tokenized so that whitespace separates tokens (WikiSplit is), and WikiSplit's '<::::>' removed
  with `normalize_split_delimiter`. The defaults follow the SARI paper (deletion precision,
  case-sensitive). `deletion_beta=1.0, lowercase=True` is LaserTagger's WikiSplit scoring protocol
  (deletion F1, case-insensitive), the likely setting of published WikiSplit SARI numbers. Beware:
  with deletion precision (the default), copying the source gets ~63 on WikiSplit test (an
  unchanged n-gram counts as a perfect 0/0 deletion); with deletion F1 it gets ~32.
  """
  if sources is None:
    raise ValueError("sari needs the sources (the model inputs), got sources=None")
  _check(predictions, references, sources)
  total = 0.0
  for src, pred, refs in zip(sources, predictions, references):
    refs = [refs] if isinstance(refs, str) else list(refs)
    if lowercase:
      src, pred, refs = src.lower(), pred.lower(), [r.lower() for r in refs]
    total += sari_components(src, pred, refs, deletion_beta=deletion_beta)[0]
  return 100.0 * total / len(predictions)


def rouge(predictions: Sequence[str], references: Sequence) -> dict[str, float]:
  """rouge-score ROUGE-1/2/L/Lsum F-measure x 100 with stemming, averaged over examples.

  rouge-score lowercases and keeps only [a-z0-9] tokens; ROUGE-Lsum treats each '\\n'-separated
  line as a sentence (use `normalize_split_delimiter(text, sep='\\n')` for WikiSplit outputs).
  With a list of references, an example scores its best reference per key (rouge-score's
  `score_multi`: the reference of maximal F-measure).
  """
  _check(predictions, references)
  multi = _is_multi(references)
  refs = _multi_references(references) if multi else _single_references(references)
  scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
  totals = dict.fromkeys(ROUGE_KEYS, 0.0)
  for pred, ref in zip(predictions, refs):
    # rouge-score takes (target(s), prediction)
    scores = scorer.score_multi(ref, pred) if multi else scorer.score(ref, pred)
    for key in ROUGE_KEYS:
      totals[key] += scores[key].fmeasure
  return {key: 100.0 * total / len(refs) for key, total in totals.items()}


def exact_match(predictions: Sequence[str], references: Sequence) -> float:
  """Percent of predictions equal to their reference (any of a list of references) once
  whitespace runs are collapsed / stripped.

  Case and punctuation count (no other normalisation).
  """
  _check(predictions, references)
  hits = sum(" ".join(p.split()) in {" ".join(r.split()) for r in refs}
             for p, refs in zip(predictions, _multi_references(references)))
  return 100.0 * hits / len(predictions)


def cer(predictions: Sequence[str], references: Sequence[str]) -> float:
  """jiwer corpus character error rate: total char edits / total reference chars (a fraction).

  jiwer's default transform strips each string; spaces inside count as characters.
  """
  _check(predictions, references)
  return float(jiwer.cer(_single_references(references), list(predictions)))


def wer(predictions: Sequence[str], references: Sequence[str]) -> float:
  """jiwer corpus word error rate: total word edits / total reference words (a fraction)."""
  _check(predictions, references)
  return float(jiwer.wer(_single_references(references), list(predictions)))


def _cider_tokens(text: str) -> str:
  """Lowercased words without punctuation: what COCO's PTBTokenizer (Java) leaves for CIDEr."""
  return " ".join(re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower()))


def cider(predictions: Sequence[str], references: Sequence) -> float:
  """CIDEr-D x 100 (pycocoevalcap's `Cider`, n = 4, sigma = 6) against one or more references.

  The document frequencies come from this evaluation's references, as in the COCO evaluation.
  COCO's own tokenizer runs Stanford's PTBTokenizer on Java; here texts are lowercased and split
  into words with punctuation dropped (`_cider_tokens`), which is what it yields for plain
  captions, so scores can differ slightly from the Java pipeline on unusual punctuation.
  """
  from pycocoevalcap.cider.cider import Cider  # imported here: metrics without it stay light
  _check(predictions, references)
  refs = _multi_references(references)
  gts = {i: [_cider_tokens(r) for r in rs] for i, rs in enumerate(refs)}
  res = {i: [_cider_tokens(p)] for i, p in enumerate(predictions)}
  score, _ = Cider().compute_score(gts, res)
  return 100.0 * float(score)


def compute_metrics(names: Sequence[str], sources: Sequence[str] | None,
                    predictions: Sequence[str], references: Sequence,
                    sari_options: dict | None = None) -> dict[str, float]:
  """Computes the named metrics; returns flat keys.

  names: any of 'bleu', 'sari', 'rouge', 'exact_match', 'cer', 'wer', 'cider' (keys: the same,
  except that
  'rouge' gives 'rouge1', 'rouge2', 'rougeL', 'rougeLsum'). sources is needed only for 'sari';
  sari_options (e.g. {'deletion_beta': 1.0, 'lowercase': True}) go to `sari`. references may hold
  lists of references (see the module docstring) unless 'cer' or 'wer' is asked for. Raises
  ValueError for an unknown name, missing sources, lists of different lengths, or lists of
  references with cer / wer.
  """
  if isinstance(names, str):
    names = [names]
  unknown = [name for name in names if name not in METRIC_NAMES]
  if unknown:
    raise ValueError(f"unknown metric name(s) {unknown}; known: {list(METRIC_NAMES)}")
  if "sari" in names and sources is None:
    raise ValueError("metric 'sari' needs the sources (the model inputs), got sources=None")
  _check(predictions, references, sources if "sari" in names else None)
  single_only = [name for name in names if name in ("cer", "wer")]
  if single_only and _is_multi(references):
    raise ValueError(f"metric(s) {single_only} take exactly one reference string per example, "
                     "but references hold lists: pass one reference each (e.g. the first), or drop "
                     "those metrics")
  results: dict[str, float] = {}
  for name in dict.fromkeys(names):  # de-duplicated, in the given order
    if name == "sari":
      results["sari"] = sari(sources, predictions, references, **(sari_options or {}))
    elif name == "rouge":
      results.update(rouge(predictions, references))
    else:
      results[name] = {"bleu": bleu, "exact_match": exact_match, "cer": cer, "wer": wer,
                       "cider": cider}[name](predictions, references)
  return results
