"""Two processes (jax.distributed on localhost, one CPU device each) train the same model as one process."""
import os
import socket
import subprocess

import pytest

from keepfit_jax import metric_writer
from keepfit_jax.testing import faults

ARGS = [*faults.TINY_DEMO_ARGS, "--config.train.total_steps=3", "--config.train.checkpoint_every=3",
        "--config.train.eval_every=3",
        # Dropout masks are drawn per batch position, and two processes interleave the global batch in
        # another order than one process: without dropout the two runs see the same function.
        "--config.model.reference.dropout=0.0"]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(workdir, extra=()):
  return faults.start_run([*ARGS, *extra], workdir)


def wait_all(procs, timeout=420):
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  return outs


def test_two_processes_match_one_process(tmp_path):
  single = str(tmp_path / "single")
  (out,) = wait_all([launch(single)])
  assert "final evaluation" in out, out[-3000:]

  multi = str(tmp_path / "multi")
  port = free_port()
  procs = [launch(multi, [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"])
           for i in range(2)]
  outs = wait_all(procs)
  for p, o in zip(procs, outs):
    assert p.returncode == 0, o[-3000:]
  assert "mesh {'data': 2, 'fsdp': 1, 'tensor': 1}" in outs[0]

  one = {r["step"]: r for r in metric_writer.read_metrics(single) if "train/loss" in r}
  two = {r["step"]: r for r in metric_writer.read_metrics(multi) if "train/loss" in r}
  assert sorted(two) == [1, 2, 3]              # written once, by process 0
  for step in (1, 2, 3):
    assert two[step]["train/loss"] == pytest.approx(one[step]["train/loss"], abs=1e-4), step
  assert os.path.isdir(os.path.join(multi, "checkpoints", "3"))
