"""The KeepFIT model: vision tower, text tower, projections, temperature, knowledge reference, caption decoder.

METHOD.md §2. Both towers are projected as FLAIR's ProjectionLayer does: L2-normalise ->
Linear(d -> projection_dim, no bias) -> L2-normalise.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from keepfit_jax.models import layers
from keepfit_jax.models.attention import MultiHeadAttention
from keepfit_jax.models.bert import BertConfig, BertModel, layer_mean_pool
from keepfit_jax.models.caption_decoder import CaptionDecoder, CaptionDecoderConfig
from keepfit_jax.models.resnet import PRESETS as RESNET_PRESETS, ResNet, ResNetConfig
from keepfit_jax.models.vit import PRESETS as VIT_PRESETS, ViT, ViTConfig

# exp(logit_scale) is clamped to [1, 100] as in FLAIR / CLIP.
LOGIT_SCALE_INIT = math.log(1 / 0.07)
LOGIT_SCALE_MAX = math.log(100.0)


@dataclasses.dataclass(frozen=True)
class KeepFITConfig:
  vision: ResNetConfig | ViTConfig       # both expose features_dim and reduction
  text: BertConfig
  decoder: CaptionDecoderConfig | None
  image_size: int
  projection_dim: int = 512
  reference_heads: int = 2
  reference_dropout: float = 0.5
  reference_softmax: str = "keys"          # 'heads' = KeepFIT v1 behaviour
  text_pooling: str = "masked_layer_mean"  # or 'layer_mean_with_padding' (FLAIR / KeepFIT v1)

  @property
  def num_vision_tokens(self) -> int:
    side = -(-self.image_size // self.vision.reduction)
    return side * side

  @classmethod
  def from_config(cls, model: ml_collections.ConfigDict, *, image_size: int, vocab_size: int) -> "KeepFITConfig":
    vision = vision_config(model.vision, image_size)
    t = model.text
    text = BertConfig(vocab_size=vocab_size, hidden_size=t.hidden_size, num_layers=t.num_layers,
                      num_heads=t.num_heads, intermediate_size=t.intermediate_size,
                      max_position_embeddings=t.max_position_embeddings,
                      hidden_dropout=t.dropout, attention_dropout=t.dropout)
    d = model.decoder
    decoder = (CaptionDecoderConfig(d.num_layers, d.width, d.num_heads, d.mlp_ratio, d.dropout, d.max_len)
               if d.enabled else None)
    if model.text_pooling not in ("masked_layer_mean", "layer_mean_with_padding"):
      raise ValueError(f"config.model.text_pooling must be 'masked_layer_mean' or 'layer_mean_with_padding', "
                       f"got {model.text_pooling!r}")
    return cls(vision=vision, text=text, decoder=decoder, image_size=image_size,
               projection_dim=model.projection_dim, reference_heads=model.reference.num_heads,
               reference_dropout=model.reference.dropout, reference_softmax=model.reference.softmax_over,
               text_pooling=model.text_pooling)


def vision_config(v: ml_collections.ConfigDict, image_size: int) -> ResNetConfig | ViTConfig:
  """config.model.vision -> the tower's config: 'resnet18/50/101', 'custom' (ResNet), 'vit_b16', 'vit_b32',
  'vit_custom' (reads patch_size, width, depth, num_heads, mlp_dim and optionally pool)."""
  if v.variant in RESNET_PRESETS:
    return RESNET_PRESETS[v.variant]
  if v.variant == "custom":
    return ResNetConfig(v.block, tuple(v.stage_sizes), v.width)
  if v.variant in VIT_PRESETS:
    return dataclasses.replace(VIT_PRESETS[v.variant], image_size=image_size, pool=v.get("pool", "cls"))
  if v.variant == "vit_custom":
    missing = [k for k in ("patch_size", "width", "depth", "num_heads", "mlp_dim") if k not in v]
    if missing:
      raise ValueError(f"config.model.vision.variant='vit_custom' needs config.model.vision.{{{', '.join(missing)}}}")
    return ViTConfig(patch_size=v.patch_size, width=v.width, depth=v.depth, num_heads=v.num_heads,
                     mlp_dim=v.mlp_dim, image_size=image_size, pool=v.get("pool", "cls"))
  raise ValueError(f"config.model.vision.variant must be one of {sorted(RESNET_PRESETS)}, 'custom', "
                   f"{sorted(VIT_PRESETS)} or 'vit_custom', got {v.variant!r}")


class KeepFIT(nnx.Module):

  def __init__(self, cfg: KeepFITConfig, *, dtype: Any = None, rngs: nnx.Rngs):
    self.cfg = cfg
    tower = ViT if isinstance(cfg.vision, ViTConfig) else ResNet
    self.vision = tower(cfg.vision, dtype=dtype, rngs=rngs)
    self.text = BertModel(cfg.text, dtype=dtype, rngs=rngs)
    p = cfg.projection_dim
    self.vision_projection = layers.dense(cfg.vision.features_dim, p, ("embed", "mlp"), use_bias=False,
                                          dtype=dtype, rngs=rngs)
    self.text_projection = layers.dense(cfg.text.hidden_size, p, ("embed", "mlp"), use_bias=False,
                                        dtype=dtype, rngs=rngs)
    self.logit_scale = nnx.Param(jnp.asarray(LOGIT_SCALE_INIT, jnp.float32))
    # Knowledge reference: queries = categorical image embeddings, keys = elite image embeddings,
    # values = elite caption embeddings; no biases, dropout on the attention weights.
    self.knowledge_reference = MultiHeadAttention(p, p, p, cfg.reference_heads, use_bias=False,
                                                  dropout=cfg.reference_dropout,
                                                  softmax_over=cfg.reference_softmax, dtype=dtype, rngs=rngs)
    self.caption_decoder = (CaptionDecoder(cfg.decoder, vocab_size=cfg.text.vocab_size,
                                           vision_dim=cfg.vision.features_dim,
                                           num_vision_tokens=cfg.num_vision_tokens, dtype=dtype, rngs=rngs)
                            if cfg.decoder is not None else None)

  def encode_image(self, images: jax.Array, *, train: bool = False):
    """images: float [B, H, W, 3] in [0, 1]. Returns (projected embedding, pooled features, feature map)."""
    pooled, feature_map = self.vision(images, train=train)
    proj = layers.l2_normalize(self.vision_projection(layers.l2_normalize(pooled)).astype(jnp.float32))
    return proj, pooled, feature_map

  def encode_text(self, input_ids: jax.Array, attention_mask: jax.Array, *, train: bool = False, rngs=None):
    out = self.text(input_ids, attention_mask, train=train, rngs=rngs)
    pooled = layer_mean_pool(out.hidden_states, attention_mask,
                             include_padding=self.cfg.text_pooling == "layer_mean_with_padding")
    return layers.l2_normalize(self.text_projection(layers.l2_normalize(pooled)).astype(jnp.float32))

  def reference(self, image_emb_cat, image_emb_elite, text_emb_elite, *, train: bool = False, rngs=None):
    """K = Attn(V_cat; V_elite, T_elite): for each categorical image, a caption-like embedding."""
    return self.knowledge_reference(image_emb_cat, image_emb_elite, text_emb_elite, train=train,
                                    rngs=rngs).astype(jnp.float32)

  def temperature(self) -> jax.Array:
    return jnp.exp(jnp.clip(self.logit_scale[...], 0.0, LOGIT_SCALE_MAX))
