"""Vision Transformer tower (ViT-B/16 at 224 px, ViT-B/32 at 512 px; METHOD.md §2 options [ours]).

Patch-embedding conv, a class token, learned position embeddings, pre-LN blocks (as big_vision /
torchvision ViT), a final LayerNorm. Returns what `ResNet` returns: (pooled features [B, D], patch
tokens as a feature map [B, h, w, D]) so the projection head and the caption decoder work unchanged.
Inputs are NHWC images in [0, 1], like the ResNet tower.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from keepfit_jax.models import layers
from keepfit_jax.models.attention import MultiHeadAttention


@dataclasses.dataclass(frozen=True)
class ViTConfig:
  patch_size: int = 16
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  image_size: int = 224
  pool: str = "cls"          # 'cls' (class token) or 'mean' (mean of the patch tokens)
  layer_norm_eps: float = 1e-6

  @property
  def features_dim(self) -> int:
    return self.width

  @property
  def reduction(self) -> int:
    """Input pixels per feature-map pixel along one side (one token per patch)."""
    return self.patch_size

  @property
  def grid(self) -> int:
    return self.image_size // self.patch_size


PRESETS = {   # image_size is filled in from config.image_size by KeepFITConfig.from_config
    "vit_b16": ViTConfig(patch_size=16, width=768, depth=12, num_heads=12, mlp_dim=3072),
    "vit_b32": ViTConfig(patch_size=32, width=768, depth=12, num_heads=12, mlp_dim=3072),
}


class ViTBlock(nnx.Module):
  def __init__(self, cfg: ViTConfig, *, dtype, rngs: nnx.Rngs):
    w = cfg.width
    self.norm_attention = layers.layer_norm(w, eps=cfg.layer_norm_eps, dtype=dtype, rngs=rngs)
    self.attention = MultiHeadAttention(w, w, w, cfg.num_heads, dtype=dtype, rngs=rngs)
    self.norm_mlp = layers.layer_norm(w, eps=cfg.layer_norm_eps, dtype=dtype, rngs=rngs)
    self.mlp_in = layers.dense(w, cfg.mlp_dim, ("embed", "mlp"), dtype=dtype, rngs=rngs)
    self.mlp_out = layers.dense(cfg.mlp_dim, w, ("mlp", "embed"), dtype=dtype, rngs=rngs)

  def __call__(self, x):
    y = self.norm_attention(x)
    x = x + self.attention(y, y)
    return x + self.mlp_out(jax.nn.gelu(self.mlp_in(self.norm_mlp(x)), approximate=False))


class ViT(nnx.Module):
  """Returns (pooled features [B, D], patch-token feature map [B, h, w, D])."""

  def __init__(self, cfg: ViTConfig, *, dtype: Any = None, rngs: nnx.Rngs):
    if cfg.image_size % cfg.patch_size:
      raise ValueError(f"ViT: image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}")
    if cfg.pool not in ("cls", "mean"):
      raise ValueError(f"ViT pool must be 'cls' or 'mean', got {cfg.pool!r}")
    self.cfg = cfg
    self.dtype = dtype
    p, w = cfg.patch_size, cfg.width
    self.patch_embedding = nnx.Conv(
        3, w, (p, p), strides=(p, p), padding="VALID", dtype=dtype,
        kernel_init=nnx.with_partitioning(nnx.initializers.lecun_normal(), (None, None, "conv_in", "embed")),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), ("embed",)), rngs=rngs)
    self.cls_token = nnx.Param(nnx.with_partitioning(nnx.initializers.zeros_init(), (None, None, "embed"))(
        rngs.params(), (1, 1, w), jnp.float32))
    self.position_embedding = nnx.Param(nnx.with_partitioning(nnx.initializers.normal(0.02), (None, None, "embed"))(
        rngs.params(), (1, cfg.grid * cfg.grid + 1, w), jnp.float32))
    self.blocks = nnx.List([ViTBlock(cfg, dtype=dtype, rngs=rngs) for _ in range(cfg.depth)])
    self.final_norm = layers.layer_norm(w, eps=cfg.layer_norm_eps, dtype=dtype, rngs=rngs)

  @property
  def features_dim(self) -> int:
    return self.cfg.features_dim

  def __call__(self, images: jax.Array, *, train: bool = False) -> tuple[jax.Array, jax.Array]:
    del train   # no dropout / BatchNorm in this tower
    x = images if self.dtype is None else images.astype(self.dtype)
    x = self.patch_embedding(x)                                   # [B, h, w, D]
    b, h, w, d = x.shape
    if h * w + 1 != self.position_embedding.shape[1]:
      raise ValueError(f"ViT was built for {self.cfg.image_size} px images ({self.cfg.grid}x{self.cfg.grid} "
                       f"patches), got {images.shape[1]}x{images.shape[2]}")
    cls = jnp.broadcast_to(self.cls_token[...], (b, 1, d)).astype(x.dtype)
    x = jnp.concatenate([cls, x.reshape(b, h * w, d)], axis=1)
    x = x + self.position_embedding[...].astype(x.dtype)
    for block in self.blocks:
      x = block(x)
    x = self.final_norm(x)
    tokens = x[:, 1:]
    pooled = x[:, 0] if self.cfg.pool == "cls" else jnp.mean(tokens.astype(jnp.float32), axis=1)
    return pooled.astype(jnp.float32), tokens.reshape(b, h, w, d)
