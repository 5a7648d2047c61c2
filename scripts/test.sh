#!/usr/bin/env bash
# Set up a virtual environment (once) and run the default test suite on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q -e '.[test,search,aot]'
source scripts/allocator.sh
use_fast_allocator .venv  # the suite's subprocesses (Grain and ingest workers, multi-host runs) inherit it
exec .venv/bin/python -m pytest -q tests "$@"
