"""The registry is the one home of each family: complete records, no per-family branch elsewhere."""

from __future__ import annotations

import os
import re
import subprocess

import jax.numpy as jnp
import pytest

import edjax
from edjax.models import layers, registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("model_type", registry.model_types())
def test_architecture_record_is_complete(model_type):
  arch = registry.get(model_type)
  assert arch.config_class.model_type == model_type or model_type in arch.aliases
  assert arch.modality in (registry.TEXT, registry.IMAGE)
  assert arch.encoder or arch.decoder
  if arch.encoder is not None:  # everything the composite and the loaders ask of an encoder
    assert arch.encoder_rules and arch.check_inputs and arch.dummy_inputs
    module = registry.encoder_module(arch.config_class(), jnp.float32)
    assert callable(module)
  if arch.decoder is not None:
    assert arch.decoder_rules
    assert isinstance(registry.decoder_module(arch.config_class(), jnp.float32), layers.CausalLM)
    assert arch.modality == registry.TEXT  # decoders read token ids
  assert all(re.compile(p) for p in arch.ignored_hf_keys)


def test_registry_errors_name_the_known_families():
  with pytest.raises(edjax.ConfigError, match=r"unknown model_type 'swin2': edjax supports \["):
    registry.get("swin2")
  with pytest.raises(ValueError, match="registered twice"):
    registry.register(registry.Architecture(config_class=edjax.BertConfig, modality="text",
                                            base_model_prefix="x"))


def test_composite_modality_comes_from_the_registry():
  vit = edjax.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=4, intermediate_size=37)
  bert = edjax.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1,
                          num_attention_heads=4, intermediate_size=37)
  assert type(edjax.model_configs.join_configs(vit, bert)) is edjax.VisionEncoderDecoderConfig
  assert type(edjax.model_configs.join_configs(bert, bert)) is edjax.EncoderDecoderConfig
  image_types = tuple(t for t in registry.model_types() if registry.get(t).modality == "image")
  with pytest.raises(edjax.ConfigError, match=rf"needs an image encoder \({re.escape(str(image_types))}\)"):
    edjax.VisionEncoderDecoderConfig(encoder=bert, decoder=bert)


def test_no_per_family_branch_outside_the_family_files():
  """`model_type == ...` or a family's name as a string literal appears only in its own file
  (and in the registry's list of family modules)."""
  names = "|".join(re.escape(t) for t in registry.model_types())
  pattern = rf"model_type ==|model_type in \(|[\"']({names})[\"']"
  out = subprocess.run(["git", "grep", "-nE", pattern, "--", "edjax/*.py", "edjax/**/*.py"],
                       cwd=REPO, capture_output=True, text=True).stdout
  family_files = {f"edjax/models/{os.path.basename(m.replace('.', '/'))}.py"
                  for m in registry.FAMILIES}
  allowed = family_files | {"edjax/models/registry.py"}
  # Processor kinds (ViTImageProcessor vs DeiTImageProcessor, XLM-R's vs BertGeneration's
  # SentencePiece id layout) are processor types, not model families: HF names them after the
  # models, so the processing modules spell them out (and SentencePiece's own `model_type` field).
  allowed |= {"edjax/processing/images.py", "edjax/processing/tokenizers.py"}
  # edjax.testing holds the test cases themselves (which pairs to compare with transformers).
  offenders = [line for line in out.splitlines() if line.split(":", 1)[0] not in allowed
               and not line.startswith("edjax/testing/")]
  assert not offenders, "\n".join(offenders)
