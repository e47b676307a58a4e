"""edjax.metrics vs the libraries it wraps, an independent SARI implementation, and hand values.

SARI oracle: torchmetrics has no SARI metric (none of its releases, 1.9.0 included, ships one), so
the independent implementation is Google's `sari_hook.get_sari_score` from the PyPI wheel
tensor2tensor==1.15.7 (the scorer LaserTagger used for WikiSplit). It is not a dependency of the
project (its install pulls in TF1-era packages); T2T_GOLDEN holds the values it gave, computed once
by /tmp-only scripting on exactly the inputs built by `_wiki_inputs` below (deterministic), and the
same scripting found |ours - sari_hook| = 0.0 on all 5,000 WikiSplit test examples for the same
prediction kinds. Known values from HF's SARI implementation (the README / docstring examples of
HF `evaluate`'s `sari` and `wiki_split`) agree too, as the two definitions coincide when no n-gram
repeats within a sentence.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import sacrebleu
from conftest import wiki_split_dir

from edjax import metrics
from edjax.metrics import normalize_split_delimiter

WIKI_N = 300  # examples of WikiSplit test.tsv used for the SARI oracle comparison


def _perturb(text: str, i: int) -> str:
  """A deterministic edit of a reference: substitute a new word, delete one, duplicate one."""
  toks = text.split()
  toks[(7 * i + 2) % len(toks)] = "zzz"
  if len(toks) > 1:
    del toks[(3 * i + 1) % len(toks)]
  toks.insert(i % (len(toks) + 1), toks[(5 * i) % len(toks)])
  return " ".join(toks)


def _wiki_inputs(n: int = WIKI_N):
  """(sources, {prediction kind: predictions}, {reference set: references}) from test.tsv."""
  with open(os.path.join(wiki_split_dir(), "test.tsv"), encoding="utf-8") as f:
    rows = [line.rstrip("\n").split("\t") for _, line in zip(range(n), f)]
  srcs = [normalize_split_delimiter(r[0]) for r in rows]
  refs = [normalize_split_delimiter(r[1]) for r in rows]
  preds = {"copy_source": srcs, "reference": refs,
           "perturbed_reference": [_perturb(r, i) for i, r in enumerate(refs)],
           "empty": [""] * n}
  ref_sets = {"one_ref": refs,
              "two_refs": [[r, _perturb(r, 1000 + i)] for i, r in enumerate(refs)]}
  return srcs, preds, ref_sets


# tensor2tensor 1.15.7 sari_hook.get_sari_score, mean over the WIKI_N examples, x 100.
# Key: (reference set, prediction kind, beta_for_deletion, lowercase).
T2T_GOLDEN = {
    ("one_ref", "copy_source", 0.0, False): 63.13326100062631,
    ("one_ref", "copy_source", 1.0, True): 34.18928104900879,
    ("one_ref", "reference", 0.0, False): 100.0,
    ("one_ref", "reference", 1.0, True): 100.0,
    ("one_ref", "perturbed_reference", 0.0, False): 70.52101898902283,
    ("one_ref", "perturbed_reference", 1.0, True): 71.70052460913233,
    ("one_ref", "empty", 0.0, False): 6.495090673152693,
    ("one_ref", "empty", 1.0, True): 11.168733063935365,
    ("two_refs", "copy_source", 0.0, False): 61.5615975535258,
    ("two_refs", "copy_source", 1.0, True): 28.78227716338408,
    ("two_refs", "reference", 0.0, False): 89.75771040743018,
    ("two_refs", "reference", 1.0, True): 80.00450579042464,
    ("two_refs", "perturbed_reference", 0.0, False): 70.38312395003662,
    ("two_refs", "perturbed_reference", 1.0, True): 70.6419757055279,
    ("two_refs", "empty", 0.0, False): 8.420679204487778,
    ("two_refs", "empty", 1.0, True): 12.133974735736281,
}


@pytest.fixture(scope="module")
def wiki_inputs():
  return _wiki_inputs()


@pytest.mark.parametrize("key", sorted(T2T_GOLDEN))
def test_sari_matches_tensor2tensor_sari_hook_on_wikisplit(wiki_inputs, key):
  ref_set, kind, beta, lowercase = key
  srcs, preds, ref_sets = wiki_inputs
  ours = metrics.sari(srcs, preds[kind], ref_sets[ref_set], deletion_beta=beta,
                      lowercase=lowercase)
  assert abs(ours - T2T_GOLDEN[key]) <= 1e-9, (key, ours, T2T_GOLDEN[key])


# (source, prediction, references, deletion_beta) -> sari_hook value x 100 (per example).
T2T_EDGE_CASES = [
    (("", "a b", ["a b"], 0.0), 100.0),  # empty source
    (("a b c", "", ["a b"], 0.0), 73.6111111111111),  # empty prediction
    (("", "", [""], 0.0), 100.0),  # everything empty
    (("a b c", "a b", [], 0.0), 83.33333333333334),  # no reference at all
    (("a b c", "a c", ["", "a c"], 0.0), 100.0),  # an empty reference beside a real one
    (("a b c d e", "a b c d e", ["a b c d e"], 0.0), 100.0),  # no edit needed and none made
    (("global", "scenarioPattern", ["scenarioPattern"], 0.0), 100.0),  # one-token sentences
    (("the cat and the dog and the bird", "the cat and the dog . the bird",  # repeated n-grams
      ["the cat and the dog . and the bird ."], 0.0), 78.82936507936508),
    (("a a a b", "a b b", ["a b", "b b a"], 0.0), 86.1111111111111),
    (("x y z w v", "x y q w", ["x q w", "y z w v", "x y"], 0.0), 41.596638655462186),  # short refs
    (("x y z w v", "x y q w", ["x q w", "y z w v", "x y"], 1.0), 43.996085613732674),
    (("a b c", "a c d", ["a d"], 1.0), 77.77777777777777),
    (("one two three four five six", "six five four three two one",
      ["one two . three four five six"], 1.0), 31.666666666666664),
    (("  spaced   out  ", "spaced out", [" spaced  in "], 0.0), 72.22222222222221),  # whitespace
]


@pytest.mark.parametrize("case", T2T_EDGE_CASES, ids=[str(i) for i in range(len(T2T_EDGE_CASES))])
def test_sari_edge_cases_match_tensor2tensor(case):
  (src, pred, refs, beta), expected = case
  assert abs(metrics.sari([src], [pred], [refs], deletion_beta=beta) - expected) <= 1e-9


def test_sari_known_values_of_hf_implementation():
  """The SARI paper's example (Xu et al. 2016, Table 5 sentences) as in HF evaluate's README."""
  src = ["About 95 species are currently accepted ."]
  refs3 = [["About 95 species are currently known .", "About 95 species are now accepted .",
            "95 species are now accepted ."]]
  assert metrics.sari(src, ["About 95 you now get in ."], refs3) == pytest.approx(
      26.953601953601954, abs=1e-9)
  assert metrics.sari(src, ["About 95 species are now agreed ."], refs3) == pytest.approx(
      61.709656084656075, abs=1e-9)
  # HF datasets' wiki_split metric docstring: one reference.
  assert metrics.sari(src, ["About 95 you now get in ."],
                      [["About 95 species are currently known ."]]) == pytest.approx(
                          21.805555555555557, abs=1e-9)


def test_sari_hand_computed():
  # src 'a b c' -> pred 'a c d', ref 'a d'. Per n (keep, delete-precision, add):
  # n=1 (2/3, 1, 1); n=2 (1, 1, 0); n=3 (1, 1, 0) (the ref has no trigram); n=4 (1, 1, 1)
  # -> keep 11/12, delete 1, add 1/2 -> SARI 29/36. Deletion F1 at n=1: P=1, R=1/2 -> 2/3,
  # so delete 11/12 and SARI 7/9.
  assert metrics.sari(["a b c"], ["a c d"], ["a d"]) == pytest.approx(100 * 29 / 36, abs=1e-12)
  assert metrics.sari(["a b c"], ["a c d"], ["a d"], deletion_beta=1.0) == pytest.approx(
      100 * 7 / 9, abs=1e-12)
  _, keep, add, delete = metrics.sari_components("a b c", "a c d", ["a d"])
  assert (keep, add, delete) == pytest.approx((11 / 12, 1 / 2, 1.0))
  # Prediction == the single reference: 100, also when it differs from the source.
  assert metrics.sari(["a b"], ["a c"], ["a c"]) == pytest.approx(100.0)
  # Corpus SARI is the mean of the sentence scores; a reference string == a 1-element list.
  both = metrics.sari(["a b c", "a b"], ["a c d", "a c"], [["a d"], "a c"])
  assert both == pytest.approx((100 * 29 / 36 + 100) / 2)
  # Case matters unless lowercase=True.
  assert metrics.sari(["a b"], ["A c"], ["a c"]) < 100.0
  assert metrics.sari(["a b"], ["A c"], ["a c"], lowercase=True) == pytest.approx(100.0)


def test_normalize_split_delimiter():
  text = "He was born . <::::> He died ."
  assert normalize_split_delimiter(text) == "He was born . He died ."
  assert normalize_split_delimiter(text, sep="\n") == "He was born .\nHe died ."
  assert normalize_split_delimiter("  a  b.<::::>c <::::>  ") == "a b. c"
  assert normalize_split_delimiter("no delimiter  here") == "no delimiter here"


def test_bleu_equals_sacrebleu_cli(tmp_path):
  hyps = ["the cat sat on a mat .", "hello there world", "It 's a test, isn't it?"]
  refs = ["the cat sat on the mat .", "hello world", "It is a test, isn't it?"]
  (tmp_path / "hyp.txt").write_text("\n".join(hyps) + "\n", encoding="utf-8")
  (tmp_path / "ref.txt").write_text("\n".join(refs) + "\n", encoding="utf-8")
  out = subprocess.run([sys.executable, "-m", "sacrebleu", str(tmp_path / "ref.txt"), "-i",
                        str(tmp_path / "hyp.txt"), "-b", "-w", "10"], check=True,
                       capture_output=True, text=True).stdout
  ours = metrics.bleu(hyps, refs)
  assert 0.0 < ours < 100.0
  assert ours == pytest.approx(float(out.strip()), abs=1e-9)
  assert ours == pytest.approx(sacrebleu.BLEU(tokenize="13a").corpus_score(hyps, [refs]).score)


def test_bleu_perfect_and_wikisplit_copy(wiki_inputs):
  srcs, preds, ref_sets = wiki_inputs
  assert metrics.bleu(preds["reference"], ref_sets["one_ref"]) == pytest.approx(100.0)
  copy = metrics.bleu(srcs, ref_sets["one_ref"])
  assert 0.0 < copy < 100.0


def test_rouge_known_values():
  keys = {"rouge1", "rouge2", "rougeL", "rougeLsum"}
  same = metrics.rouge(["The cats sat .\nOn the mat ."], ["the cat sat .\non the mat ."])
  assert set(same) == keys and all(v == pytest.approx(100.0) for v in same.values())  # stemming
  disjoint = metrics.rouge(["alpha beta"], ["gamma delta"])
  assert all(v == 0.0 for v in disjoint.values())
  # pred 'a b c d', ref 'a b x y z': unigrams P=2/4 R=2/5 F=4/9; bigrams {ab} P=1/3 R=1/4 F=2/7;
  # LCS 'a b' = unigram F. Averaged with an identical pair: (F + 1) / 2.
  part = metrics.rouge(["a b c d", "same text"], ["a b x y z", "same text"])
  assert part["rouge1"] == pytest.approx(100 * (4 / 9 + 1) / 2)
  assert part["rouge2"] == pytest.approx(100 * (2 / 7 + 1) / 2)
  assert part["rougeL"] == pytest.approx(100 * (4 / 9 + 1) / 2)
  assert part["rougeLsum"] == pytest.approx(100 * (4 / 9 + 1) / 2)


def test_exact_match():
  assert metrics.exact_match(["a  b ", "x", "Y"], ["a b", "x", "y"]) == pytest.approx(200 / 3)
  assert metrics.exact_match(["a"], ["a"]) == 100.0


def test_cer_and_wer_known_values():
  assert metrics.cer(["abxd"], ["abcd"]) == pytest.approx(0.25)
  assert metrics.cer(["ab", "cdxf"], ["ab", "cdef"]) == pytest.approx(1 / 6)  # corpus level
  assert metrics.cer(["hello"], ["hello"]) == 0.0
  assert metrics.cer([""], ["abc"]) == pytest.approx(1.0)
  assert metrics.wer(["a b x d"], ["a b c d"]) == pytest.approx(0.25)
  assert metrics.wer(["a b c d e f"], ["a b"]) == pytest.approx(2.0)  # 4 insertions / 2 words


def test_compute_metrics_keys_and_values(wiki_inputs):
  srcs, preds, ref_sets = wiki_inputs
  src, pred, ref = srcs[:20], preds["perturbed_reference"][:20], ref_sets["one_ref"][:20]
  out = metrics.compute_metrics(["bleu", "sari", "rouge", "exact_match", "cer", "wer"], src,
                                pred, ref)
  assert list(out) == ["bleu", "sari", "rouge1", "rouge2", "rougeL", "rougeLsum", "exact_match",
                       "cer", "wer"]
  assert out["bleu"] == metrics.bleu(pred, ref)
  assert out["sari"] == metrics.sari(src, pred, ref)
  assert out["cer"] == metrics.cer(pred, ref)
  assert out["exact_match"] == 0.0
  lt = metrics.compute_metrics(["sari"], src, pred, ref,
                               sari_options={"deletion_beta": 1.0, "lowercase": True})
  assert lt == {"sari": metrics.sari(src, pred, ref, deletion_beta=1.0, lowercase=True)}
  assert lt["sari"] != out["sari"]
  assert metrics.compute_metrics(["exact_match"], None, ref, ref) == {"exact_match": 100.0}


def test_errors():
  with pytest.raises(ValueError, match="unknown metric"):
    metrics.compute_metrics(["bleu", "meteor"], None, ["a"], ["a"])
  with pytest.raises(ValueError, match="lengths differ"):
    metrics.compute_metrics(["bleu"], None, ["a", "b"], ["a"])
  with pytest.raises(ValueError, match="lengths differ"):
    metrics.sari(["a"], ["a", "b"], ["a", "b"])
  with pytest.raises(ValueError, match="needs the sources"):
    metrics.compute_metrics(["sari"], None, ["a"], ["a"])
  with pytest.raises(ValueError, match="needs the sources"):
    metrics.sari(None, ["a"], ["a"])
  with pytest.raises(ValueError, match="no examples"):
    metrics.bleu([], [])
  with pytest.raises(ValueError, match="one reference string"):
    metrics.cer(["a"], [["a", "b"]])
  with pytest.raises(ValueError, match="single string"):
    metrics.exact_match("abc", "abc")
