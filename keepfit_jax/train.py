"""The KeepFIT V2 training loop: init or resume, train, evaluate, checkpoint.

Read top to bottom: config checks -> mesh -> data -> tokenizer -> model and sharded train state
(restored from WORKDIR/checkpoints when present) -> jitted train step -> loop. SIGTERM / Ctrl-C
checkpoint at the next step boundary and exit with PREEMPTED_EXIT_CODE; starting the same
command again continues from there with the same data stream.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import pickle
import signal
import threading
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
import optax
from absl import logging

from input_pipeline import pipeline, prompts, sources
from keepfit_jax import evaluate, sharding, tokenizer as tokenizer_lib, weights
from keepfit_jax.checkpoint import Checkpointer, abstract_with_shardings
from keepfit_jax.metric_writer import MetricWriter
from keepfit_jax.models.keepfit import KeepFITConfig
from keepfit_jax.sharding import ConfigError
from keepfit_jax.train_step import (LossWeights, abstract_model, build_model, compute_dtype, init_state,
                                    make_optimizer, train_step)

PREEMPTED_EXIT_CODE = 42


class Preempted(Exception):
  """Training stopped on a signal after writing a checkpoint; rerun the same command to resume."""

  def __init__(self, step: int, signame: str):
    super().__init__(f"stopped by {signame} at step {step}; checkpoint saved, rerun the same command to resume")
    self.step = step


class NonFiniteLossError(RuntimeError):
  pass


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks that need no devices or data; each failure is one line naming the key."""
  if config.modality not in ("cfp", "ffa", "oct"):
    raise ConfigError(f"config.modality must be 'cfp', 'ffa' or 'oct', got {config.modality!r}")
  compute_dtype(config.dtype)
  for key in ("batch_size", "elite_batch_size", "total_steps", "log_every", "checkpoint_every", "eval_every"):
    if int(config.train[key]) <= 0:
      raise ConfigError(f"config.train.{key} must be positive, got {config.train[key]}")
  for key in ("cat", "elite", "ref", "cap"):
    if float(config.loss[key]) < 0:
      raise ConfigError(f"config.loss.{key} must be >= 0, got {config.loss[key]}")
  if config.loss.contrastive_scope not in ("global", "per_device"):
    raise ConfigError(f"config.loss.contrastive_scope must be 'global' or 'per_device', "
                      f"got {config.loss.contrastive_scope!r}")
  if config.text.max_len > config.model.text.max_position_embeddings:
    raise ConfigError(f"config.text.max_len={config.text.max_len} exceeds "
                      f"config.model.text.max_position_embeddings={config.model.text.max_position_embeddings}")
  if config.model.decoder.enabled and config.text.max_len > config.model.decoder.max_len:
    raise ConfigError(f"config.text.max_len={config.text.max_len} exceeds "
                      f"config.model.decoder.max_len={config.model.decoder.max_len}")
  if config.image_size < 32:
    raise ConfigError(f"config.image_size must be at least 32, got {config.image_size}")
  try:
    model_cfg = KeepFITConfig.from_config(config.model, image_size=config.image_size, vocab_size=1)
  except (ValueError, KeyError, AttributeError) as e:
    raise ConfigError(f"config.model: {e}") from e
  m = config.model
  for key, width, heads in (("text", m.text.hidden_size, m.text.num_heads),
                            ("decoder", m.decoder.width, m.decoder.num_heads),
                            ("reference", m.projection_dim, m.reference.num_heads)):
    if width % heads:
      raise ConfigError(f"config.model.{key}: width {width} is not divisible by {heads} heads")
  if m.reference.softmax_over not in ("keys", "heads"):
    raise ConfigError(f"config.model.reference.softmax_over must be 'keys' or 'heads', got {m.reference.softmax_over!r}")
  patch = getattr(model_cfg.vision, "patch_size", None)
  if patch and config.image_size % patch:
    raise ConfigError(f"config.image_size={config.image_size} is not a multiple of the ViT patch size {patch}")
  if config.loss.cap > 0 and not m.decoder.enabled:
    raise ConfigError("config.loss.cap > 0 needs the caption decoder: set config.model.decoder.enabled=True "
                      "or config.loss.cap=0")


