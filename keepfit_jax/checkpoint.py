"""Orbax checkpoints of the train state together with the input pipeline's iterator state.

WORKDIR/checkpoints/<step>/{state, data}: `state` is the train-state dict (parameters, optimizer,
BatchNorm statistics, RNG, step), `data` the Grain iterator state as JSON. A run started again on
the same workdir restores the newest readable step onto the current mesh (the abstract state
carries the new shardings) and continues the data stream where it stopped.

Integrity: Orbax writes each step into a temporary directory and renames it when complete, so a
run killed mid-save leaves no half step behind. A finished step that cannot be read (a corrupt or
truncated file) is moved aside to `<step>.corrupt` with a warning and the previous step is used.
A checkpoint written by a different model (other shapes or parameter names) is never skipped
silently: it stops the run with the list of differences.
"""
from __future__ import annotations

import os
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging


class CheckpointMismatchError(ValueError):
  """The checkpoint does not fit the model in the config."""


class NoReadableCheckpointError(RuntimeError):
  pass


def _path_str(path) -> str:
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def tree_shapes(tree) -> dict[str, tuple[int, ...]]:
  return {_path_str(p): tuple(leaf.shape) for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def shape_differences(saved: dict, wanted: dict, limit: int = 20) -> list[str]:
  """Human-readable differences between two {path: shape} tables (empty when they match).

  Parameters are listed before BatchNorm statistics and optimizer state, which only mirror them.
  """
  order = lambda k: (0 if k.startswith("params/") else 1 if k.startswith("batch_stats/") else 2, k)
  out = [f"missing in checkpoint: {k} {wanted[k]}" for k in sorted(wanted.keys() - saved.keys(), key=order)]
  out += [f"not in this model: {k} {saved[k]}" for k in sorted(saved.keys() - wanted.keys(), key=order)]
  out += [f"shape differs: {k} checkpoint {saved[k]} vs model {wanted[k]}"
          for k in sorted(wanted.keys() & saved.keys(), key=order) if tuple(saved[k]) != tuple(wanted[k])]
  return out if len(out) <= limit else out[:limit] + [f"... and {len(out) - limit} more"]


class Checkpointer:

  def __init__(self, workdir: str, *, keep: int = 3):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self._keep = keep
    self._open()

  def _open(self):
    options = ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True, enable_async_checkpointing=True)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_state: dict) -> None:
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    data=ocp.args.JsonSave(data_state)), force=True)

  def check_compatible(self, step: int, abstract_state: Any) -> None:
    """Raises CheckpointMismatchError listing every parameter whose name or shape differs."""
    saved = self.manager.item_metadata(step)["state"]
    problems = shape_differences(tree_shapes(saved), tree_shapes(abstract_state))
    if problems:
      raise CheckpointMismatchError(
          f"checkpoint {self.directory}/{step} was written by a different model:\n  " + "\n  ".join(problems) +
          "\nUse a new --workdir for this config, or the config that wrote the checkpoint.")

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    self.check_compatible(step, abstract_state)
    restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                                  data=ocp.args.JsonRestore()))
    return restored["state"], restored["data"]

  def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict] | None:
    """The newest readable checkpoint as (step, state, data state); None when there is none."""
    steps = sorted(self.manager.all_steps(), reverse=True)
    for step in steps:
      try:
        state, data = self._restore_with_retry(step, abstract_state)
        return step, state, data
      except CheckpointMismatchError:
        raise
      except Exception as e:  # noqa: BLE001 -- a step that fails twice to read: try the previous one
        aside = os.path.join(self.directory, f"{step}.corrupt-{int(time.time())}")
        logging.warning("checkpoint %s/%d cannot be read (%s: %s); moved to %s, falling back to the previous one",
                        self.directory, step, type(e).__name__, str(e)[:300], aside)
        self.manager.close()
        if jax.process_index() == 0:
          os.rename(os.path.join(self.directory, str(step)), aside)
        self._open()
    aside = sorted(d for d in os.listdir(self.directory) if ".corrupt-" in d) if os.path.isdir(self.directory) else []
    if steps or aside:
      # Never start silently from scratch over a run whose checkpoints could not be read.
      raise NoReadableCheckpointError(
          f"no readable checkpoint in {self.directory}; unreadable ones were moved aside ({', '.join(aside)}). "
          f"Restore them from a backup, or delete them to start this run from scratch")
    return None

  def _restore_with_retry(self, step: int, abstract_state: Any, attempts: int = 2):
    """A read can fail for a passing reason (a network filesystem); a checkpoint is corrupt if it fails twice."""
    for attempt in range(attempts):
      try:
        return self.restore(step, abstract_state)
      except CheckpointMismatchError:
        raise
      except Exception as e:  # noqa: BLE001
        if attempt + 1 == attempts:
          raise
        logging.warning("reading checkpoint %s/%d failed (%s); trying once more", self.directory, step, e)
        time.sleep(1.0)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_with_shardings(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
