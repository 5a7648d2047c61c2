#!/usr/bin/env bash
# Set up a virtual environment (once) and run the main job on the embedded synthetic set:
# generate -> ingest -> train synthetic_tiny -> evaluate (a few minutes on a 2-core CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q -e .
source scripts/allocator.sh
use_fast_allocator .venv
exec .venv/bin/python -m designclip_jax.train --config configs/synthetic_tiny.py --workdir runs/synthetic_tiny "$@"