def load_text_tokenizer(config: ml_collections.ConfigDict, workdir: str):
  if config.text.tokenizer == "synthetic":
    directory = os.path.join(workdir, "tokenizer")
    if not os.path.exists(os.path.join(directory, "vocab.txt")):
      if config.data.source != "synthetic":
        raise ConfigError("config.text.tokenizer='synthetic' builds a vocabulary for the synthetic demo only; "
                          "set config.text.tokenizer to a BERT tokenizer directory or hub id")
      tokenizer_lib.write_vocab(sources.synthetic_corpus(config), directory)
    return tokenizer_lib.load_tokenizer(directory, lower_case=True)
  try:
    return tokenizer_lib.load_tokenizer(config.text.tokenizer)
  except (OSError, ValueError) as e:
    raise ConfigError(f"config.text.tokenizer={config.text.tokenizer!r} cannot be loaded ({e}); point it at a "
                      f"directory with vocab.txt or tokenizer.json (hub ids need internet)") from e


class _StopFlag:
  """SIGTERM / SIGINT set a flag; the loop checkpoints at the next step boundary."""

  def __init__(self):
    self.signame = None
    self._previous = {}
    self._sync_point_available = True

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():    # signals reach the main thread only
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    if self.signame is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt        # a second Ctrl-C stops at once
    self.signame = signal.Signals(signum).name
    logging.warning("%s received: checkpointing at the next step boundary", self.signame)

  def requested(self, step: int) -> str | None:
    """Why to stop after `step`, agreed by all processes: a signal on any of them, or the preemption notice
    that JAX's coordination service relays on Cloud TPU / GCE (multi-process runs)."""
    if jax.process_count() == 1:
      return self.signame
    from jax.experimental import multihost_utils
    flags = multihost_utils.process_allgather(np.int32(self.signame is not None))
    if np.asarray(flags).any():
      return self.signame or "a signal on another process"
    if self._sync_point_available:
      try:
        if multihost_utils.reached_preemption_sync_point(step):
          return "preemption notice"
      except RuntimeError as e:     # no preemption service (e.g. a manual CPU launch)
        logging.info("preemption sync point unavailable: %s", e)
        self._sync_point_available = False
    return None

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _to_global(batch: Any, shardings: Any, process_count: int) -> Any:
  def put(x, s):
    global_shape = (x.shape[0] * process_count,) + x.shape[1:]
    return jax.make_array_from_process_local_data(s, x, global_shape)
  return jax.tree.map(put, batch, shardings)


@dataclasses.dataclass
class TrainProgram:
  """Everything the loop needs to run the jitted train step on a mesh."""
  graphdef: Any
  tx: Any
  schedule: Any
  state_shardings: Any
  batch_shardings: Any
  abstract_state: Any
  init: Any            # () -> sharded initial train state (jitted)
  step: Any            # (state, batch) -> (state, metrics), jitted with shardings, state donated


def build_train_program(config, model_cfg: KeepFITConfig, mesh, sample_batch) -> TrainProgram:
  """The sharded init and train-step functions for `model_cfg` on `mesh` (nothing is allocated here).

  Call outside `jax.set_mesh`: abstract model creation must not turn logical names into shardings itself.
  """
  rules = sharding.rules_dict(config.sharding_rules)
  dtype = compute_dtype(config.dtype)
  graphdef, abs_params, abs_bstats, (pspecs, bspecs) = abstract_model(model_cfg, dtype)
  tx, schedule = make_optimizer(config.optim, config.train.total_steps)
  init_fn = lambda: init_state(build_model(model_cfg, dtype, config.seed), tx, config.seed)
  abstract_state = jax.eval_shape(init_fn)
  param_sh = sharding.tree_shardings(pspecs, abs_params, mesh, rules)
  replicated = sharding.replicated(mesh)
  state_sh = {
      "step": replicated, "rng": replicated, "skipped": replicated, "skipped_total": replicated,
      "params": param_sh,
      "batch_stats": sharding.tree_shardings(bspecs, abs_bstats, mesh, rules),
      "opt_state": optax.tree_map_params(tx, lambda _, s: s, abstract_state["opt_state"], param_sh,
                                         transform_non_params=lambda _: replicated),
  }
  batch_sh = jax.tree.map(lambda x: sharding.batch_sharding(mesh, rules, np.ndim(x)), sample_batch)
  groups = sharding.data_parallel_size(mesh, rules) if config.loss.contrastive_scope == "per_device" else 1
  step_fn = jax.jit(
      functools.partial(train_step, graphdef=graphdef, tx=tx, weights=LossWeights.from_config(config.loss),
                        groups=groups, schedule=schedule),
      in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, replicated), donate_argnums=(0,))
  return TrainProgram(graphdef=graphdef, tx=tx, schedule=schedule, state_shardings=state_sh,
                      batch_shardings=batch_sh, abstract_state=abstract_state,
                      init=jax.jit(init_fn, out_shardings=state_sh), step=step_fn)


