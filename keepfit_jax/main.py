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
  from keepfit_jax.checkpoint import CheckpointMismatchError
  from keepfit_jax.sharding import ConfigError

  try:
    metrics = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except train.Preempted as e:
    logging.warning("%s", e)
    sys.exit(train.PREEMPTED_EXIT_CODE)
  except (ConfigError, DataError, CheckpointMismatchError, train.NonFiniteLossError) as e:
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
