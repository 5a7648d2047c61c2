#!/usr/bin/env bash
# Multi-node GPU training under SLURM: one task per node, each driving its node's GPUs.
# jax.distributed.initialize() reads SLURM's environment (coordinator = first node).
#   sbatch --nodes=2 --ntasks-per-node=1 --gpus-per-node=8 launch/slurm_multinode.sh CONFIG WORKDIR
# WORKDIR: a file system every node sees, or a gs:// bucket (pip install -e '.[gcs]'); Orbax checkpoints
# are written jointly by all nodes.
# Preemption and the time limit: SLURM sends SIGTERM to the tasks (--signal: 120 s before the limit). Every
# process then saves the same step and exits with status 75; this script requeues the job on that status
# and the requeued job resumes from the checkpoint (--requeue also lets SLURM requeue preempted jobs).
#SBATCH --job-name=designclip
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
#SBATCH --requeue
#SBATCH --signal=TERM@120
set -euo pipefail
config=$1; workdir=$2; shift 2
source scripts/allocator.sh  # run from the submit directory, the checkout (sbatch runs a copy of this file)
use_fast_allocator .venv    # srun passes the environment to the tasks
trap 'echo "SIGTERM: waiting for the checkpoint" >&2' TERM  # the batch shell outlives srun to requeue
status=0
srun --kill-on-bad-exit=1 .venv/bin/python -m designclip_jax.train --config "$config" --workdir "$workdir" \
  --config.distributed.enabled=True --config.model.dtype=bfloat16 "$@" || status=$?
if [ "$status" -eq 75 ]; then  # designclip_jax.train.loop.PREEMPTED_EXIT_CODE: checkpoint saved
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
