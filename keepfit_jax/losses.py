"""The KeepFIT V2 losses (METHOD.md §4), pure functions of embeddings and logits.

All take the *global* batch: under `jax.jit` over a mesh the arrays are logically global, so
the contrastive terms see every pair in the global batch. `groups > 1` splits the batch into
that many contiguous blocks and averages the per-block losses, which reproduces the per-GPU
loss of FLAIR / KeepFIT v1 when `groups` equals the number of data-parallel devices.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def soft_targets(labels: jax.Array) -> jax.Array:
  """G_ij = 1[c_i = c_j] / sum_k 1[c_i = c_k]: rows sum to one, symmetric."""
  same = (labels[:, None] == labels[None, :]).astype(jnp.float32)
  return same / jnp.sum(same, axis=-1, keepdims=True)


def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean over rows of -sum_j targets_ij * log softmax(logits)_ij."""
  return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1))


def _grouped(x: jax.Array, groups: int) -> jax.Array:
  if x.shape[0] % groups:
    raise ValueError(f"batch of {x.shape[0]} cannot be split into {groups} equal loss groups")
  return x.reshape(groups, x.shape[0] // groups, *x.shape[1:])


def _symmetric_soft_clip(image_emb, text_emb, targets, scale):
  logits = scale * text_emb @ image_emb.T
  return 0.5 * (soft_cross_entropy(logits, targets) + soft_cross_entropy(logits.T, targets.T))


def label_aware_contrastive_loss(image_emb: jax.Array, text_emb: jax.Array, labels: jax.Array,
                                 logit_scale: jax.Array, groups: int = 1) -> jax.Array:
  """L_cat: FLAIR's contrastive loss with soft targets from the sampled categories."""
  imgs, txts, labs = (_grouped(a.astype(jnp.float32), groups) for a in (image_emb, text_emb, labels))
  per_group = jax.vmap(lambda i, t, l: _symmetric_soft_clip(i, t, soft_targets(l), logit_scale))(imgs, txts, labs)
  return jnp.mean(per_group)


def clip_loss(image_emb: jax.Array, text_emb: jax.Array, logit_scale: jax.Array, groups: int = 1) -> jax.Array:
  """L_elite: CLIP loss, each image's own caption is the only positive."""
  n = image_emb.shape[0] // groups
  imgs, txts = (_grouped(a.astype(jnp.float32), groups) for a in (image_emb, text_emb))
  eye = jnp.eye(n, dtype=jnp.float32)
  per_group = jax.vmap(lambda i, t: _symmetric_soft_clip(i, t, eye, logit_scale))(imgs, txts)
  return jnp.mean(per_group)


def knowledge_reference_loss(text_emb: jax.Array, reference: jax.Array) -> jax.Array:
  """L_ref = MSE(T_cat, K): mean squared error over every element (torch MSELoss, reduction='mean')."""
  return jnp.mean(jnp.square(text_emb.astype(jnp.float32) - reference.astype(jnp.float32)))


def caption_loss(logits: jax.Array, tokens: jax.Array, token_mask: jax.Array) -> jax.Array:
  """L_cap: teacher-forced next-token cross-entropy, averaged over real (non-padding) target tokens.

  logits[:, t] predicts tokens[:, t + 1].
  """
  logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
  targets = tokens[:, 1:]
  mask = token_mask[:, 1:].astype(jnp.float32)
  nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  return jnp.sum(nll * mask) / jnp.maximum(jnp.sum(mask), 1.0)
