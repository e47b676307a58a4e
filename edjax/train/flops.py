"""Analytic FLOP count of an encoder-decoder training step, and device peaks for MFU.

Counts the matmuls (2 FLOPs per multiply-add) of a BERT-style text encoder and a decoder with
cross-attention and an LM head, from the model config and the batch shapes; a training step is 3x
the forward (forward + backward's two matmuls per forward one), as in the PaLM / MaFT MFU
convention. Embedding gathers, softmax, LayerNorm and the loss are not counted (they are small).
"""

from __future__ import annotations

# Dense peak FLOP/s per chip / GPU by jax.devices()[0].device_kind, from the vendors' sheets:
# TPU v4 275 TFLOP/s bf16 (cloud.google.com/tpu/docs/v4), v5e 197 (…/docs/v5e), v5p 459
# (…/docs/v5p), v6e (Trillium) 918 (…/docs/v6e); NVIDIA A100 SXM 312 bf16 / 19.5 fp32 (A100
# datasheet, dense tensor core), H100 SXM 989 bf16 / 67 fp32 (H100 datasheet, dense), H200 SXM
# the same compute as H100 SXM: 989 / 67 (H200 datasheet).
PEAK_FLOPS = {
    "TPU v4": {"bfloat16": 275e12, "float32": 275e12 / 4},
    "TPU v5 lite": {"bfloat16": 197e12, "float32": 197e12 / 4},
    "TPU v5e": {"bfloat16": 197e12, "float32": 197e12 / 4},
    "TPU v5p": {"bfloat16": 459e12, "float32": 459e12 / 4},
    "TPU v5": {"bfloat16": 459e12, "float32": 459e12 / 4},
    "TPU v6 lite": {"bfloat16": 918e12, "float32": 918e12 / 4},
    "TPU v6e": {"bfloat16": 918e12, "float32": 918e12 / 4},
    "NVIDIA A100-SXM4-40GB": {"bfloat16": 312e12, "float32": 19.5e12},
    "NVIDIA A100-SXM4-80GB": {"bfloat16": 312e12, "float32": 19.5e12},
    "NVIDIA H100 80GB HBM3": {"bfloat16": 989e12, "float32": 67e12},
    "NVIDIA H200": {"bfloat16": 989e12, "float32": 67e12},
}


def peak_flops(device_kind: str, dtype: str = "bfloat16") -> float | None:
  """The table's peak FLOP/s for `device_kind` (exact, else the longest table name it starts
  with) and compute dtype 'bfloat16' / 'float32'; None when unknown (no MFU is logged)."""
  table = PEAK_FLOPS.get(device_kind)
  if table is None:
    names = [n for n in PEAK_FLOPS if device_kind.startswith(n)]
    table = PEAK_FLOPS[max(names, key=len)] if names else None
  return None if table is None else table.get(dtype)


def stack_forward_flops(cfg, length: int, memory_length: int = 0, memory_width: int = 0) -> float:
  """Forward matmul FLOPs of one example through a stack of `cfg`'s layers over `length` tokens;
  with `memory_length`, each layer also cross-attends to that many tokens of width
  `memory_width` (the encoder's hidden size). Causal self-attention is counted in full (XLA
  computes the masked scores too)."""
  d, f, n = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
  per_layer = 2 * length * d * 4 * d  # q, k, v, out projections
  per_layer += 2 * 2 * length * length * d  # scores q k^T and probs @ v
  per_layer += 2 * 2 * length * d * f  # the MLP's two matmuls
  if memory_length:
    per_layer += 2 * length * d * 2 * d  # cross q and out
    per_layer += 2 * memory_length * memory_width * 2 * d  # cross k, v of the encoder output
    per_layer += 2 * 2 * length * memory_length * d  # cross scores and probs @ v
  return float(n * per_layer)


def train_step_flops(model_config, batch_size: int, source_length: int,
                     target_length: int) -> float:
  """FLOPs of one training step (3x the forward) of `model_config` (an EncoderDecoderConfig with
  a text encoder) on [batch_size, source_length] inputs and [batch_size, target_length] labels."""
  enc, dec = model_config.encoder, model_config.decoder
  forward = stack_forward_flops(enc, source_length)
  forward += stack_forward_flops(dec, target_length, memory_length=source_length,
                                 memory_width=enc.hidden_size)
  forward += dec.lm_head_flops(target_length)  # each family's config knows its head
  return 3.0 * batch_size * forward


def mfu(flops_per_step: float, steps_per_sec: float, num_devices: int,
        peak: float | None) -> float | None:
  """Model FLOPs utilisation: achieved FLOP/s over the devices' summed peak; None if no peak."""
  if not peak:
    return None
  return flops_per_step * steps_per_sec / (peak * num_devices)


def batch_train_step_flops(model_config, global_batch_size: int, host_batch: dict) -> float | None:
  """train_step_flops for a text batch ({input_ids, labels, ...}: lengths from their shapes);
  None where the count does not apply (an image encoder, a config without layer sizes)."""
  enc = getattr(model_config, "encoder", None)
  if "input_ids" not in host_batch or not hasattr(enc, "num_layers") or not hasattr(
      getattr(model_config, "decoder", None), "vocab_size"):
    return None
  return train_step_flops(model_config, global_batch_size, host_batch["input_ids"].shape[1],
                          host_batch["labels"].shape[1])