def data_fingerprint(config, streams: pipeline.Streams) -> dict:
  """What decides the data stream: a run resumed with a different one would not continue the same stream."""
  return {"seed": config.seed, "image_size": config.image_size, "max_len": config.text.max_len,
          "batch_size": config.train.batch_size, "elite_batch_size": config.train.elite_batch_size,
          "categorical": [[cs.name, len(cs.source), float(cs.weight)] for cs in streams.categorical],
          "elite": len(streams.elite)}


def _check_same_stream(saved: dict | None, current: dict, directory: str) -> None:
  if not saved:
    return
  diffs = [f"{k}: checkpoint {saved.get(k)!r} vs config {current[k]!r}" for k in current
           if json.loads(json.dumps(saved.get(k))) != json.loads(json.dumps(current[k]))]
  if diffs:
    raise ConfigError(f"the checkpoint in {directory} was trained on another data stream (" + "; ".join(diffs) +
                      "). Resume with the config that wrote it, or use a new --workdir.")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       fault_hook: Callable[[int, dict], dict] | None = None) -> dict[str, float]:
  """Trains (or resumes) to config.train.total_steps; returns the last evaluation's metrics.

  `fault_hook(step, host_batch) -> host_batch` lets tests inject faults (see keepfit_jax.testing.faults).
  """
  with contextlib.ExitStack() as resources:
    stop = resources.enter_context(_StopFlag())      # a signal during setup also ends with PREEMPTED_EXIT_CODE
    return _train_and_evaluate(config, workdir, fault_hook, stop, resources)


