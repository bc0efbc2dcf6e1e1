"""Paper-scale towers without allocating them: the train step's shapes, parameter counts against
hand-computed formulas, the ViT options, and bfloat16 compute close to float32."""
import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from configs import cfp
from keepfit_jax import sharding, train
from keepfit_jax.models.bert import BertConfig, BertModel
from keepfit_jax.models.keepfit import KeepFITConfig, vision_config
from keepfit_jax.models.resnet import PRESETS as RESNET_PRESETS, ResNet
from keepfit_jax.models.vit import PRESETS as VIT_PRESETS, ViT, ViTConfig
from keepfit_jax.train_step import build_model

BIO_CLINICAL_BERT_VOCAB = 28996


def count(make) -> int:
  with nnx.use_eager_sharding(False):
    model = nnx.eval_shape(make)
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def resnet_formula(stage_sizes=(3, 4, 6, 3), w=64) -> int:
  """Bottleneck ResNet parameters (convs without bias, BatchNorm scale + bias), no fc."""
  total = 3 * 7 * 7 * w + 2 * w                                 # stem conv + bn
  cin = w
  for i, n in enumerate(stage_sizes):
    p = w * 2 ** i
    for j in range(n):
      total += cin * p + 2 * p + 9 * p * p + 2 * p + p * 4 * p + 2 * 4 * p
      if j == 0:
        total += cin * 4 * p + 2 * 4 * p                         # downsample conv + bn
      cin = 4 * p
  return total


def bert_formula(V, H=768, L=12, I=3072, P=512, T=2) -> int:
  embeddings = V * H + P * H + T * H + 2 * H
  layer = 4 * (H * H + H) + 2 * H + (H * I + I) + (I * H + H) + 2 * H
  return embeddings + L * layer


def vit_formula(patch=16, image=224, D=768, L=12, M=3072) -> int:
  n = (image // patch) ** 2
  stem = 3 * patch * patch * D + D + D + (n + 1) * D               # patch conv + bias, cls token, positions
  block = 2 * D + 4 * (D * D + D) + 2 * D + (D * M + M) + (M * D + D)
  return stem + L * block + 2 * D


def test_parameter_counts_match_formulas():
  resnet50 = count(lambda: ResNet(RESNET_PRESETS["resnet50"], rngs=nnx.Rngs(0)))
  assert resnet50 == resnet_formula() == 25_557_032 - (2048 * 1000 + 1000)   # torchvision resnet50 minus fc
  bert = count(lambda: BertModel(BertConfig(vocab_size=BIO_CLINICAL_BERT_VOCAB), rngs=nnx.Rngs(0)))
  assert bert == bert_formula(BIO_CLINICAL_BERT_VOCAB)
  assert 107e6 < bert < 109e6
  vit_b16 = count(lambda: ViT(dataclasses.replace(VIT_PRESETS["vit_b16"], image_size=224), rngs=nnx.Rngs(0)))
  assert vit_b16 == vit_formula(16, 224) == 86_567_656 - (768 * 1000 + 1000)   # torchvision vit_b_16 minus head
  vit_b32 = count(lambda: ViT(dataclasses.replace(VIT_PRESETS["vit_b32"], image_size=512), rngs=nnx.Rngs(0)))
  assert vit_b32 == vit_formula(32, 512)


def _paper_batch(config, image_size, max_len):
  b, e = config.train.batch_size, config.train.elite_batch_size
  s = jax.ShapeDtypeStruct
  text = lambda n: {"input_ids": s((n, max_len), jnp.int32), "attention_mask": s((n, max_len), jnp.int32)}
  return {"categorical": {"image": s((b, image_size, image_size, 3), jnp.uint8), **text(b),
                          "label": s((b,), jnp.int32), "source": s((b,), jnp.int32)},
          "elite": {"image": s((e, image_size, image_size, 3), jnp.uint8), **text(e)}}


def test_paper_scale_train_step_shapes():
  config = cfp.get_config()
  assert config.model.vision.variant == "resnet50" and config.image_size == 512
  model_cfg = KeepFITConfig.from_config(config.model, image_size=config.image_size,
                                        vocab_size=BIO_CLINICAL_BERT_VOCAB)
  assert model_cfg.num_vision_tokens == 16 * 16
  mesh = sharding.create_mesh(config.mesh)
  batch = _paper_batch(config, config.image_size, config.text.max_len)
  program = train.build_train_program(config, model_cfg, mesh, batch)
  state, metrics = jax.eval_shape(program.step, program.abstract_state, batch)
  assert jax.tree.structure(state) == jax.tree.structure(program.abstract_state)
  assert {"loss", "loss_cat", "loss_elite", "loss_ref", "loss_cap", "grad_norm"} <= set(metrics)
  assert all(m.shape == () for m in metrics.values())
  params = state["params"]
  n = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
  assert n(params["vision"]) == resnet_formula()
  assert n(params["text"]) == bert_formula(BIO_CLINICAL_BERT_VOCAB)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))


