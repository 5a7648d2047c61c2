#!/usr/bin/env bash
# One Cloud TPU worker's part of launch/tpu_pod.sh, run there from the folder it copied (dist/ holds the wheel):
#   bash designclip_launch/launch/tpu_worker.sh WHEEL CONFIG WORKDIR [--config.x=y ...]
# Installs WHEEL into $DESIGNCLIP_VENV (default ~/designclip_jax_venv; created on first use) and trains under
# a fast allocator. DRY_RUN=1 prints the commands instead of running them.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
wheel=$here/dist/$1; config=$here/$2; workdir=$3; shift 3
venv=${DESIGNCLIP_VENV:-$HOME/designclip_jax_venv}

run() {  # the command, or with DRY_RUN=1 its shell-quoted text
  if [ "${DRY_RUN:-}" = 1 ]; then printf '%q ' "$@"; echo; else "$@"; fi
}

[ -x "$venv/bin/python" ] || run python3 -m venv "$venv"
# the dependencies (gs:// clients; the aot extra is jax[tpu], the TPU runtime), then this wheel over whatever
# build of the same version the environment held
run "$venv/bin/pip" install --quiet "${wheel}[gcs,aot]"
run "$venv/bin/pip" install --quiet --force-reinstall --no-deps "$wheel"
source "$here/scripts/allocator.sh"
use_fast_allocator "$venv"
status=0
run env "LD_PRELOAD=${LD_PRELOAD:-}" "$venv/bin/python" -m designclip_jax.train --config "$config" \
  --workdir "$workdir" --config.distributed.enabled=True --config.model.dtype=bfloat16 "$@" || status=$?
[ "$status" -ne 75 ] || echo "$(hostname): preempted, checkpoint saved; run launch/tpu_pod.sh again to resume"
exit "$status"
