"""Fault injection for tests: kill a run at a step, corrupt a checkpoint or an image, poison a batch.

    proc = faults.start_run(["--config=configs/cfp.py:demo", ...], workdir)
    step = faults.signal_at_step(proc, workdir, 12, signal.SIGKILL)
    faults.corrupt_checkpoint(workdir)              # the newest step
    train.train_and_evaluate(config, workdir, fault_hook=faults.nan_at_steps({3, 4}))
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Callable, Iterable, Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def logged_steps(workdir: str, key: str = "train/loss") -> list[int]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  out = []
  with open(path) as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue
      if key in record:
        out.append(record["step"])
  return out


# The CFP demo shrunk to seconds a step on a CPU: 64 px, 16 + 16 images, a few hundred records.
TINY_DEMO_ARGS = ("--config=configs/cfp.py:demo", "--config.image_size=64", "--config.train.batch_size=16",
                  "--config.train.elite_batch_size=16", "--config.train.log_every=1", "--config.data.num_threads=1",
                  "--config.data.synthetic.train_records=200", "--config.data.synthetic.elite_records=64",
                  "--config.data.synthetic.heldout_per_class=4", "--config.data.synthetic.heldout_pairs=16")


def start_run(args: Sequence[str], workdir: str) -> subprocess.Popen:
  """`python -m keepfit_jax.main ARGS --workdir=WORKDIR` in a child process (output captured).

  The child gets its own devices: the parent's fake-device XLA flags are not passed on.
  """
  env = dict(os.environ, JAX_PLATFORMS="cpu", TRANSFORMERS_VERBOSITY="error")
  env.pop("XLA_FLAGS", None)
  return subprocess.Popen([sys.executable, "-m", "keepfit_jax.main", *args, f"--workdir={workdir}"], cwd=REPO,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def signal_at_step(proc: subprocess.Popen, workdir: str, step: int, sig: int = signal.SIGTERM,
                   timeout: float = 300) -> int:
  """Sends `sig` once metrics.jsonl has logged `step`; returns the last logged step at that moment."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    steps = logged_steps(workdir)
    if steps and max(steps) >= step:
      proc.send_signal(sig)
      return max(steps)
    if proc.poll() is not None:
      raise RuntimeError(f"run ended (exit {proc.returncode}) before step {step}:\n{proc.communicate()[0][-3000:]}")
    time.sleep(0.05)
  proc.kill()
  raise TimeoutError(f"run did not reach step {step} in {timeout}s:\n{proc.communicate()[0][-3000:]}")


def corrupt_checkpoint(workdir: str, step: int | None = None) -> str:
  """Overwrites the array data of a saved step with garbage (as a bad disk or a partial copy would)."""
  root = os.path.join(workdir, "checkpoints")
  if step is None:
    step = max(int(d) for d in os.listdir(root) if d.isdigit())
  state_dir = os.path.join(root, str(step), "state")
  files = [os.path.join(d, f) for d, _, fs in os.walk(state_dir) for f in fs]
  data_files = [f for f in files if os.sep + "d" + os.sep in f] or files
  for path in data_files:
    size = os.path.getsize(path)
    with open(path, "wb") as fh:
      fh.write(np.random.default_rng(0).bytes(max(size, 16)))
  return os.path.join(root, str(step))


def corrupt_image(path: str) -> None:
  with open(path, "wb") as f:
    f.write(b"this is not an image")


def nan_at_steps(steps: Iterable[int]) -> Callable[[int, dict], dict]:
  """A `fault_hook` for `train.train_and_evaluate`: the categorical images of these steps become NaN."""
  steps = set(steps)

  def hook(step: int, batch: dict) -> dict:
    if step not in steps:
      return batch
    cat = dict(batch["categorical"])
    cat["image"] = np.full(cat["image"].shape, np.nan, np.float32)
    return {**batch, "categorical": cat}

  return hook
