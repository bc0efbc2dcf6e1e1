"""Inference API: load a trained run and embed images/texts, classify zero-shot, write captions.

    from keepfit_jax.inference import Predictor
    p = Predictor.from_workdir("workdir/cfp_demo")
    probs = p.zero_shot(["fundus.png"], ["normal", "glaucoma", "diabetic retinopathy"])
    p.caption(["fundus.png"])          # greedy decoding with the caption decoder

Images are file paths or uint8 HxWx3 arrays; they are letterboxed to the run's image size.
"""
from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from input_pipeline import prompts as prompts_lib
from input_pipeline.sources import load_image
from input_pipeline.transforms import letterbox
from keepfit_jax import evaluate, sharding, tokenizer as tokenizer_lib
from keepfit_jax.checkpoint import CheckpointMismatchError, shape_differences, tree_shapes
from keepfit_jax.models.keepfit import KeepFITConfig
from keepfit_jax.train_step import abstract_model, compute_dtype, images_to_float


class Predictor:

  def __init__(self, config: ml_collections.ConfigDict, encoder: tokenizer_lib.TextEncoder, graphdef, params,
               batch_stats, *, batch_size: int = 32):
    self.config, self.encoder = config, encoder
    self._graphdef = graphdef
    # One device, everything replicated: the evaluators' batched, jitted embedding functions serve as they are.
    mesh = sharding.create_mesh(dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])
    replicated = sharding.replicated(mesh)
    self._state = {"params": jax.device_put(params, replicated), "batch_stats": jax.device_put(batch_stats, replicated)}
    shardings = jax.tree.map(lambda _: replicated, self._state)
    self._embedder = evaluate.Embedder(graphdef, encoder, batch_size=batch_size, mesh=mesh,
                                       state_shardings=shardings, batch_sharding_fn=lambda nd: replicated)
    self.batch_size = self._embedder.batch_size

    tok = encoder.tokenizer
    bos, eos, pad = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id

    def greedy_caption(params, batch_stats, images):
      model = nnx.merge(graphdef, params, batch_stats)
      _, _, fmap = model.encode_image(images_to_float(images), train=False)
      b, length = images.shape[0], encoder.max_len
      tokens = jnp.full((b, length), pad, jnp.int32).at[:, 0].set(bos)

      def body(t, carry):
        tokens, done = carry
        mask = jnp.broadcast_to(jnp.arange(length) <= t, (b, length)).astype(jnp.int32)
        logits = model.caption_decoder(tokens, mask, fmap, train=False)
        nxt = jnp.where(done, pad, jnp.argmax(logits[:, t], axis=-1).astype(jnp.int32))
        return tokens.at[:, t + 1].set(nxt), done | (nxt == eos)

      tokens, _ = jax.lax.fori_loop(0, length - 1, body, (tokens, jnp.zeros((b,), bool)))
      return tokens

    self._greedy = jax.jit(greedy_caption)

  def model(self):
    """The NNX model with the loaded weights (for custom use)."""
    return nnx.merge(self._graphdef, self._state["params"], self._state["batch_stats"])

  @classmethod
  def from_workdir(cls, workdir: str, step: int | None = None, **kwargs) -> "Predictor":
    """The model of a training run (its config.json and newest or given checkpoint)."""
    config_path = os.path.join(workdir, "config.json")
    if not os.path.exists(config_path):
      raise FileNotFoundError(f"{config_path} not found: {workdir} is not a keepfit_jax training workdir")
    with open(config_path) as f:
      config = ml_collections.ConfigDict(json.load(f))
    tok_path = os.path.join(workdir, "tokenizer") if config.text.tokenizer == "synthetic" else config.text.tokenizer
    encoder = tokenizer_lib.TextEncoder(tokenizer_lib.load_tokenizer(tok_path), config.text.max_len)
    model_cfg = KeepFITConfig.from_config(config.model, image_size=config.image_size, vocab_size=encoder.vocab_size)
    graphdef, abs_params, abs_bstats, _ = abstract_model(model_cfg, compute_dtype(config.dtype))
    root = os.path.join(os.path.abspath(workdir), "checkpoints")
    steps = sorted(int(d) for d in os.listdir(root) if d.isdigit()) if os.path.isdir(root) else []
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {root}: train first, or check --workdir")
    step = steps[-1] if step is None else step
    restored = ocp.StandardCheckpointer().restore(os.path.join(root, str(step), "state"))
    problems = (shape_differences(tree_shapes(restored["params"]), tree_shapes(abs_params)) +
                shape_differences(tree_shapes(restored["batch_stats"]), tree_shapes(abs_bstats)))
    if problems:
      raise CheckpointMismatchError(f"{root}/{step} does not match {config_path}:\n  " + "\n  ".join(problems))
    return cls(config, encoder, graphdef, restored["params"], restored["batch_stats"], **kwargs)

  def _images(self, images: Sequence[str | np.ndarray]) -> np.ndarray:
    out = []
    for i, im in enumerate(images):
      arr = load_image(im, f"image {i}") if isinstance(im, (str, os.PathLike)) else np.asarray(im)
      if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
      if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"image {i}: expected a path or a uint8 HxWx3 array, got {arr.dtype} {arr.shape}")
      out.append(letterbox(arr, self.config.image_size))
    return np.stack(out)

  def embed_images(self, images) -> tuple[np.ndarray, np.ndarray]:
    """(projected, L2-normalised embeddings [N, P]; unprojected pooled features [N, C] for linear probes)."""
    return self._embedder.images(self._state, self._images(images))

  def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
    return self._embedder.texts(self._state, texts)

  def class_embeddings(self, class_names: Sequence[str], *, template: str | None = None,
                       knowledge: Mapping[str, Sequence[str]] | None = None) -> np.ndarray:
    """Class name in the modality's template; with `knowledge`, averaged with its expert descriptions."""
    return evaluate.class_embeddings(self._embedder, self._state, class_names,
                                     template=template or prompts_lib.TEMPLATES[self.config.modality],
                                     knowledge=knowledge)

  def zero_shot(self, images, class_names: Sequence[str], **kwargs) -> np.ndarray:
    """Class probabilities [N, C]: softmax of exp(τ)·image·class, as the zero-shot evaluator computes them."""
    image_emb, _ = self.embed_images(images)
    return evaluate.zero_shot_probabilities(image_emb, self.class_embeddings(class_names, **kwargs),
                                            self._state["params"]["logit_scale"])

  def caption_tokens(self, images) -> np.ndarray:
    if not self.config.model.decoder.enabled:
      raise ValueError("this run has no caption decoder (config.model.decoder.enabled=False)")
    out = []
    for (batch,), valid in self._embedder.batches([self._images(images)]):
      out.append(np.asarray(self._greedy(self._state["params"], self._state["batch_stats"], batch))[:valid])
    return np.concatenate(out)

  def caption(self, images) -> list[str]:
    return [self.encoder.decode(row) for row in self.caption_tokens(images)]
