#!/usr/bin/env bash
# Set up a virtual environment (once) and run the default test suite on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q -e '.[test,search,aot]'
exec .venv/bin/python -m pytest -q tests "$@"
