"""Parameter counts of the paper-scale model and its tower options, without allocating them.

  python benchmarks/param_counts.py            # a markdown table (copied into docs/weights.md)
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from configs import cfp  # noqa: E402
from keepfit_jax.models.keepfit import KeepFITConfig  # noqa: E402
from keepfit_jax.train_step import abstract_model  # noqa: E402

VOCAB = 28996   # Bio_ClinicalBERT


def _n(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def counts(variant: str, image_size: int) -> dict[str, int]:
  config = cfp.get_config()
  config.model.vision.variant = variant
  cfg = KeepFITConfig.from_config(config.model, image_size=image_size, vocab_size=VOCAB)
  _, params, batch_stats, _ = abstract_model(cfg, None)
  out = {name: _n(params[name]) for name in ("vision", "text", "caption_decoder", "knowledge_reference")}
  out["projections + temperature"] = _n(params["vision_projection"]) + _n(params["text_projection"]) + 1
  out["total"] = _n(params)
  out["BatchNorm statistics (not trained)"] = _n(batch_stats)
  return out


def main() -> None:
  columns = [("resnet50", 512), ("vit_b16", 224), ("vit_b32", 512)]
  table = {f"{v} @ {s}": counts(v, s) for v, s in columns}
  rows = next(iter(table.values())).keys()
  print("| part | " + " | ".join(table) + " |")
  print("|---" * (len(table) + 1) + "|")
  for row in rows:
    print(f"| {row} | " + " | ".join(f"{t[row]:,}" for t in table.values()) + " |")


if __name__ == "__main__":
  main()
