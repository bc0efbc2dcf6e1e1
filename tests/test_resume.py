"""Interrupted training resumes where it stopped: same parameters, same data, no duplicate metric steps."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from keepfit_jax import train
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def final_params(workdir, step):
  restored = ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step), "state"))
  return restored["params"], int(restored["step"])


def metric_steps(workdir, key="train/loss"):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r["step"] for r in map(json.loads, f) if key in r]


def test_stopped_and_resumed_run_equals_uninterrupted_run(tmp_path):
  config = helpers.tiny_config(**{"train.total_steps": 4, "train.checkpoint_every": 2, "train.eval_every": 100})
  straight = str(tmp_path / "straight")
  train.train_and_evaluate(config, straight)

  resumed = str(tmp_path / "resumed")
  first_half = config.copy_and_resolve_references()
  first_half.train.total_steps = 2          # stops after the step-2 checkpoint, as a killed run would
  train.train_and_evaluate(first_half, resumed)
  assert metric_steps(resumed) == [1, 2]
  train.train_and_evaluate(config, resumed)

  a, step_a = final_params(straight, 4)
  b, step_b = final_params(resumed, 4)
  assert step_a == step_b == 4
  diffs = jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b))
  assert max(diffs) == 0.0, "resumed parameters differ from the uninterrupted run"
  assert metric_steps(resumed) == [1, 2, 3, 4]


CLI_OVERRIDES = ["--config.image_size=64", "--config.train.batch_size=16", "--config.train.elite_batch_size=16",
                 "--config.train.total_steps=40", "--config.train.log_every=1", "--config.train.checkpoint_every=1000",
                 "--config.train.eval_every=1000", "--config.data.num_threads=1",
                 "--config.data.synthetic.train_records=200", "--config.data.synthetic.elite_records=64",
                 "--config.data.synthetic.heldout_per_class=4", "--config.data.synthetic.heldout_pairs=16"]


def run_demo(workdir, **kwargs):
  cmd = [sys.executable, "-m", "keepfit_jax.main", "--config=configs/cfp.py:demo", f"--workdir={workdir}",
         *CLI_OVERRIDES]
  env = dict(os.environ, JAX_PLATFORMS="cpu", TRANSFORMERS_VERBOSITY="error")
  return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          **kwargs)


def test_sigterm_checkpoints_and_the_same_command_finishes_the_run(tmp_path):
  workdir = str(tmp_path / "run")
  proc = run_demo(workdir)
  deadline = time.time() + 240
  while time.time() < deadline:
    if os.path.exists(os.path.join(workdir, "metrics.jsonl")) and len(metric_steps(workdir)) >= 3:
      break
    time.sleep(0.2)
  else:
    proc.kill()
    raise AssertionError("the demo did not reach step 3 in time:\n" + proc.communicate()[0][-3000:])
  proc.send_signal(signal.SIGTERM)
  out = proc.communicate(timeout=120)[0]
  assert proc.returncode == train.PREEMPTED_EXIT_CODE, out[-3000:]
  stopped_at = max(metric_steps(workdir))
  assert 3 <= stopped_at < 40
  assert os.path.isdir(os.path.join(workdir, "checkpoints", str(stopped_at)))

  proc = run_demo(workdir)
  out = proc.communicate(timeout=300)[0]
  assert proc.returncode == 0, out[-3000:]
  assert f"resumed from" in out and f"at step {stopped_at}" in out
  assert metric_steps(workdir) == list(range(1, 41))   # no gap, no duplicate
  assert final_params(workdir, 40)[1] == 40
