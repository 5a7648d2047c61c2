#!/usr/bin/env bash
# One process driving all GPUs of one node (JAX's single-controller model needs no torchrun).
# Usage: launch/gpu_single_node.sh CONFIG WORKDIR [--config.x=y ...]
set -euo pipefail
cd "$(dirname "$0")/.."
config=$1; workdir=$2; shift 2
source scripts/allocator.sh
use_fast_allocator .venv
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
exec .venv/bin/python -m designclip_jax.train --config "$config" --workdir "$workdir" \
  --config.model.dtype=bfloat16 "$@"
