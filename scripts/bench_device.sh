#!/usr/bin/env bash
# One-command accelerator benchmark (issue #14 item 5): bf16 train-step MFU (BERT-base and
# RoBERTa-large shaped encoder-decoders at 512 -> 128) and beam search vs transformers PyTorch.
#   bash scripts/bench_device.sh          # on a GPU / TPU host (its python3 needs jax, flax, optax,
#                                         # torch, transformers, safetensors)
#   bash scripts/bench_device.sh --cpu    # tiny shapes on the CPU: checks the script end to end
# Uses .venv/bin/python when there is one (this repo's install), else python3.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
export PYTHONUNBUFFERED=1 USE_TF=0
if [[ " $* " == *" --cpu "* ]]; then export JAX_PLATFORMS=cpu; fi
exec "$PY" -m scripts.bench_device "$@"
