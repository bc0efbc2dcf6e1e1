#!/usr/bin/env bash
# Runs keepfit_jax on every host of a Cloud TPU VM pod slice. jax.distributed.initialize() (--multiprocess)
# finds the coordinator, process count and index from the TPU metadata. Preemption (SIGTERM) checkpoints
# and exits with 42; this loop then restarts the same command, which resumes from the checkpoint.
#
#   TPU=my-v5p-64 ZONE=us-east5-a WORKDIR=/mnt/shared/keepfit/cfp CONFIG=configs/cfp.py \
#     bash launch/tpu_pod.sh --config.data.categorical_csv=... --config.data.elite_csv=... --config.data.image_root=...
set -euo pipefail
: "${TPU:?set TPU to the TPU VM name}" "${ZONE:?set ZONE}" "${WORKDIR:?set WORKDIR (a path every host shares: a gcsfuse or Filestore mount)}"
CONFIG=${CONFIG:-configs/cfp.py}
REPO_DIR=${REPO_DIR:-keepfit_jax}
EXTRA=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "
  set -e
  cd $REPO_DIR
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q -r requirements.txt 'jax[tpu]<0.11'
  while true; do
    rc=0
    .venv/bin/python -m keepfit_jax.main --multiprocess --config=$CONFIG --workdir=$WORKDIR $EXTRA || rc=\$?
    [ \$rc -eq 42 ] || exit \$rc      # 42 = preempted after a checkpoint: run again to resume
  done"
