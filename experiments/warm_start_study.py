r"""The warm-starting study on WikiSplit: BERT2BERT vs random init vs BERTShare at one budget.

  python -m experiments.warm_start_study run --root=ROOT [--arms=warm,share] [--lrs=5e-4]
  python -m experiments.warm_start_study report --root=ROOT [--plot=experiments/wikisplit_study.png]

`run` trains every (arm, learning rate) of configs/wikisplit_study.py, one
`python -m experiments.train --config=configs/wikisplit_study.py:arm=A,lr=L --workdir=ROOT/A_lrL`
subprocess each (rerunning resumes or skips finished runs). `report` reads every run's dev curve
(metrics.jsonl), selects each arm's learning rate by its final dev SARI, scores the selected exports
on the held-out test pairs (beam 4) next to the "echo the input" baseline, and writes
ROOT/results.json, the plot (eval loss and SARI against steps, every arm) and a markdown table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import app, flags

from configs import wikisplit_study as study
from edjax import fileio

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # where the runs start

FLAGS = flags.FLAGS
flags.DEFINE_string("root", None, "Folder of the study's runs (one workdir per arm x lr).")
flags.DEFINE_list("arms", list(study.ARMS), "Arms to run.")
flags.DEFINE_list("lrs", [str(x) for x in study.LEARNING_RATES], "Learning rates to run.")
flags.DEFINE_string("plot", os.path.join(REPO, "experiments", "wikisplit_study.png"),
                    "Where `report` writes the PNG plot.")
flags.DEFINE_integer("test_beams", 4, "Beam size of the test evaluation.")


def run_name(arm: str, lr: float) -> str:
  return f"{arm}_lr{lr:g}"


def train_command(arm: str, lr: float, workdir: str) -> list[str]:
  return [sys.executable, "-m", "experiments.train",
          f"--config=configs/wikisplit_study.py:arm={arm},lr={lr:g}", f"--workdir={workdir}"]


def read_curve(workdir: str) -> dict[int, dict]:
  """{step: {metric: value}} of the eval rows of a run's metrics.jsonl."""
  curve: dict[int, dict] = {}
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return curve
  with open(path) as f:
    for line in f:
      row = json.loads(line)
      if "eval/loss" in row:
        curve.setdefault(int(row["step"]), {}).update(row)
  return curve