def _train_and_evaluate(config, workdir, fault_hook, stop: "_StopFlag", resources: contextlib.ExitStack):
  validate_config(config)
  if "://" in workdir:
    raise ConfigError(f"--workdir={workdir}: use a filesystem path shared by all hosts (e.g. a gcsfuse or NFS "
                      f"mount); URLs are not supported yet")
  streams = sources.build_streams(config)          # missing data fails here, before anything is compiled
  mesh = sharding.create_mesh(config.mesh)
  rules = sharding.rules_dict(config.sharding_rules)
  dp = sharding.data_parallel_size(mesh, rules)
  if dp % jax.process_count():
    raise ConfigError(f"config.mesh {dict(mesh.shape)}: the batch is split over {dp} data-parallel devices, which "
                      f"cannot be divided among {jax.process_count()} processes; give the data/fsdp axes a multiple "
                      f"of the process count")
  for key in ("batch_size", "elite_batch_size"):
    if config.train[key] % dp:
      raise ConfigError(f"config.train.{key}={config.train[key]} is not divisible by the {dp} data-parallel "
                        f"devices of mesh {dict(mesh.shape)}")
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:          # what keepfit_jax.inference.Predictor.from_workdir rebuilds the model from
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  tok = load_text_tokenizer(config, workdir)
  encoder = tokenizer_lib.TextEncoder(tok, config.text.max_len)
  model_cfg = KeepFITConfig.from_config(config.model, image_size=config.image_size, vocab_size=len(tok))

  dataset = pipeline.step_dataset(
      streams, encoder, image_size=config.image_size, batch_size=config.train.batch_size,
      elite_batch_size=config.train.elite_batch_size, seed=config.seed, augment=config.data.augment,
      process_index=jax.process_index(), process_count=jax.process_count())
  program = build_train_program(config, model_cfg, mesh, dataset[0])
  fingerprint = data_fingerprint(config, streams)
  resources.enter_context(jax.set_mesh(mesh))
  checkpointer = Checkpointer(workdir, keep=config.train.keep_checkpoints)
  resources.callback(checkpointer.close)
  writer = MetricWriter(workdir)
  resources.callback(writer.close)
  restored = checkpointer.restore_latest(abstract_with_shardings(program.abstract_state, program.state_shardings))
  if restored is not None:
    latest, state, data_state = restored
    _check_same_stream(data_state.get("fingerprint"), fingerprint, checkpointer.directory)
    writer.truncate_after(latest)
    logging.info("resumed from %s at step %d", checkpointer.directory, latest)
  else:
    state, data_state = program.init(), None
    if any(config.init.values()):
      try:
        state["params"], state["batch_stats"] = weights.apply_init(config, state["params"], state["batch_stats"])
      except (ValueError, OSError, RuntimeError, pickle.UnpicklingError) as e:
        raise ConfigError(f"config.init: {e}") from e
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(program.abstract_state["params"]))
  logging.info("model: %.2fM parameters; mesh %s", n_params / 1e6, dict(mesh.shape))

  iterator = pipeline.make_iterator(dataset, num_threads=config.data.num_threads, prefetch=config.data.prefetch)
  if hasattr(iterator, "close"):
    resources.callback(iterator.close)
  if data_state is not None:
    iterator.set_state(data_state["iterator"])
  batch_sh = program.batch_shardings

  eval_sets = sources.build_eval_sets(config)
  evaluators = _make_evaluators(config, streams, eval_sets)
  embedder = evaluate.Embedder(program.graphdef, encoder, batch_size=config.eval.batch_size, mesh=mesh,
                               state_shardings=program.state_shardings,
                               batch_sharding_fn=lambda nd: sharding.batch_sharding(mesh, rules, nd),
                               batch_multiple=dp)

  total = config.train.total_steps
  step = int(jax.device_get(state["step"]))
  if stop.signame:
    raise Preempted(step, stop.signame)     # during setup: nothing new to save
  last_eval: dict[str, float] = {}
  images_per_step = config.train.batch_size + config.train.elite_batch_size
  t_start, step_start = time.time(), step
  while step < total:
    host_batch = next(iterator)
    if fault_hook is not None:
      host_batch = fault_hook(step + 1, host_batch)
    state, metrics = program.step(state, _to_global(host_batch, batch_sh, jax.process_count()))
    step += 1
    if step == step_start + 1:         # time from the end of the first (compiling) step
      t_start = time.time()
    if step % config.train.log_every == 0 or step == total or step == step_start + 1:
      m = jax.device_get(metrics)
      rate = (step - step_start - 1) / max(time.time() - t_start, 1e-9)
      scalars = {f"train/{k}": float(v) for k, v in m.items() if k != "finite"}
      scalars["train/skipped_total"] = float(jax.device_get(state["skipped_total"]))
      scalars["train/images_per_sec"] = rate * images_per_step
      writer.write(step, scalars)
      terms = " ".join(f"{k[5:]} {float(v):.4f}" for k, v in m.items() if k.startswith("loss_"))
      logging.info("step %d/%d | loss %.4f | %s | %.1f img/s | ETA %s", step, total, float(m["loss"]), terms,
                   rate * images_per_step, _format_eta((total - step) / rate) if rate > 0 else "-")
    skipped = int(jax.device_get(state["skipped"]))   # also paces the host with the device
    if skipped >= config.train.max_consecutive_skips:
      checkpointer.wait()
      raise NonFiniteLossError(
          f"{skipped} consecutive steps up to step {step} had a non-finite loss or gradient and were skipped; "
          f"the last batch came from categorical datasets "
          f"{sorted({streams.categorical[i].name for i in np.unique(host_batch['categorical']['source'])})}. "
          f"Lower config.optim.lr or check the data; the last good state is in {checkpointer.directory}")
    if step % config.train.eval_every == 0 or step == total:
      last_eval = run_evaluators(evaluators, embedder, state, step, writer)
    stopping = stop.requested(step)
    if step % config.train.checkpoint_every == 0 or step == total or stopping:
      checkpointer.save(step, state, {"iterator": iterator.get_state(), "step": step, "fingerprint": fingerprint})
    if stopping and step < total:
      checkpointer.wait()
      raise Preempted(step, stopping)
  checkpointer.wait()
  return last_eval


def _make_evaluators(config, streams: pipeline.Streams, eval_sets: sources.EvalSets) -> list:
  out = []
  eval_template = prompts.TEMPLATES[config.modality]
  if config.eval.zeroshot["enabled"] and eval_sets.zeroshot_images is not None:
    out.append(evaluate.ZeroShotEvaluator(
        eval_sets.zeroshot_images, eval_sets.zeroshot_labels, eval_sets.class_names, template=eval_template,
        knowledge=streams.knowledge if config.eval.zeroshot["domain_knowledge"] else None))
  if config.eval.retrieval["enabled"] and eval_sets.retrieval_images is not None:
    out.append(evaluate.RetrievalEvaluator(eval_sets.retrieval_images, eval_sets.retrieval_captions))
  return out


def run_evaluators(evaluators, embedder, state, step: int, writer: MetricWriter) -> dict[str, float]:
  results = {}
  for ev in evaluators:
    t0 = time.time()
    for name, value in ev.run(embedder, state):
      results[f"eval/{ev.name}/{name}"] = float(value)
    logging.info("eval %s at step %d (%.1fs): %s", ev.name, step, time.time() - t0,
                 " ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in results.items() if f"/{ev.name}/" in k))
  if results:
    writer.write(step, results)
  return results
