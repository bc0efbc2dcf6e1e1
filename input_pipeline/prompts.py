"""FLAIR-style prompts with knowledge-description augmentation (METHOD.md §3).

A categorical sample's text is "A [ATR] fundus photograph of [CLS]" with one attribute and one
category drawn at random; with knowledge augmentation the category is replaced by a random choice
among [category] + its expert descriptions.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

TEMPLATES = {
    "cfp": "A [ATR] fundus photograph of [CLS]",
    "ffa": "A [ATR] fluorescein angiography image of [CLS]",
    "oct": "A [ATR] OCT scan of [CLS]",
}

# KeepFIT v1 holds these categories out of pretraining for zero-shot tests.
DEFAULT_OOD_BAN = ("myopia", "cataract", "macular hole", "retinitis pigmentosa")


def fill_template(template: str, category: str, attribute: str = "") -> str:
  text = template.replace("[CLS]", category)
  text = text.replace("[ATR]", attribute) if attribute else text.replace("[ATR] ", "").replace("[ATR]", "")
  return " ".join(text.split())


def class_prompts(template: str, category: str, knowledge: Mapping[str, Sequence[str]] | None) -> list[str]:
  """Zero-shot texts of one class: the class name, plus each expert description when `knowledge` is given."""
  names = [category] + (list(knowledge.get(category, ())) if knowledge is not None else [])
  return [fill_template(template, n) for n in names]


def sample_prompt(rng: np.random.Generator, template: str, categories: Sequence[str], attributes: Sequence[str],
                  knowledge: Mapping[str, Sequence[str]] | None) -> tuple[str, str]:
  """Returns (prompt text, sampled category). The sampled category defines the soft contrastive targets."""
  category = categories[int(rng.integers(len(categories)))]
  attribute = attributes[int(rng.integers(len(attributes)))] if len(attributes) else ""
  name = category
  if knowledge is not None:
    choices = [category] + list(knowledge.get(category, ()))
    name = choices[int(rng.integers(len(choices)))]
  return fill_template(template, name, attribute), category