def cmd_run(root: str) -> None:
  for lr in map(float, FLAGS.lrs):  # every arm at one rate before the next rate
    for arm in FLAGS.arms:
      workdir = os.path.join(root, run_name(arm, lr))
      if study.STEPS in read_curve(workdir) and os.path.isdir(os.path.join(workdir, "export")):
        print(f"{run_name(arm, lr)}: done, skipped", flush=True)
        continue
      cmd = train_command(arm, lr, workdir)
      print("$ " + " ".join(cmd[1:]), flush=True)
      t0 = time.time()
      os.makedirs(workdir, exist_ok=True)
      with open(os.path.join(workdir, "train.log"), "a") as log:
        rc = subprocess.call(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
      print(f"{run_name(arm, lr)}: exit {rc} after {time.time() - t0:.0f} s", flush=True)


def evaluate_export(export: str, offset: int, examples: int, beams: int, workdir: str) -> dict:
  """Test metrics of an HF-format export (+ its tokenizer files) on shuffled test[offset:+n]."""
  import edjax
  from edjax.processing.tokenizers import Tokenizer
  from edjax.train import evaluate

  tok = Tokenizer.from_dir(export)
  model, params = edjax.from_pretrained(export)
  config = study.get_config("arm=warm,lr=1e-3")  # only the data / eval settings are read
  config.eval.update(dict(num_beams=beams, num_generate=examples))
  eval_set = heldout_eval_set(offset, examples, tok)
  results, rows = evaluate.evaluate(model, params, eval_set, config.eval, tok,
                                    predictions_path=os.path.join(workdir, "predictions_test.jsonl"))
  results["eval/mean_output_words"] = sum(len(p.split()) for _, p, _ in rows) / len(rows)
  return results


def heldout_eval_set(offset: int, examples: int, tokenizer):
  """The EvalSet of shuffled WikiSplit test pairs [offset, offset + examples), the study's
  lengths, tokenized by `tokenizer`."""
  import ml_collections
  from edjax import data as data_lib

  data = ml_collections.ConfigDict(study.get_config("arm=warm,lr=1e-3").data.to_dict())
  data.eval_offset, data.eval_examples = offset, examples
  return data_lib.build_eval_set(data, encoder_tokenizer=tokenizer, decoder_tokenizer=tokenizer)


def echo_baseline(offset: int, examples: int) -> dict:
  """Metrics of copying the input, in the same normal form (MiniLM's uncased WordPiece)."""
  from edjax import metrics as metrics_lib
  from edjax.processing.tokenizers import Tokenizer, roundtrip_texts
  from edjax.resources import minilm_dir

  tok = Tokenizer.from_dir(minilm_dir())
  eval_set = heldout_eval_set(offset, examples, tok)
  sources = roundtrip_texts([s for s, _ in eval_set.examples], tok)
  refs = roundtrip_texts(eval_set.references, tok)
  out = metrics_lib.compute_metrics(["sari", "bleu", "exact_match"], sources, sources, refs)
  out = {f"eval/{k}": v for k, v in out.items()}
  out["eval/mean_output_words"] = sum(len(s.split()) for s in sources) / len(sources)
  out["eval/mean_reference_words"] = sum(len(r.split()) for r in refs) / len(refs)
  return out


def plot(curves: dict[str, dict[int, dict]], selected: dict[str, str], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  colors = {"warm": "tab:blue", "random_init": "tab:red", "share": "tab:green"}
  for name, curve in sorted(curves.items()):
    arm = name.split("_lr")[0]
    steps = sorted(curve)
    chosen = selected.get(arm) == name
    style = dict(color=colors.get(arm, "gray"), lw=2.2 if chosen else 0.9,
                 alpha=1.0 if chosen else 0.45, marker="o" if chosen else None, ms=3,
                 label=name + (" (selected)" if chosen else ""))
    axes[0].plot(steps, [curve[s]["eval/loss"] for s in steps], **style)
    axes[1].plot(steps, [curve[s].get("eval/sari", float("nan")) for s in steps], **style)
  axes[0].set(xlabel="step", ylabel="dev loss (token cross-entropy)", yscale="log")
  axes[1].set(xlabel="step", ylabel="dev SARI (greedy)")
  for ax in axes:
    ax.grid(alpha=0.3)
  axes[1].legend(fontsize=7, loc="lower right")
  fig.suptitle(f"WikiSplit, {study.STEPS} steps x {study.BATCH} pairs, MiniLM-L6 shapes")
  fig.tight_layout()
  fileio.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
  plt.close(fig)


def cmd_report(root: str) -> None:
  curves = {name: read_curve(os.path.join(root, name)) for name in sorted(os.listdir(root))
            if os.path.isdir(os.path.join(root, name))}
  curves = {k: v for k, v in curves.items() if study.STEPS in v}
  selected = {}
  for arm in study.ARMS:
    runs = {k: v for k, v in curves.items() if k.split("_lr")[0] == arm}
    if runs:  # highest final dev SARI; dev loss breaks ties
      selected[arm] = max(runs, key=lambda k: (runs[k][study.STEPS]["eval/sari"],
                                               -runs[k][study.STEPS]["eval/loss"]))
  print("| run | dev loss | dev SARI | dev BLEU |\n|---|---|---|---|")
  for name, curve in sorted(curves.items()):
    last = curve[study.STEPS]
    mark = " **selected**" if name in selected.values() else ""
    print(f"| {name}{mark} | {last['eval/loss']:.3f} | {last['eval/sari']:.2f} | "
          f"{last['eval/bleu']:.2f} |")
  results = {"dev": {k: v[study.STEPS] for k, v in curves.items()}, "selected": selected,
             "test": {}}
  for arm, name in selected.items():
    t0 = time.time()
    results["test"][arm] = evaluate_export(os.path.join(root, name, "export"), study.TEST_OFFSET,
                                           study.TEST_EXAMPLES, FLAGS.test_beams,
                                           os.path.join(root, name))
    print(f"test {name}: {time.time() - t0:.0f} s", flush=True)
  results["test"]["echo"] = echo_baseline(study.TEST_OFFSET, study.TEST_EXAMPLES)
  print("\n| arm (lr) | test SARI | test BLEU | exact match | mean output words | test loss |\n"
        "|---|---|---|---|---|---|")
  for arm, m in results["test"].items():
    label = f"{arm} ({selected[arm].split('_lr')[1]})" if arm in selected else "echo the input"
    loss = f"{m['eval/loss']:.3f}" if "eval/loss" in m else "-"
    print(f"| {label} | {m['eval/sari']:.2f} | {m['eval/bleu']:.2f} | "
          f"{m['eval/exact_match']:.1f}% | {m['eval/mean_output_words']:.1f} | {loss} |")
  fileio.atomic_write(os.path.join(root, "results.json"),
                      json.dumps(results, indent=1, default=float))
  plot(curves, selected, FLAGS.plot)
  print(f"\nwrote {os.path.join(root, 'results.json')} and {FLAGS.plot}")


def main(argv):
  if len(argv) != 2 or argv[1] not in ("run", "report"):
    raise app.UsageError("usage: python -m experiments.warm_start_study run|report --root=ROOT")
  if not FLAGS.root:
    raise app.UsageError("--root is required")
  (cmd_run if argv[1] == "run" else cmd_report)(FLAGS.root)


if __name__ == "__main__":
  app.run(main)
