"""Caption decoder: generative injection of local appearance details (METHOD.md §2, §4 L_cap).

A pre-LN Transformer decoder: causal self-attention over caption tokens, cross-attention to the
vision tower's spatial tokens (ResNet last feature map, projected to `width`, with learned
positions so that "superior temporal" can be grounded), token embedding tied to the output layer.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from keepfit_jax.models import layers
from keepfit_jax.models.attention import MultiHeadAttention


@dataclasses.dataclass(frozen=True)
class CaptionDecoderConfig:
  num_layers: int = 3
  width: int = 512
  num_heads: int = 8
  mlp_ratio: int = 4
  dropout: float = 0.1
  max_len: int = 256


class DecoderLayer(nnx.Module):
  def __init__(self, cfg: CaptionDecoderConfig, *, dtype, rngs: nnx.Rngs):
    w = cfg.width
    self.norm_self = layers.layer_norm(w, eps=1e-5, dtype=dtype, rngs=rngs)
    self.self_attention = MultiHeadAttention(w, w, w, cfg.num_heads, dtype=dtype, rngs=rngs)
    self.norm_cross = layers.layer_norm(w, eps=1e-5, dtype=dtype, rngs=rngs)
    self.cross_attention = MultiHeadAttention(w, w, w, cfg.num_heads, dtype=dtype, rngs=rngs)
    self.norm_mlp = layers.layer_norm(w, eps=1e-5, dtype=dtype, rngs=rngs)
    self.mlp_in = layers.dense(w, w * cfg.mlp_ratio, ("embed", "mlp"), dtype=dtype, rngs=rngs)
    self.mlp_out = layers.dense(w * cfg.mlp_ratio, w, ("mlp", "embed"), dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(cfg.dropout)

  def __call__(self, x, memory, self_mask, *, train: bool, rngs):
    drop = lambda t: self.dropout(t, deterministic=not train, rngs=rngs)
    x = x + drop(self.self_attention(self.norm_self(x), self.norm_self(x), mask=self_mask, train=train, rngs=rngs))
    x = x + drop(self.cross_attention(self.norm_cross(x), memory, train=train, rngs=rngs))
    return x + drop(self.mlp_out(jax.nn.gelu(self.mlp_in(self.norm_mlp(x)))))


class CaptionDecoder(nnx.Module):
  def __init__(self, cfg: CaptionDecoderConfig, *, vocab_size: int, vision_dim: int, num_vision_tokens: int,
               dtype=None, rngs: nnx.Rngs):
    self.cfg = cfg
    w = cfg.width
    self.token_embedding = layers.embed(vocab_size, w, ("vocab", "embed"), dtype=dtype, rngs=rngs)
    self.position_embedding = layers.embed(cfg.max_len, w, (None, "embed"), dtype=dtype, rngs=rngs)
    self.vision_projection = layers.dense(vision_dim, w, ("mlp", "embed"), dtype=dtype, rngs=rngs)
    self.vision_position = layers.embed(num_vision_tokens, w, (None, "embed"), dtype=dtype, rngs=rngs)
    self.vision_norm = layers.layer_norm(w, eps=1e-5, dtype=dtype, rngs=rngs)
    self.layers = nnx.List([DecoderLayer(cfg, dtype=dtype, rngs=rngs) for _ in range(cfg.num_layers)])
    self.final_norm = layers.layer_norm(w, eps=1e-5, dtype=dtype, rngs=rngs)

  def encode_vision(self, feature_map: jax.Array) -> jax.Array:
    b, h, w, c = feature_map.shape
    tokens = self.vision_projection(feature_map.reshape(b, h * w, c))
    if h * w != self.vision_position.num_embeddings:
      raise ValueError(f"caption decoder was built for {self.vision_position.num_embeddings} vision tokens, got "
                       f"{h}x{w}={h * w}: the image size differs from the one in the config")
    return self.vision_norm(tokens + self.vision_position(jnp.arange(h * w))[None])

  def __call__(self, tokens: jax.Array, token_mask: jax.Array, feature_map: jax.Array, *,
               train: bool = False, rngs=None) -> jax.Array:
    """Teacher-forced logits [B, L, vocab] for next-token prediction of `tokens` [B, L]."""
    length = tokens.shape[1]
    memory = self.encode_vision(feature_map)
    x = self.token_embedding(tokens) + self.position_embedding(jnp.arange(length))[None]
    causal = jnp.tril(jnp.ones((length, length), bool))
    self_mask = causal[None, None] & (token_mask[:, None, None, :] > 0)
    for layer in self.layers:
      x = layer(x, memory, self_mask, train=train, rngs=rngs)
    return self.token_embedding.attend(self.final_norm(x)).astype(jnp.float32)
