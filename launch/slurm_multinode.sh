#!/usr/bin/env bash
# Multi-node GPU training under SLURM: one task per node, each driving its node's GPUs.
# jax.distributed.initialize() reads SLURM's environment (coordinator = first node).
#   sbatch --nodes=2 --ntasks-per-node=1 --gpus-per-node=8 launch/slurm_multinode.sh CONFIG WORKDIR
# WORKDIR must be on a file system every node sees (Orbax checkpoints are written jointly).
#SBATCH --job-name=designclip
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
set -euo pipefail
config=$1; workdir=$2; shift 2
srun --kill-on-bad-exit=1 .venv/bin/python -m designclip_jax.train --config "$config" --workdir "$workdir" \
  --config.distributed.enabled=True --config.model.dtype=bfloat16 "$@"
