#!/usr/bin/env bash
# SLURM batch script: one process per node, all GPUs of the node in that process.
# jax.distributed.initialize() (--multiprocess) reads the SLURM environment for the coordinator and ranks.
#
#   sbatch --nodes=4 --gpus-per-node=8 launch/gpu_slurm.sh configs/cfp.py /shared/keepfit/cfp \
#     --config.data.categorical_csv=... --config.data.elite_csv=... --config.data.image_root=...
#
# Requeue on preemption: SLURM sends SIGTERM before the kill; the run checkpoints and exits with 42,
# and `--requeue` + the same workdir resumes it.
#SBATCH --job-name=keepfit
#SBATCH --ntasks-per-node=1
#SBATCH --requeue
#SBATCH --signal=TERM@120
set -euo pipefail
CONFIG=${1:?usage: gpu_slurm.sh CONFIG WORKDIR [overrides...]}
WORKDIR=${2:?usage: gpu_slurm.sh CONFIG WORKDIR [overrides...]}
shift 2
cd "${SLURM_SUBMIT_DIR:-.}"
# Install once per node, e.g.: python3 -m venv .venv && .venv/bin/pip install -r requirements.txt 'jax[cuda12]<0.11'
srun --kill-on-bad-exit=1 .venv/bin/python -m keepfit_jax.main --multiprocess --config="$CONFIG" \
  --workdir="$WORKDIR" --config.mesh.data=-1 "$@"
