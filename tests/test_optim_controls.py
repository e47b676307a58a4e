"""Fine-tuning controls (#13 item 8): config.optimizer.name='adafactor' and config.freeze."""

import flax.traverse_util as traverse_util
import jax
import numpy as np
import optax
import pytest

from configs import bert2bert
from edjax.model_configs import ConfigError
from edjax.models.encoder_decoder import model_for_config
from edjax.train import optimizer as opt_lib
from edjax.train import partitioning, trainer


def smoke_setup(**overrides):
  """(model, optimizer, layout, state, jitted step, fixed batch) of bert2bert:smoke."""
  config = bert2bert.get_config("smoke")
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split(".")
    for p in parents:
      target = target[p]
    target[leaf] = value
  model = model_for_config(trainer.random_init_config(config).replace(
      decoder_start_token_id=101, eos_token_id=102, pad_token_id=0))
  optimizer = opt_lib.make_optimizer(config.optimizer, config.total_steps, config.freeze)
  mesh = partitioning.make_mesh(config.mesh)
  rules = tuple(tuple(r) for r in config.logical_axis_rules)
  layout = trainer.state_layout(model, optimizer, mesh, rules)
  state = trainer.new_state(model.init(0), optimizer, config.seed, layout)
  step = jax.jit(trainer.make_train_step(model, optimizer, config))
  rng = np.random.default_rng(0)
  labels = rng.integers(1000, 2000, size=(4, 10)).astype(np.int32)
  labels[:, -2:] = -100
  batch = dict(input_ids=rng.integers(1000, 2000, size=(4, 12)).astype(np.int32),
               attention_mask=np.ones((4, 12), np.int32), labels=labels,
               decoder_attention_mask=(labels != -100).astype(np.int32))
  return model, optimizer, layout, state, step, batch


def flat(params):
  return {opt_lib.param_path(k): np.asarray(v)
          for k, v in traverse_util.flatten_dict(jax.device_get(params)).items()}


def test_frozen_params_are_bit_identical_and_carry_no_state():
  _, optimizer, layout, state, step, batch = smoke_setup(freeze=("encoder/.*",))
  before = flat(state["params"])
  for _ in range(3):
    state, _ = step(state, batch)
  after = flat(state["params"])
  frozen = [p for p in before if p.startswith("encoder/")]
  trained = [p for p in before if not p.startswith("encoder/")]
  assert frozen and trained
  for p in frozen:
    np.testing.assert_array_equal(after[p], before[p], err_msg=p)
  changed = [p for p in trained if not np.array_equal(after[p], before[p])]
  assert len(changed) > len(trained) // 2, changed
  # the optimizer state holds moments for the trained params only
  n_state = sum(x.size for x in jax.tree_util.tree_leaves(state["opt_state"]))
  n_trained = sum(before[p].size for p in trained)
  n_all = sum(v.size for v in before.values())
  assert n_state < 2 * n_all - sum(before[p].size for p in frozen)  # no moments for frozen
  assert n_state >= 2 * n_trained


def test_adafactor_trains_the_smoke_config():
  # Adafactor's updates are relative to the params' RMS (~0.02 at init): a large constant rate
  _, _, layout, state, step, batch = smoke_setup(**{"optimizer.name": "adafactor",
                                                     "optimizer.learning_rate": 0.3,
                                                     "optimizer.decay": "constant"})
  losses = []
  for _ in range(6):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert np.all(np.isfinite(losses))
  # step 0 runs at the warmup's zero rate; every later loss is below step 1's
  assert all(loss < losses[1] for loss in losses[2:]), losses
  assert losses[-1] < losses[0] - 0.5, losses
  # factored moments have their own shapes: the layout gives every leaf a sharding of its rank
  for leaf, sh in zip(jax.tree_util.tree_leaves(layout.abstract["opt_state"]),
                      jax.tree_util.tree_leaves(layout.state["opt_state"])):
    assert len(sh.spec) <= len(leaf.shape)


def test_adafactor_with_freeze_on_fake_layout():
  _, _, _, state, step, batch = smoke_setup(**{"optimizer.name": "adafactor",
                                               "freeze": ("decoder/.*embeddings/.*",)})
  before = flat(state["params"])
  state, _ = step(state, batch)
  after = flat(state["params"])
  emb = [p for p in before if p.startswith("decoder/") and "/embeddings/" in p]
  assert emb
  for p in emb:
    np.testing.assert_array_equal(after[p], before[p], err_msg=p)


def test_freeze_regex_matching_nothing_is_a_config_error():
  with pytest.raises(ConfigError, match="'encdr/.*' matches no param"):
    smoke_setup(freeze=("encoder/.*", "encdr/.*"))


def test_unknown_optimizer_is_a_config_error():
  config = bert2bert.get_config("smoke")
  config.optimizer.name = "sgd"
  with pytest.raises(ConfigError, match="optimizer.name='sgd'"):
    opt_lib.make_optimizer(config.optimizer, 10)


def test_freeze_labels():
  params = {"encoder": {"a": {"kernel": 1}}, "decoder": {"a": {"kernel": 2, "bias": 3}}}
  labels = opt_lib.freeze_labels(params, ("decoder/a/bias",))
  assert labels == {"encoder": {"a": {"kernel": "trained"}},
                    "decoder": {"a": {"kernel": "trained", "bias": "frozen"}}}
  assert isinstance(optax.set_to_zero().init(params), optax.EmptyState)
