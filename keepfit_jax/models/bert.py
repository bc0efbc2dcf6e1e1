"""BERT text tower (post-LN, as Hugging Face `BertModel`), returning every layer's hidden states.

Layout mirrors transformers' BertModel so that `keepfit_jax.weights` can load Bio_ClinicalBERT,
FLAIR and KeepFIT v1 text towers: embeddings (word, position, token type, LayerNorm), then
`num_layers` blocks of self-attention + LayerNorm and MLP + LayerNorm.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from keepfit_jax.models import layers


@dataclasses.dataclass(frozen=True)
class BertConfig:
  vocab_size: int = 28996               # Bio_ClinicalBERT (cased BERT-base vocab)
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_dropout: float = 0.1
  attention_dropout: float = 0.1
  pad_token_id: int = 0


class BertOutput(NamedTuple):
  last_hidden_state: jax.Array            # [B, L, H]
  hidden_states: tuple[jax.Array, ...]   # embedding output, then each layer's output: num_layers + 1 entries


class BertEmbeddings(nnx.Module):
  def __init__(self, cfg: BertConfig, *, dtype, rngs: nnx.Rngs):
    self.word_embeddings = layers.embed(cfg.vocab_size, cfg.hidden_size, ("vocab", "embed"), dtype=dtype, rngs=rngs)
    self.position_embeddings = layers.embed(cfg.max_position_embeddings, cfg.hidden_size, (None, "embed"),
                                            dtype=dtype, rngs=rngs)
    self.token_type_embeddings = layers.embed(cfg.type_vocab_size, cfg.hidden_size, (None, "embed"),
                                              dtype=dtype, rngs=rngs)
    self.layer_norm = layers.layer_norm(cfg.hidden_size, eps=cfg.layer_norm_eps, dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(cfg.hidden_dropout)

  def __call__(self, input_ids, token_type_ids, *, train: bool, rngs):
    positions = jnp.arange(input_ids.shape[1])[None, :]
    x = (self.word_embeddings(input_ids) + self.position_embeddings(positions)
         + self.token_type_embeddings(token_type_ids))
    return self.dropout(self.layer_norm(x), deterministic=not train, rngs=rngs)


class BertSelfAttention(nnx.Module):
  def __init__(self, cfg: BertConfig, *, dtype, rngs: nnx.Rngs):
    h = cfg.hidden_size
    if h % cfg.num_heads:
      raise ValueError(f"text.hidden_size={h} is not divisible by text.num_heads={cfg.num_heads}")
    self.num_heads = cfg.num_heads
    kw = dict(dtype=dtype, init=layers.bert_init, rngs=rngs)
    self.query = layers.dense(h, h, ("embed", "heads"), **kw)
    self.key = layers.dense(h, h, ("embed", "heads"), **kw)
    self.value = layers.dense(h, h, ("embed", "heads"), **kw)
    self.output = layers.dense(h, h, ("heads", "embed"), **kw)
    self.layer_norm = layers.layer_norm(h, eps=cfg.layer_norm_eps, dtype=dtype, rngs=rngs)
    self.attention_dropout = nnx.Dropout(cfg.attention_dropout)
    self.output_dropout = nnx.Dropout(cfg.hidden_dropout)

  def __call__(self, x, bias, *, train: bool, rngs):
    b, l, h = x.shape
    split = lambda t: t.reshape(b, l, self.num_heads, h // self.num_heads)
    q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / jnp.sqrt(h // self.num_heads)
    weights = jax.nn.softmax(scores + bias, axis=-1).astype(x.dtype)
    weights = self.attention_dropout(weights, deterministic=not train, rngs=rngs)
    ctx = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, l, h)
    out = self.output_dropout(self.output(ctx), deterministic=not train, rngs=rngs)
    return self.layer_norm(out + x)


class BertLayer(nnx.Module):
  def __init__(self, cfg: BertConfig, *, dtype, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, init=layers.bert_init, rngs=rngs)
    self.attention = BertSelfAttention(cfg, dtype=dtype, rngs=rngs)
    self.intermediate = layers.dense(cfg.hidden_size, cfg.intermediate_size, ("embed", "mlp"), **kw)
    self.output = layers.dense(cfg.intermediate_size, cfg.hidden_size, ("mlp", "embed"), **kw)
    self.layer_norm = layers.layer_norm(cfg.hidden_size, eps=cfg.layer_norm_eps, dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(cfg.hidden_dropout)

  def __call__(self, x, bias, *, train: bool, rngs):
    x = self.attention(x, bias, train=train, rngs=rngs)
    y = self.output(jax.nn.gelu(self.intermediate(x), approximate=False))   # HF 'gelu' is the exact erf form
    return self.layer_norm(self.dropout(y, deterministic=not train, rngs=rngs) + x)


class BertModel(nnx.Module):
  def __init__(self, cfg: BertConfig, *, dtype: Any = None, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embeddings = BertEmbeddings(cfg, dtype=dtype, rngs=rngs)
    self.layers = nnx.List([BertLayer(cfg, dtype=dtype, rngs=rngs) for _ in range(cfg.num_layers)])

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array, token_type_ids: jax.Array | None = None,
               *, train: bool = False, rngs: nnx.Rngs | None = None) -> BertOutput:
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    # Additive mask over keys, as transformers' extended attention mask.
    bias = jnp.where(attention_mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min)
    x = self.embeddings(input_ids, token_type_ids, train=train, rngs=rngs)
    hidden = [x]
    for layer in self.layers:
      x = layer(x, bias, train=train, rngs=rngs)
      hidden.append(x)
    return BertOutput(last_hidden_state=x, hidden_states=tuple(hidden))


def layer_mean_pool(hidden_states: tuple[jax.Array, ...], attention_mask: jax.Array, *,
                    include_padding: bool = False) -> jax.Array:
  """KeepFIT/FLAIR text embedding: mean over tokens of layers 1, 2 and the last, then mean over the three.

  FLAIR/KeepFIT v1 average over every position, padding included, of batches padded to their longest item.
  Our batches are padded to a fixed length (static shapes), so `include_padding=True` averages over the
  positions before the batch's longest item ends, which gives v1's numbers exactly (pad keys are masked, so
  positions past the longest item change nothing before it). `include_padding=False` (our default) averages
  over real tokens only, so the embedding does not depend on the rest of the batch.
  """
  if len(hidden_states) < 3:
    raise ValueError("layer-mean pooling needs a text tower with at least 2 layers")
  stacked = jnp.stack([hidden_states[1], hidden_states[2], hidden_states[-1]]).astype(jnp.float32)  # [3,B,L,H]
  if include_padding:
    longest = jnp.max(jnp.sum(attention_mask, axis=1))
    m = (jnp.arange(attention_mask.shape[1]) < longest).astype(jnp.float32)[None, None, :, None]
    per_layer = jnp.sum(stacked * m, axis=2) / jnp.maximum(longest, 1).astype(jnp.float32)
  else:
    m = attention_mask.astype(jnp.float32)[None, :, :, None]
    per_layer = jnp.sum(stacked * m, axis=2) / jnp.maximum(jnp.sum(m, axis=2), 1.0)
  return jnp.mean(per_layer, axis=0)
