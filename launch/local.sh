#!/usr/bin/env bash
# Train on this machine (CPU or its GPUs). Usage: launch/local.sh CONFIG WORKDIR [--config.x=y ...]
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/synthetic_tiny.py}; workdir=${2:-runs/local}; shift $(( $# < 2 ? $# : 2 ))
source scripts/allocator.sh
use_fast_allocator .venv
exec .venv/bin/python -m designclip_jax.train --config "$config" --workdir "$workdir" "$@"
