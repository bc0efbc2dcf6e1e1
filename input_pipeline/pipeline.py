"""Grain pipelines: every step yields one categorical batch and one elite batch (METHOD.md §3).

    categorical sources --(OOD ban)--> shuffle/repeat each --> weighted mix --> prompt + augment + tokenize --> batch
    elite source -------------------> shuffle/repeat ------------------------> letterbox + tokenize ---------> batch
                                                            zip by step --> {'categorical': ..., 'elite': ...}

The step dataset is a random-access `grain.MapDataset`, so the iterator state is one integer
(`next_index`) and a resumed run sees exactly the batches it would have seen. Each process reads
a disjoint slice (`[process_index::process_count]`) of the same global stream, so the union of
the per-process batches of a step is the same set of examples whatever the process count.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import grain
import numpy as np

from input_pipeline import prompts, transforms


class DataError(ValueError):
  """Bad or missing data; the message names the file/row/field and what to do."""


@dataclasses.dataclass
class CategoricalSource:
  name: str
  source: Any           # random access: __len__, __getitem__ -> {'image', 'categories', 'attributes', 'id'}
  weight: float


@dataclasses.dataclass
class Streams:
  """Everything the training pipeline reads, independent of where it comes from."""
  categorical: list[CategoricalSource]
  elite: Any            # random access: __getitem__ -> {'image', 'caption', 'id'}
  template: str
  knowledge: Mapping[str, Sequence[str]]
  ood_ban: tuple[str, ...] = prompts.DEFAULT_OOD_BAN

  def category_names(self) -> list[str]:
    names = set()
    for cs in self.categorical:
      for i in range(len(cs.source)):
        names.update(_categories_of(cs.source, i))
    return sorted(n for n in names if n not in self.ood_ban)


def _categories_of(source, index: int) -> list[str]:
  """Categories of a record, without decoding its image when the source can say so cheaply."""
  if hasattr(source, "categories_of"):
    return list(source.categories_of(index))
  return list(source[index]["categories"])


class _Subset:
  """The records of `source` at `indices` (used for the OOD ban)."""

  def __init__(self, source, indices: np.ndarray):
    self.source, self.indices = source, indices

  def __len__(self):
    return len(self.indices)

  def __getitem__(self, i):
    return self.source[int(self.indices[i])]

  def categories_of(self, i):
    return _categories_of(self.source, int(self.indices[i]))


def apply_ood_ban(source, banned: Sequence[str], name: str):
  """Drops every record with a banned category; the banned categories are held out for zero-shot tests."""
  banned = set(banned)
  keep = np.asarray([i for i in range(len(source)) if not banned.intersection(_categories_of(source, i))], np.int64)
  if len(keep) == 0:
    raise DataError(f"categorical dataset {name!r}: every record has a banned category {sorted(banned)} "
                    f"(config.data.ood_ban); remove the dataset or change the ban")
  return source if len(keep) == len(source) else _Subset(source, keep)


class CategoricalPreprocess:
  """Record -> letterboxed, augmented uint8 image + tokenized FLAIR prompt + category id."""

  def __init__(self, *, image_size: int, augment: bool, template: str, knowledge, category_ids: Mapping[str, int],
               encoder, ood_ban: Sequence[str]):
    self.image_size, self.augment, self.template = image_size, augment, template
    self.knowledge, self.category_ids, self.encoder = knowledge, dict(category_ids), encoder
    self.ood_ban = set(ood_ban)

  def __call__(self, record: dict, rng: np.random.Generator) -> dict:
    image = transforms.letterbox(record["image"], self.image_size)
    if self.augment:
      image = transforms.augment(image, rng)
    categories = [c for c in record["categories"] if c not in self.ood_ban]
    text, category = prompts.sample_prompt(rng, self.template, categories, record.get("attributes", ()),
                                           self.knowledge)
    tokens = self.encoder([text])
    return {"image": image, "input_ids": tokens["input_ids"][0], "attention_mask": tokens["attention_mask"][0],
            "label": np.int32(self.category_ids[category]), "source": np.int32(record["source"])}


class ElitePreprocess:
  def __init__(self, *, image_size: int, encoder):
    self.image_size, self.encoder = image_size, encoder

  def __call__(self, record: dict) -> dict:
    tokens = self.encoder([record["caption"]])
    return {"image": transforms.letterbox(record["image"], self.image_size),
            "input_ids": tokens["input_ids"][0], "attention_mask": tokens["attention_mask"][0]}


class _ZipByIndex(grain.MapDataset):
  """Element i is {'categorical': cat[i], 'elite': elite[i]}."""

  def __init__(self, categorical: grain.MapDataset, elite: grain.MapDataset):
    super().__init__([categorical, elite])
    self._cat, self._elite = categorical, elite

  def __len__(self) -> int:
    return min(len(self._cat), len(self._elite))

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return {"categorical": self._cat[index], "elite": self._elite[index]}


def _with_source_index(k: int):
  return lambda record: {**record, "source": k}


def step_dataset(streams: Streams, encoder, *, image_size: int, batch_size: int, elite_batch_size: int, seed: int,
                 augment: bool = True, process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
  """The infinite per-process dataset of training steps."""
  if batch_size % process_count or elite_batch_size % process_count:
    raise DataError(f"batch sizes ({batch_size}, {elite_batch_size}) must be divisible by the process count "
                    f"{process_count}")
  if not streams.categorical:
    raise DataError("no categorical dataset: set config.data (see configs/*.py)")
  if len(streams.elite) == 0:
    raise DataError("the elite dataset is empty: check config.data.elite")
  category_ids = {n: i for i, n in enumerate(streams.category_names())}
  parts, weights = [], []
  for k, cs in enumerate(streams.categorical):
    src = apply_ood_ban(cs.source, streams.ood_ban, cs.name)
    parts.append(grain.MapDataset.source(src).shuffle(seed=seed + 1000 * (k + 1)).repeat().map(_with_source_index(k)))
    weights.append(float(cs.weight))
  if min(weights) <= 0:
    raise DataError(f"categorical dataset weights must be positive, got {weights}")
  mixed = grain.MapDataset.mix(parts, weights=weights) if len(parts) > 1 else parts[0]
  # Random ops are keyed by the global element index (before the per-process slice), so an example is
  # augmented and prompted the same way whatever the process count.
  categorical = mixed.random_map(
      CategoricalPreprocess(image_size=image_size, augment=augment, template=streams.template,
                            knowledge=streams.knowledge, category_ids=category_ids, encoder=encoder,
                            ood_ban=streams.ood_ban),
      seed=seed + 7)[process_index::process_count].batch(batch_size // process_count, drop_remainder=True)
  elite = (grain.MapDataset.source(streams.elite).shuffle(seed=seed + 13).repeat()[process_index::process_count]
           .map(ElitePreprocess(image_size=image_size, encoder=encoder))
           .batch(elite_batch_size // process_count, drop_remainder=True))
  return _ZipByIndex(categorical, elite)


def make_iterator(dataset: grain.MapDataset, *, num_threads: int = 2, prefetch: int = 4):
  return dataset.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)).__iter__()
