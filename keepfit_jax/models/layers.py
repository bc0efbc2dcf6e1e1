"""Layer constructors that carry logical axis names on every parameter.

Each parameter is annotated with logical names ('embed', 'mlp', 'heads', 'vocab',
'conv_in', 'conv_out', ...). `keepfit_jax.sharding` maps them to mesh axes with the
rules table in the config (MaxText's vocabulary), so the model code never names a
mesh axis.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax.numpy as jnp
from flax import nnx

Dtype = Any

# torch.nn.Linear / Conv default init is kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
# i.e. variance_scaling(1/3, fan_in, uniform). BERT uses N(0, 0.02).
torch_default_init = nnx.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
bert_init = nnx.initializers.normal(0.02)


def _names(init, names: Sequence[str | None]):
  return nnx.with_partitioning(init, tuple(names))


def dense(in_features: int, out_features: int, names: Sequence[str | None], *, use_bias: bool = True,
          dtype: Dtype = None, init=torch_default_init, rngs: nnx.Rngs) -> nnx.Linear:
  return nnx.Linear(in_features, out_features, use_bias=use_bias, dtype=dtype,
                    kernel_init=_names(init, names),
                    bias_init=_names(nnx.initializers.zeros_init(), names[-1:]), rngs=rngs)


def conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, *, padding: int | None = None,
         dtype: Dtype = None, rngs: nnx.Rngs) -> nnx.Conv:
  """A bias-free conv with PyTorch's explicit symmetric padding (XLA 'SAME' pads stride-2 convs asymmetrically)."""
  pad = (kernel - 1) // 2 if padding is None else padding
  return nnx.Conv(in_ch, out_ch, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                  use_bias=False, dtype=dtype,
                  kernel_init=_names(nnx.initializers.variance_scaling(2.0, "fan_out", "normal"),
                                     (None, None, "conv_in", "conv_out")), rngs=rngs)


def batch_norm(features: int, *, dtype: Dtype = None, rngs: nnx.Rngs) -> nnx.BatchNorm:
  # PyTorch momentum 0.1 == flax momentum 0.9; eps 1e-5 as torchvision.
  return nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, dtype=dtype,
                       scale_init=_names(nnx.initializers.ones_init(), ("conv_out",)),
                       bias_init=_names(nnx.initializers.zeros_init(), ("conv_out",)), rngs=rngs)


def layer_norm(features: int, *, eps: float, dtype: Dtype = None, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(features, epsilon=eps, dtype=dtype,
                       scale_init=_names(nnx.initializers.ones_init(), ("norm",)),
                       bias_init=_names(nnx.initializers.zeros_init(), ("norm",)), rngs=rngs)


def embed(num: int, features: int, names: Sequence[str | None], *, dtype: Dtype = None,
          init=bert_init, rngs: nnx.Rngs) -> nnx.Embed:
  return nnx.Embed(num, features, dtype=dtype, embedding_init=_names(init, names), rngs=rngs)


def l2_normalize(x: jnp.ndarray, eps: float = 1e-12) -> jnp.ndarray:
  """x / max(||x||, eps), as torch.nn.functional.normalize."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True))
  return (x / jnp.maximum(norm, eps)).astype(x.dtype)
