#!/usr/bin/env bash
# Cloud TPU pod slice: run the same command on every worker; JAX discovers the pod topology.
#   launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.x=y ...]
# WORKDIR: a gs:// bucket path (Orbax writes it from all hosts; metrics, TensorBoard and model.json go there
# too). The data set directory may be a gs:// path as well, or a copy on every worker.
# Preemption or maintenance: a SIGTERM on any worker makes every worker save the same step and exit with
# status 75 (designclip_jax.train.loop.PREEMPTED_EXIT_CODE); run this script again, on the same or a
# recreated slice, and training resumes from that checkpoint.
set -euo pipefail
tpu=$1; zone=$2; config=$3; workdir=$4; shift 4
extra="$*"
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "
  cd ~/designclip_jax && (test -d .venv || (python3 -m venv .venv && .venv/bin/pip install -q -e '.[gcs]' 'jax[tpu]'))
  .venv/bin/python -m designclip_jax.train --config $config --workdir $workdir \
    --config.distributed.enabled=True --config.model.dtype=bfloat16 $extra ||
  { status=\$?; [ \$status -ne 75 ] || echo \"\$(hostname): preempted, checkpoint saved; rerun to resume\"; exit \$status; }"
