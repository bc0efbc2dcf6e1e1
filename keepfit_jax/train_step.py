"""The pure KeepFIT V2 train step, and the train state it maps to the next one.

The train state is a plain dict of arrays (checkpointed as is by Orbax):
  step, params, batch_stats (BatchNorm running statistics), opt_state, rng, skipped (consecutive
  non-finite steps), skipped_total.
`nnx.merge(graphdef, params, batch_stats)` rebuilds the model inside the step; the step is
jitted by `train.py` with explicit in/out shardings and the state donated.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from keepfit_jax import losses
from keepfit_jax.sharding import ConfigError
from keepfit_jax.models.keepfit import LOGIT_SCALE_MAX, KeepFIT, KeepFITConfig

LOSS_NAMES = ("cat", "elite", "ref", "cap")


@dataclasses.dataclass(frozen=True)
class LossWeights:
  cat: float = 1.0
  elite: float = 1.0
  ref: float = 100.0
  cap: float = 1.0

  @classmethod
  def from_config(cls, loss: ml_collections.ConfigDict) -> "LossWeights":
    return cls(*(float(loss[n]) for n in LOSS_NAMES))


def compute_dtype(name: str):
  try:
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]
  except KeyError:
    raise ConfigError(f"config.dtype must be 'float32' or 'bfloat16', got {name!r}") from None


def build_model(model_cfg: KeepFITConfig, dtype, seed: int) -> KeepFIT:
  with nnx.use_eager_sharding(False):
    return KeepFIT(model_cfg, dtype=dtype, rngs=nnx.Rngs(params=seed))


def abstract_model(model_cfg: KeepFITConfig, dtype):
  """(graphdef, abstract params, abstract batch_stats, logical partition specs of both) without allocating."""
  with nnx.use_eager_sharding(False):
    model = nnx.eval_shape(lambda: KeepFIT(model_cfg, dtype=dtype, rngs=nnx.Rngs(0)))
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  specs = (nnx.to_pure_dict(nnx.get_partition_spec(params)), nnx.to_pure_dict(nnx.get_partition_spec(batch_stats)))
  return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(batch_stats), specs


def make_optimizer(optim: ml_collections.ConfigDict, total_steps: int):
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=optim.lr, warmup_steps=optim.warmup_steps,
      decay_steps=max(optim.decay_steps, optim.warmup_steps + 1), end_value=0.0)
  tx = optax.chain(optax.clip_by_global_norm(optim.grad_clip),
                   optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=optim.weight_decay))
  return tx, schedule


def init_state(model: KeepFIT, tx, seed: int) -> dict:
  _, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  params, batch_stats = nnx.to_pure_dict(params), nnx.to_pure_dict(batch_stats)
  return {"step": jnp.zeros((), jnp.int32), "params": params, "batch_stats": batch_stats,
          "opt_state": tx.init(params), "rng": jax.random.PRNGKey(seed + 1),
          "skipped": jnp.zeros((), jnp.int32), "skipped_total": jnp.zeros((), jnp.int32)}


def images_to_float(images: jax.Array) -> jax.Array:
  """uint8 pixels -> [0, 1] (FLAIR / KeepFIT feed unnormalised pixels); float images pass through."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def keepfit_losses(model: KeepFIT, batch: dict, rng: jax.Array, weights: LossWeights, *, groups: int = 1,
                   train: bool = True) -> tuple[jax.Array, dict]:
  """The total KeepFIT V2 loss of one step and its terms (METHOD.md §4)."""
  rngs = nnx.Rngs(dropout=rng)
  cat, elite = batch["categorical"], batch["elite"]
  scale = model.temperature()
  v_cat, _, _ = model.encode_image(images_to_float(cat["image"]), train=train)
  t_cat = model.encode_text(cat["input_ids"], cat["attention_mask"], train=train, rngs=rngs)
  terms = {"cat": losses.label_aware_contrastive_loss(v_cat, t_cat, cat["label"], scale, groups)}
  if weights.elite or weights.ref or weights.cap:
    v_el, _, fmap_el = model.encode_image(images_to_float(elite["image"]), train=train)
    t_el = model.encode_text(elite["input_ids"], elite["attention_mask"], train=train, rngs=rngs)
    if weights.elite:
      terms["elite"] = losses.clip_loss(v_el, t_el, scale, groups)
    if weights.ref:
      reference = model.reference(v_cat, v_el, t_el, train=train, rngs=rngs)
      terms["ref"] = losses.knowledge_reference_loss(t_cat, reference)
    if weights.cap:
      if model.caption_decoder is None:
        raise ValueError("config.loss.cap > 0 needs config.model.decoder.enabled=True")
      logits = model.caption_decoder(elite["input_ids"], elite["attention_mask"], fmap_el, train=train, rngs=rngs)
      terms["cap"] = losses.caption_loss(logits, elite["input_ids"], elite["attention_mask"])
  total = sum(getattr(weights, name) * value for name, value in terms.items())
  return total, terms


def train_step(state: dict, batch: dict, *, graphdef, tx, weights: LossWeights, groups: int = 1, schedule=None):
  """One optimisation step. A non-finite loss or gradient leaves the state unchanged (counted in `skipped`)."""
  rng = jax.random.fold_in(state["rng"], state["step"])

  def loss_fn(params):
    model = nnx.merge(graphdef, params, state["batch_stats"])
    total, terms = keepfit_losses(model, batch, rng, weights, groups=groups, train=True)
    return total, (terms, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)))

  (total, (terms, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
  grad_norm = optax.tree.norm(grads)
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  # FLAIR / KeepFIT v1 clamp the learnable temperature to [0, ln 100] after each update.
  params = {**params, "logit_scale": jnp.clip(params["logit_scale"], 0.0, LOGIT_SCALE_MAX)}
  finite = jnp.isfinite(total) & jnp.isfinite(grad_norm)
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
  new_state = {
      "step": state["step"] + 1,
      "params": keep(params, state["params"]),
      "batch_stats": keep(batch_stats, state["batch_stats"]),
      "opt_state": keep(opt_state, state["opt_state"]),
      "rng": state["rng"],
      "skipped": jnp.where(finite, 0, state["skipped"] + 1),            # consecutive
      "skipped_total": state["skipped_total"] + (~finite).astype(jnp.int32),
  }
  metrics = {"loss": total, "grad_norm": grad_norm, "temperature": jnp.exp(new_state["params"]["logit_scale"]),
             "finite": finite.astype(jnp.int32), **{f"loss_{k}": v for k, v in terms.items()}}
  if schedule is not None:   # the rate of this update: optax counts applied (not skipped) updates only
    metrics["lr"] = schedule(state["step"] - state["skipped_total"])
  return new_state, metrics