def test_vit_options_feed_the_caption_decoder():
  model_cfg = ml_collections.ConfigDict(cfp.get_config("demo").model.to_dict())
  model_cfg.vision = dict(variant="vit_custom", patch_size=8, width=32, depth=2, num_heads=4, mlp_dim=64)
  cfg = KeepFITConfig.from_config(model_cfg, image_size=32, vocab_size=50)
  assert isinstance(cfg.vision, ViTConfig) and cfg.vision.reduction == 8 and cfg.vision.features_dim == 32
  assert cfg.num_vision_tokens == 16
  model = build_model(cfg, None, 0)
  images = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)), jnp.float32)
  emb, pooled, fmap = model.encode_image(images)
  assert emb.shape == (2, cfg.projection_dim) and pooled.shape == (2, 32) and fmap.shape == (2, 4, 4, 32)
  tokens = jnp.ones((2, 6), jnp.int32)
  logits = model.caption_decoder(tokens, jnp.ones_like(tokens), fmap)
  assert logits.shape == (2, 6, 50) and bool(jnp.all(jnp.isfinite(logits)))
  b32 = vision_config(ml_collections.ConfigDict(dict(variant="vit_b32")), 512)
  assert (b32.patch_size, b32.grid, b32.image_size) == (32, 16, 512)


def test_bfloat16_compute_is_close_to_float32_with_float32_parameters():
  config = cfp.get_config("demo")
  cfg = KeepFITConfig.from_config(config.model, image_size=64, vocab_size=100)
  f32 = build_model(cfg, None, 0)
  bf16 = build_model(cfg, jnp.bfloat16, 0)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
  nnx.update(bf16, nnx.state(f32))          # identical parameters; only the compute dtype differs
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(0, 1, (4, 64, 64, 3)), jnp.float32)
  ids = jnp.asarray(rng.integers(5, 100, (4, 16)), jnp.int32)
  mask = jnp.asarray(np.arange(16)[None] < np.array([[16], [12], [8], [5]]), jnp.int32)
  v32, _, fmap32 = f32.encode_image(images)
  v16, _, fmap16 = bf16.encode_image(images)
  assert fmap16.dtype == jnp.bfloat16
  t32, t16 = f32.encode_text(ids, mask), bf16.encode_text(ids, mask)
  # Unit-norm embeddings: bfloat16 keeps ~3 significant digits.
  assert float(jnp.max(jnp.abs(v32 - v16))) < 1e-2   # measured 1.8e-3
  assert float(jnp.max(jnp.abs(t32 - t16))) < 1e-2   # measured 1.5e-3
  cos = lambda a, b: jnp.sum(a * b, -1)
  assert float(jnp.min(cos(v32, v16))) > 0.999 and float(jnp.min(cos(t32, t16))) > 0.999
