"""ResNet vision towers in the torchvision v1.5 layout (stride on the 3x3 conv).

Attribute names follow torchvision (`conv1`, `bn1`, `layer1[0].conv2`, `downsample`)
so that `keepfit_jax.weights` maps ImageNet / FLAIR / KeepFIT v1 checkpoints one to one.
Inputs are NHWC images in [0, 1] (FLAIR/KeepFIT feed unnormalised pixels).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from keepfit_jax.models import layers


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
  block: str = "bottleneck"            # 'basic' (ResNet-18/34) or 'bottleneck' (ResNet-50/101)
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  width: int = 64                       # channels of the stem; stage k has width * 2**k (x4 for bottleneck)

  @property
  def expansion(self) -> int:
    return 4 if self.block == "bottleneck" else 1

  @property
  def features_dim(self) -> int:
    return self.width * 2 ** (len(self.stage_sizes) - 1) * self.expansion

  @property
  def reduction(self) -> int:
    """Input pixels per feature-map pixel along one side (stem /4, each later stage /2)."""
    return 4 * 2 ** (len(self.stage_sizes) - 1)


PRESETS = {
    "resnet18": ResNetConfig("basic", (2, 2, 2, 2), 64),
    "resnet50": ResNetConfig("bottleneck", (3, 4, 6, 3), 64),
    "resnet101": ResNetConfig("bottleneck", (3, 4, 23, 3), 64),
}


class Downsample(nnx.Module):
  def __init__(self, in_ch: int, out_ch: int, stride: int, *, dtype, rngs: nnx.Rngs):
    self.conv = layers.conv(in_ch, out_ch, 1, stride, padding=0, dtype=dtype, rngs=rngs)
    self.bn = layers.batch_norm(out_ch, dtype=dtype, rngs=rngs)

  def __call__(self, x, train: bool):
    return self.bn(self.conv(x), use_running_average=not train)


class BasicBlock(nnx.Module):
  def __init__(self, in_ch: int, width: int, stride: int, *, dtype, rngs: nnx.Rngs):
    self.conv1 = layers.conv(in_ch, width, 3, stride, dtype=dtype, rngs=rngs)
    self.bn1 = layers.batch_norm(width, dtype=dtype, rngs=rngs)
    self.conv2 = layers.conv(width, width, 3, 1, dtype=dtype, rngs=rngs)
    self.bn2 = layers.batch_norm(width, dtype=dtype, rngs=rngs)
    self.downsample = (Downsample(in_ch, width, stride, dtype=dtype, rngs=rngs)
                       if stride != 1 or in_ch != width else None)

  def __call__(self, x, train: bool):
    ura = not train
    y = jax.nn.relu(self.bn1(self.conv1(x), use_running_average=ura))
    y = self.bn2(self.conv2(y), use_running_average=ura)
    identity = x if self.downsample is None else self.downsample(x, train)
    return jax.nn.relu(y + identity)


class Bottleneck(nnx.Module):
  def __init__(self, in_ch: int, width: int, stride: int, *, dtype, rngs: nnx.Rngs):
    out_ch = width * 4
    self.conv1 = layers.conv(in_ch, width, 1, 1, dtype=dtype, rngs=rngs)
    self.bn1 = layers.batch_norm(width, dtype=dtype, rngs=rngs)
    self.conv2 = layers.conv(width, width, 3, stride, dtype=dtype, rngs=rngs)   # v1.5: stride here
    self.bn2 = layers.batch_norm(width, dtype=dtype, rngs=rngs)
    self.conv3 = layers.conv(width, out_ch, 1, 1, dtype=dtype, rngs=rngs)
    self.bn3 = layers.batch_norm(out_ch, dtype=dtype, rngs=rngs)
    self.downsample = (Downsample(in_ch, out_ch, stride, dtype=dtype, rngs=rngs)
                       if stride != 1 or in_ch != out_ch else None)

  def __call__(self, x, train: bool):
    ura = not train
    y = jax.nn.relu(self.bn1(self.conv1(x), use_running_average=ura))
    y = jax.nn.relu(self.bn2(self.conv2(y), use_running_average=ura))
    y = self.bn3(self.conv3(y), use_running_average=ura)
    identity = x if self.downsample is None else self.downsample(x, train)
    return jax.nn.relu(y + identity)


class ResNet(nnx.Module):
  """Returns (pooled features [B, C], last feature map [B, h, w, C])."""

  def __init__(self, cfg: ResNetConfig, *, dtype: Any = None, rngs: nnx.Rngs):
    if cfg.block not in ("basic", "bottleneck"):
      raise ValueError(f"resnet block must be 'basic' or 'bottleneck', got {cfg.block!r}")
    self.cfg = cfg
    self.dtype = dtype
    block_cls = Bottleneck if cfg.block == "bottleneck" else BasicBlock
    self.conv1 = layers.conv(3, cfg.width, 7, 2, padding=3, dtype=dtype, rngs=rngs)
    self.bn1 = layers.batch_norm(cfg.width, dtype=dtype, rngs=rngs)
    in_ch = cfg.width
    stages = []
    for i, n in enumerate(cfg.stage_sizes):
      width = cfg.width * 2 ** i
      blocks = []
      for j in range(n):
        blocks.append(block_cls(in_ch, width, 2 if (i > 0 and j == 0) else 1, dtype=dtype, rngs=rngs))
        in_ch = width * cfg.expansion
      stages.append(nnx.List(blocks))
    self.layers = nnx.List(stages)   # torchvision's layer1..layer4

  @property
  def features_dim(self) -> int:
    return self.cfg.features_dim

  def __call__(self, images: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array]:
    x = images if self.dtype is None else images.astype(self.dtype)
    x = jax.nn.relu(self.bn1(self.conv1(x), use_running_average=not train))
    # torch MaxPool2d(3, 2, padding=1) pads with -inf.
    x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                              ((0, 0), (1, 1), (1, 1), (0, 0)))
    for stage in self.layers:
      for block in stage:
        x = block(x, train)
    pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return pooled, x
