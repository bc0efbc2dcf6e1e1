"""Evaluators (big_vision style: each yields (name, value) pairs), run on the current train state.

- `ZeroShotEvaluator`: classes as texts "A fundus photograph of [CLS]"; with domain knowledge the
  class embedding is the normalised mean of the embeddings of the class name and of its expert
  descriptions (FLAIR). Reports ACA, AUC, macro-F1, quadratic kappa.
- `RetrievalEvaluator`: image<->text R@1/5/10 on held-out (image, caption) pairs.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import jax
import numpy as np
from flax import nnx

from input_pipeline import prompts as prompts_lib
from keepfit_jax import metrics
from keepfit_jax.train_step import images_to_float


class Embedder:
  """Jitted, batched image and text embedding with the model's current parameters."""

  def __init__(self, graphdef, encoder, *, batch_size: int, mesh, state_shardings, batch_sharding_fn,
               batch_multiple: int = 1):
    # Batches are split over the data-parallel devices: round the batch size up to a multiple of them.
    batch_size = -(-batch_size // batch_multiple) * batch_multiple
    self.encoder, self.batch_size, self.mesh = encoder, batch_size, mesh
    self._batch_sharding = batch_sharding_fn
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    model_sh = (state_shardings["params"], state_shardings["batch_stats"])

    def embed_images(params, batch_stats, images):
      model = nnx.merge(graphdef, params, batch_stats)
      proj, pooled, _ = model.encode_image(images_to_float(images), train=False)
      return proj, pooled

    def embed_texts(params, batch_stats, ids, mask):
      model = nnx.merge(graphdef, params, batch_stats)
      return model.encode_text(ids, mask, train=False)

    self._images = jax.jit(embed_images, in_shardings=(*model_sh, batch_sharding_fn(4)),
                           out_shardings=(replicated, replicated))
    self._texts = jax.jit(embed_texts, in_shardings=(*model_sh, batch_sharding_fn(2), batch_sharding_fn(2)),
                          out_shardings=replicated)

  def batches(self, arrays: Sequence[np.ndarray]):
    """Device batches of `batch_size` (the last one padded with its final row) and the count of real rows."""
    n = len(arrays[0])
    for start in range(0, n, self.batch_size):
      chunk = [a[start:start + self.batch_size] for a in arrays]
      pad = self.batch_size - len(chunk[0])
      if pad:
        chunk = [np.concatenate([c, np.repeat(c[-1:], pad, axis=0)]) for c in chunk]
      yield [self._put(c) for c in chunk], self.batch_size - pad

  def _put(self, x: np.ndarray) -> jax.Array:
    sharding = self._batch_sharding(x.ndim)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

  def images(self, state: Mapping, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    proj, pooled = [], []
    for (batch,), valid in self.batches([images]):
      p, f = self._images(state["params"], state["batch_stats"], batch)
      proj.append(np.asarray(p)[:valid])
      pooled.append(np.asarray(f)[:valid])
    return np.concatenate(proj), np.concatenate(pooled)

  def texts(self, state: Mapping, texts: Sequence[str]) -> np.ndarray:
    tokens = self.encoder(texts)
    out = []
    for (ids, mask), valid in self.batches([tokens["input_ids"], tokens["attention_mask"]]):
      out.append(np.asarray(self._texts(state["params"], state["batch_stats"], ids, mask))[:valid])
    return np.concatenate(out)


def _normalize(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def softmax(x: np.ndarray) -> np.ndarray:
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def class_embeddings(embedder: Embedder, state, class_names: Sequence[str], *, template: str,
                     knowledge: Mapping[str, Sequence[str]] | None) -> np.ndarray:
  """One unit vector per class: its name in the template, averaged with its expert descriptions (FLAIR)."""
  out = []
  for name in class_names:
    out.append(_normalize(embedder.texts(state, prompts_lib.class_prompts(template, name, knowledge))).mean(0))
  return _normalize(np.stack(out))


def zero_shot_probabilities(image_emb: np.ndarray, class_emb: np.ndarray, logit_scale) -> np.ndarray:
  """softmax(exp(τ) · image · class), τ clamped to [0, ln 100] as in training."""
  scale = float(np.exp(np.clip(np.asarray(logit_scale), 0, np.log(100))))
  return softmax(scale * image_emb @ class_emb.T)


class ZeroShotEvaluator:
  name = "zeroshot"

  def __init__(self, images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], *, template: str,
               knowledge: Mapping[str, Sequence[str]] | None):
    self.images, self.labels, self.class_names = images, np.asarray(labels), list(class_names)
    self.template, self.knowledge = template, knowledge

  def run(self, embedder: Embedder, state):
    image_emb, _ = embedder.images(state, self.images)
    class_emb = class_embeddings(embedder, state, self.class_names, template=self.template, knowledge=self.knowledge)
    probs = zero_shot_probabilities(image_emb, class_emb, state["params"]["logit_scale"])
    for k, v in metrics.classification_metrics(self.labels, probs).items():
      yield k, v


class RetrievalEvaluator:
  name = "retrieval"

  def __init__(self, images: np.ndarray, captions: Sequence[str]):
    self.images, self.captions = images, list(captions)

  def run(self, embedder: Embedder, state):
    image_emb, _ = embedder.images(state, self.images)
    text_emb = embedder.texts(state, self.captions)
    sim = image_emb @ text_emb.T
    for direction, s in (("i2t", sim), ("t2i", sim.T)):
      for k, v in metrics.recall_at_k(s).items():
        yield f"{direction}_r{k}", v
