"""experiments.predict's generation flags: list-valued settings take lists (HF's types)."""

from __future__ import annotations

import pytest

from edjax.model_configs import ConfigError


@pytest.fixture
def predict_main():
  from experiments import predict
  yield predict
  predict.FLAGS.unparse_flags()


def test_list_valued_generation_flags_parse_to_id_tuples(predict_main):
  predict_main.FLAGS(["predict", "--bad_words_ids=1037 2003,2023", "--suppress_tokens=5,6",
                      "--begin_suppress_tokens=7", "--eos_token_id=2,3", "--num_beams=4",
                      "--early_stopping=never"])
  kwargs = predict_main.generation_kwargs()
  assert kwargs == dict(bad_words_ids=((1037, 2003), (2023,)), suppress_tokens=(5, 6),
                        begin_suppress_tokens=(7,), eos_token_id=(2, 3), num_beams=4,
                        early_stopping="never")


def test_a_non_integer_id_is_a_config_error_naming_the_flag(predict_main):
  predict_main.FLAGS(["predict", "--suppress_tokens=5,x"])
  with pytest.raises(ConfigError, match=r"--suppress_tokens='5,x': use integer token ids"):
    predict_main.generation_kwargs()
