"""Issue 4's guarantees: a killed, preempted or corrupted run ends exactly where an uninterrupted one does.

All runs are real `python -m keepfit_jax.main` processes on the tiny CFP demo (40 steps, checkpoints every 10).
On the CPU backend XLA is deterministic, so the parameters are compared bit for bit.
"""
import os
import random
import re
import shutil
import signal

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from keepfit_jax import train
from keepfit_jax.testing import faults

ARGS = [*faults.TINY_DEMO_ARGS, "--config.train.total_steps=40", "--config.train.checkpoint_every=10",
        "--config.train.eval_every=1000"]


def finish(proc, timeout=400):
  out = proc.communicate(timeout=timeout)[0]
  return proc.returncode, out


def params_at(workdir, step):
  restored = ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step), "state"))
  assert int(restored["step"]) == step
  return restored["params"]


def assert_bitwise_equal(a, b):
  diffs = jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b))
  assert max(diffs) == 0.0, f"parameters differ by up to {max(diffs)}"


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("straight"))
  rc, out = finish(faults.start_run(ARGS, workdir))
  assert rc == 0, out[-3000:]
  assert faults.logged_steps(workdir) == list(range(1, 41))
  return workdir


def test_sigkill_then_resume_equals_uninterrupted(straight, tmp_path):
  workdir = str(tmp_path / "killed")
  proc = faults.start_run(ARGS, workdir)
  killed_at = faults.signal_at_step(proc, workdir, 25, signal.SIGKILL)
  rc, _ = finish(proc)
  assert rc == -signal.SIGKILL
  rc, out = finish(faults.start_run(ARGS, workdir))
  assert rc == 0, out[-3000:]
  resumed_at = int(re.search(r"resumed from .* at step (\d+)", out).group(1))
  assert resumed_at % 10 == 0 and 10 <= resumed_at <= killed_at    # the newest checkpoint finished before the kill
  assert faults.logged_steps(workdir) == list(range(1, 41))   # no gap, no duplicate step
  assert_bitwise_equal(params_at(workdir, 40), params_at(straight, 40))


def test_sigterm_at_a_random_step_checkpoints_exits_42_and_resumes(straight, tmp_path):
  workdir = str(tmp_path / "preempted")
  at = random.Random(os.getpid()).randint(3, 35)
  proc = faults.start_run(ARGS, workdir)
  faults.signal_at_step(proc, workdir, at, signal.SIGTERM)
  rc, out = finish(proc)
  assert rc == train.PREEMPTED_EXIT_CODE, out[-3000:]
  stopped = max(faults.logged_steps(workdir))
  assert os.path.isdir(os.path.join(workdir, "checkpoints", str(stopped))), "checkpoint at the stopping step"
  rc, out = finish(faults.start_run(ARGS, workdir))
  assert rc == 0, out[-3000:]
  assert f"at step {stopped}" in out
  assert faults.logged_steps(workdir) == list(range(1, 41))
  assert_bitwise_equal(params_at(workdir, 40), params_at(straight, 40))


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(straight, tmp_path):
  workdir = str(tmp_path / "corrupt")
  shutil.copytree(straight, workdir)
  faults.corrupt_checkpoint(workdir, 40)
  rc, out = finish(faults.start_run(ARGS, workdir))
  assert rc == 0, out[-3000:]
  assert "cannot be read" in out and "falling back" in out and "at step 30" in out
  assert any(d.startswith("40.corrupt") for d in os.listdir(os.path.join(workdir, "checkpoints")))
  assert faults.logged_steps(workdir) == list(range(1, 41))
  assert_bitwise_equal(params_at(workdir, 40), params_at(straight, 40))


def test_checkpoint_of_another_model_lists_the_differences(straight, tmp_path):
  workdir = str(tmp_path / "other")
  shutil.copytree(straight, workdir)
  rc, out = finish(faults.start_run(ARGS + ["--config.model.text.hidden_size=32"], workdir))
  assert rc == 2
  assert "was written by a different model" in out
  assert re.search(r"shape differs: params/text/\S+ checkpoint \(\d+, 64\) vs model \(\d+, 32\)", out)
  assert "more" in out        # a long list is cut, with the count of the rest


def test_resuming_with_another_data_stream_is_refused(straight, tmp_path):
  workdir = str(tmp_path / "other_batch")
  shutil.copytree(straight, workdir)
  rc, out = finish(faults.start_run(ARGS + ["--config.train.batch_size=8"], workdir))
  assert rc == 2
  assert "trained on another data stream (batch_size: checkpoint 16 vs config 8)" in out


def test_unreadable_checkpoints_never_restart_silently_from_scratch(tmp_path):
  from keepfit_jax.checkpoint import Checkpointer, NoReadableCheckpointError
  os.makedirs(tmp_path / "checkpoints" / "30.corrupt-1700000000")
  with pytest.raises(NoReadableCheckpointError, match="30.corrupt-1700000000"):
    Checkpointer(str(tmp_path)).restore_latest({})
