"""The shared KeepFIT V2 configuration; `configs/{cfp,ffa,oct}.py` specialise it per modality.

Variants (big_vision style, `--config=configs/cfp.py:demo`):
  (none)  the paper-scale setting (ResNet-50 at 512 px, BERT-base, 24 + 24 images per device);
          needs real data: set config.data.categorical_csv, config.data.elite_csv, config.data.image_root.
  demo    seconds-to-minutes form on built-in synthetic data: tiny towers, low resolution.
"""
from __future__ import annotations

import ml_collections

PAPER_BATCH_PER_DEVICE = 24   # KeepFIT v1: 24 categorical + 24 elite per GPU, 4 GPUs


def get_config(modality: str, variant: str | None = None) -> ml_collections.ConfigDict:
  variant = (variant or "").strip()
  if variant not in ("", "demo"):
    raise ValueError(f"unknown config variant {variant!r}: use configs/{modality}.py or configs/{modality}.py:demo")
  c = ml_collections.ConfigDict()
  c.modality = modality
  c.variant = variant or "paper"
  c.seed = 0
  c.image_size = 512
  c.dtype = "float32"                  # compute dtype; 'bfloat16' for mixed precision (parameters stay float32)

  # --- model (METHOD.md §2)
  c.model = ml_collections.ConfigDict()
  c.model.vision = dict(variant="resnet50", block="bottleneck", stage_sizes=(3, 4, 6, 3), width=64)
  c.model.text = dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072,
                      max_position_embeddings=512, dropout=0.1)
  c.model.projection_dim = 512
  c.model.text_pooling = "masked_layer_mean"     # 'layer_mean_with_padding' = FLAIR / KeepFIT v1
  c.model.reference = dict(num_heads=2, dropout=0.5, softmax_over="keys")   # 'heads' = KeepFIT v1
  c.model.decoder = dict(enabled=True, num_layers=3, width=512, num_heads=8, mlp_ratio=4, dropout=0.1, max_len=256)

  # --- initialisation of a fresh run (a run that finds checkpoints in its workdir resumes instead)
  c.init = ml_collections.ConfigDict()
  c.init.vision = ""     # torchvision ResNet-50 ImageNet weights (.pth / state_dict); '' = random init
  c.init.text = ""       # Hugging Face BERT directory or hub id (e.g. emilyalsentzer/Bio_ClinicalBERT)
  c.init.model = ""      # a released FLAIR or KeepFIT v1 checkpoint (whole model)

  # --- text
  c.text = ml_collections.ConfigDict()
  c.text.tokenizer = "emilyalsentzer/Bio_ClinicalBERT"   # a directory with vocab.txt, or a hub id; 'synthetic' = built from the demo corpus
  c.text.max_len = 256

  # --- losses (METHOD.md §4): L = L_cat + λ_elite L_elite + λ_ref L_ref + λ_cap L_cap
  c.loss = ml_collections.ConfigDict()
  c.loss.cat = 1.0
  c.loss.elite = 1.0
  c.loss.ref = 100.0
  c.loss.cap = 1.0
  c.loss.contrastive_scope = "global"   # 'per_device' = FLAIR / KeepFIT v1 (loss per GPU batch)

  # --- optimisation (METHOD.md §5)
  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 1e-4
  c.optim.weight_decay = 1e-5
  c.optim.grad_clip = 1.0
  c.optim.warmup_steps = 3000          # ~1 epoch of the FLAIR assembly at 96 images/step
  c.optim.decay_steps = 300_000        # cosine horizon: 100 epochs, as v1

  # --- training loop
  c.train = ml_collections.ConfigDict()
  c.train.total_steps = 45_000         # ~15 epochs
  c.train.batch_size = PAPER_BATCH_PER_DEVICE * 4     # global categorical batch
  c.train.elite_batch_size = PAPER_BATCH_PER_DEVICE * 4
  c.train.log_every = 50
  c.train.checkpoint_every = 1000
  c.train.keep_checkpoints = 3
  c.train.eval_every = 5000
  c.train.max_consecutive_skips = 10   # non-finite steps in a row before the run stops

  # --- data (METHOD.md §3)
  c.data = ml_collections.ConfigDict()
  c.data.source = "csv"                # 'csv' (FLAIR / MM-Retinal CSVs) or 'synthetic' (built-in)
  c.data.categorical_csv = ""          # FLAIR format: image, atributes, categories
  c.data.elite_csv = ""                # MM-Retinal format: image, caption
  c.data.image_root = ""
  c.data.dataset_weights = ""          # '' = uniform per dataset (FLAIR); or '01_EYEPACS=2,05_REFUGE=1,...'
  c.data.knowledge = ""                # JSON {category: [expert descriptions]} (e.g. FLAIR's / KeepFIT's dictionary)
  c.data.heldout_elite = 0             # elite CSV rows (the last N) held out of training for retrieval evaluation
  c.data.eval_csv = ""                 # FLAIR-format held-out set for zero-shot evaluation (label = first category)
  c.data.knowledge_augmentation = True
  c.data.augment = True
  c.data.ood_ban = ("myopia", "cataract", "macular hole", "retinitis pigmentosa")
  c.data.num_threads = 2
  c.data.prefetch = 4
  c.data.synthetic = ml_collections.ConfigDict()   # used when data.source == 'synthetic'

  # --- evaluation (METHOD.md §6)
  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 64
  c.eval.zeroshot = dict(enabled=True, domain_knowledge=True)
  c.eval.retrieval = dict(enabled=True)

  # --- mesh and logical-axis rules (MaxText vocabulary)
  c.mesh = dict(data=-1, fsdp=1, tensor=1)
  c.sharding_rules = (
      ("batch", ("data", "fsdp")),
      ("embed", "fsdp"),
      ("conv_out", "fsdp"),
      ("mlp", "tensor"),
      ("heads", "tensor"),
      ("vocab", "tensor"),
      ("conv_in", None),
      ("norm", None),
  )

  if variant == "demo":
    _demo(c)
  return c


def _demo(c: ml_collections.ConfigDict) -> None:
  """Tiny towers at low resolution on built-in synthetic data: minutes on a 2-core CPU."""
  c.image_size = 96
  c.model.vision = dict(variant="custom", block="basic", stage_sizes=(1, 1, 1, 1), width=16)
  c.model.text = dict(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,
                      max_position_embeddings=64, dropout=0.0)
  c.model.projection_dim = 64
  c.model.decoder = dict(enabled=True, num_layers=1, width=64, num_heads=2, mlp_ratio=2, dropout=0.0, max_len=64)
  c.text.tokenizer = "synthetic"
  c.text.max_len = 64
  c.optim.lr = 1e-3
  c.optim.weight_decay = 1e-4
  c.optim.warmup_steps = 30
  c.optim.decay_steps = 400
  c.train.total_steps = 400
  c.train.batch_size = 32
  c.train.elite_batch_size = 32
  c.train.log_every = 20
  c.train.checkpoint_every = 100
  c.train.eval_every = 200
  c.data.source = "synthetic"
  c.data.synthetic = dict(train_records=4000, elite_records=1000, heldout_per_class=40, heldout_pairs=200)
  c.eval.batch_size = 100
