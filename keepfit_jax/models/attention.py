"""Multi-head attention used by the caption decoder and the knowledge reference."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from keepfit_jax.models import layers


class MultiHeadAttention(nnx.Module):
  """Scaled dot-product attention with separate q/k/v/o projections.

  `softmax_over='keys'` is standard attention. `softmax_over='heads'` reproduces KeepFIT v1's
  knowledge-reference code, whose softmax (no explicit dim) normalised over the heads axis.
  """

  def __init__(self, q_dim: int, kv_dim: int, width: int, num_heads: int, *, out_dim: int | None = None,
               v_dim: int | None = None, use_bias: bool = True, dropout: float = 0.0,
               softmax_over: str = "keys", dtype=None, rngs: nnx.Rngs):
    if width % num_heads:
      raise ValueError(f"attention width {width} is not divisible by num_heads {num_heads}")
    if softmax_over not in ("keys", "heads"):
      raise ValueError(f"softmax_over must be 'keys' or 'heads', got {softmax_over!r}")
    self.num_heads = num_heads
    self.softmax_over = softmax_over
    kw = dict(use_bias=use_bias, dtype=dtype, rngs=rngs)
    self.query = layers.dense(q_dim, width, ("embed", "heads"), **kw)
    self.key = layers.dense(kv_dim, width, ("embed", "heads"), **kw)
    self.value = layers.dense(kv_dim if v_dim is None else v_dim, width, ("embed", "heads"), **kw)
    self.out = layers.dense(width, q_dim if out_dim is None else out_dim, ("heads", "embed"), **kw)
    self.dropout = nnx.Dropout(dropout)

  def __call__(self, q_in, kv_in, v_in=None, *, mask=None, train: bool = False, rngs=None):
    """q_in [..., Lq, Dq], kv_in [..., Lk, Dk]; mask broadcastable to [..., heads, Lq, Lk] (True = attend)."""
    v_in = kv_in if v_in is None else v_in
    q, k, v = self.query(q_in), self.key(kv_in), self.value(v_in)
    heads = lambda t: t.reshape(*t.shape[:-1], self.num_heads, t.shape[-1] // self.num_heads)
    q, k, v = heads(q), heads(k), heads(v)
    scores = jnp.einsum("...qhd,...khd->...hqk", q, k).astype(jnp.float32) / jnp.sqrt(q.shape[-1])
    if mask is not None:
      scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    axis = -1 if self.softmax_over == "keys" else -3
    weights = jax.nn.softmax(scores, axis=axis).astype(q.dtype)
    weights = self.dropout(weights, deterministic=not train, rngs=rngs)
    ctx = jnp.einsum("...hqk,...khd->...qhd", weights, v)
    return self.out(ctx.reshape(*ctx.shape[:-2], -1))
