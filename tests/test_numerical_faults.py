"""A non-finite step is skipped and counted; too many in a row stop the run with the step and datasets named."""
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from keepfit_jax import metric_writer, train
from keepfit_jax.testing import faults
from tests import helpers


def test_nan_batches_are_skipped_counted_and_stop_the_run_when_consecutive(tmp_path):
  config = helpers.tiny_config(**{"train.total_steps": 8, "train.checkpoint_every": 1, "train.eval_every": 100,
                                  "train.max_consecutive_skips": 2, "train.keep_checkpoints": 10})
  workdir = str(tmp_path)
  with pytest.raises(train.NonFiniteLossError, match=r"2 consecutive steps up to step 5 .*synthetic_cfp_"):
    train.train_and_evaluate(config, workdir, fault_hook=faults.nan_at_steps({2, 4, 5}))

  by_step = {r["step"]: r for r in metric_writer.read_metrics(workdir) if "train/loss" in r}
  assert by_step[1]["train/skipped_total"] == 0
  assert by_step[2]["train/loss"] == "nan" and by_step[2]["train/skipped_total"] == 1
  assert np.isfinite(by_step[3]["train/loss"]) and by_step[3]["train/skipped_total"] == 1
  assert by_step[5]["train/skipped_total"] == 3 and 6 not in by_step

  # The skipped step 2 left parameters, optimizer state and BatchNorm statistics exactly as after step 1.
  load = lambda s: ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(s), "state"))
  after1, after2, after3 = load(1), load(2), load(3)
  for part in ("params", "batch_stats", "opt_state"):
    same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)), after1[part], after2[part])
    assert all(jax.tree.leaves(same)), part
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), after2["params"], after3["params"])
  assert any(jax.tree.leaves(changed))
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(after3["params"]))
