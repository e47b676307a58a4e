"""experiments.predict's generation flags: list-valued settings take lists (HF's types)."""

from __future__ import annotations

import pytest

from edjax.model_configs import ConfigError


@pytest.fixture
def predict_main():
  from experiments import predict
  from experiments import train  # noqa: F401  (its required flags live in the same FLAGS)
  yield predict
  predict.FLAGS.unparse_flags()


def set_flags(module, *args: str) -> None:
  """Parses `--name=value` args one flag at a time (other mains imported into this process may
  have required flags, whose validators a whole-command parse would run)."""
  module.FLAGS.mark_as_parsed()
  for arg in args:
    name, value = arg[2:].split("=", 1)
    module.FLAGS[name].parse(value)


def test_list_valued_generation_flags_parse_to_id_tuples(predict_main):
  set_flags(predict_main, "--bad_words_ids=1037 2003,2023", "--suppress_tokens=5,6",
            "--begin_suppress_tokens=7", "--eos_token_id=2,3", "--num_beams=4",
            "--early_stopping=never")
  kwargs = predict_main.generation_kwargs()
  assert kwargs == dict(bad_words_ids=((1037, 2003), (2023,)), suppress_tokens=(5, 6),
                        begin_suppress_tokens=(7,), eos_token_id=(2, 3), num_beams=4,
                        early_stopping="never")


def test_a_non_integer_id_is_a_config_error_naming_the_flag(predict_main):
  set_flags(predict_main, "--suppress_tokens=5,x")
  with pytest.raises(ConfigError, match=r"--suppress_tokens='5,x': use integer token ids"):
    predict_main.generation_kwargs()


def test_train_main_turns_a_full_disk_into_one_error_line(monkeypatch, capsys):
  """A full disk while the run writes is one `error:` line naming the path and what to do."""
  import errno

  from experiments import train

  def full(config, workdir):
    raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/checkpoints/4")
  monkeypatch.setattr(train, "train_and_evaluate", full)
  monkeypatch.delenv("EDJAX_DEBUG", raising=False)
  train.FLAGS(["train", "--config=configs/bert2bert.py:smoke", "--workdir=/runs/x"])
  try:
    with pytest.raises(SystemExit) as exit_info:
      train.main([])
  finally:
    train.FLAGS.unparse_flags()
  assert exit_info.value.code == 1
  err = capsys.readouterr().err
  assert err.startswith("error: the disk is full (No space left on device) while writing "
                        "/runs/x/checkpoints/4: free space")
  assert "Traceback" not in err
