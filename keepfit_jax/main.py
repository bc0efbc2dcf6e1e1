"""Entry point: `python -m keepfit_jax.main --config=configs/cfp.py:demo --workdir=/tmp/keepfit`.

Overrides: `--config.train.total_steps=100`, `--config.loss.cap=0`, ... (ml_collections config_flags).
"""
from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/cfp.py:demo", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics.jsonl and TensorBoard events go.")
flags.mark_flags_as_required(["config", "workdir"])
_MULTIPROCESS = flags.DEFINE_bool(
    "multiprocess", False, "Call jax.distributed.initialize() (auto-detects Cloud TPU pods, SLURM, Open MPI).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for a manual multi-process "
                                   "launch (with --num_processes and --process_id).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (manual multi-process launch).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (manual multi-process launch).")


class _QuietLibraries(logging.logging.Filter):
  """Keeps Orbax's and Grain's per-save INFO chatter out of the progress log (warnings still pass)."""

  def filter(self, record):
    noisy = any(part in record.pathname for part in ("/orbax/", "/grain/", "/jax/_src/xla_bridge"))
    return record.levelno >= logging.logging.WARNING or not noisy


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(_QuietLibraries())
  from input_pipeline.pipeline import DataError
  from keepfit_jax import train
  from keepfit_jax.checkpoint import CheckpointMismatchError, NoReadableCheckpointError
  from keepfit_jax.sharding import ConfigError

  if _MULTIPROCESS.value or _COORDINATOR.value:
    import jax
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  try:
    metrics = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except train.Preempted as e:
    logging.warning("%s", e)
    sys.exit(train.PREEMPTED_EXIT_CODE)
  except (ConfigError, DataError, CheckpointMismatchError, NoReadableCheckpointError,
          train.NonFiniteLossError) as e:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if metrics:
    summary = " ".join(f"{k}={v:.3f}" for k, v in sorted(metrics.items()))
    logging.info("final evaluation: %s", summary)
    print(f"final evaluation: {summary}")


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  app.run(main)
