#!/usr/bin/env bash
# Cloud TPU pod slice: run the same command on every worker; JAX discovers the pod topology.
#   launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.x=y ...]
# WORKDIR should be a gs:// bucket path (Orbax writes it from all hosts); the data set directory
# must be readable from every worker (GCS or a copy on each).
set -euo pipefail
tpu=$1; zone=$2; config=$3; workdir=$4; shift 4
extra="$*"
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "
  cd ~/designclip_jax && (test -d .venv || (python3 -m venv .venv && .venv/bin/pip install -q -e . 'jax[tpu]'))
  .venv/bin/python -m designclip_jax.train --config $config --workdir $workdir \
    --config.distributed.enabled=True --config.model.dtype=bfloat16 $extra"
