"""Where the data comes from: built-in synthetic datasets or FLAIR / MM-Retinal CSVs.

`build_streams(config)` returns the training `Streams` (categorical mixture + elite set);
`build_eval_sets(config)` the held-out sets the evaluators read. Both read `config.data`.
"""
from __future__ import annotations

import ast
import csv
import dataclasses
import json
import os
from typing import Sequence

import ml_collections
import numpy as np
from absl import logging
from PIL import Image, UnidentifiedImageError

from input_pipeline import prompts, synthetic
from input_pipeline.pipeline import CategoricalSource, DataError, Streams

_MISSING_DATA = (
    "config.data.{key} is not set: point it at your {what}, e.g. --config.data.{key}=/path/to/{example}. "
    "To try KeepFIT V2 without data, run the built-in synthetic demo: --config=configs/{modality}.py:demo")


# ----------------------------------------------------------------------------------------- synthetic


class _SyntheticCategorical:
  """A synthetic source whose record categories are known without drawing the image."""

  def __init__(self, source: synthetic.SyntheticSource):
    self.source = source

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    return self.source[i]

  def categories_of(self, i):
    return [self.source.classes[i % len(self.source.classes)]]


def synthetic_mixture(modality: str) -> dict[str, tuple[tuple[str, ...], float, float]]:
  """Categorical datasets of the demo, FLAIR-like: name -> (classes, share of records, mixture weight).

  A screening set with every class (and, for CFP, banned OOD images that the pipeline drops), and two
  specialist sets that each cover a few diseases plus normals, as public fundus datasets do.
  """
  classes = synthetic.CLASSES[modality]
  normal, diseases = classes[0], classes[1:]
  half = (len(diseases) + 1) // 2
  ood = tuple(synthetic.OOD_CLASSES) if modality == "cfp" else ()
  return {
      f"synthetic_{modality}_screening": (classes + ood, 0.5, 2.0),
      f"synthetic_{modality}_specialist_a": ((normal,) + diseases[:half], 0.25, 1.0),
      f"synthetic_{modality}_specialist_b": ((normal,) + diseases[half:], 0.25, 1.0),
  }


def _synthetic_streams(config: ml_collections.ConfigDict) -> Streams:
  s, m = config.data.synthetic, config.modality
  categorical = []
  for name, (classes, share, weight) in synthetic_mixture(m).items():
    src = synthetic.SyntheticSource(m, num_records=max(len(classes), int(s.train_records * share)),
                                    seed=config.seed, image_size=config.image_size, classes=classes, name=name)
    categorical.append(CategoricalSource(name, _SyntheticCategorical(src), weight))
  elite = synthetic.SyntheticSource(m, num_records=s.elite_records, seed=config.seed, image_size=config.image_size,
                                    name=f"synthetic_{m}_elite")
  return Streams(categorical=categorical, elite=elite, template=prompts.TEMPLATES[m],
                 knowledge=synthetic.KNOWLEDGE if config.data.knowledge_augmentation else None,
                 ood_ban=tuple(config.data.ood_ban))


def synthetic_corpus(config: ml_collections.ConfigDict, num_captions: int = 300) -> list[str]:
  """Every text the demo can produce: prompts with all attributes/categories/descriptions, and elite captions."""
  m = config.modality
  texts = []
  names = list(synthetic.CLASSES[m]) + list(synthetic.OOD_CLASSES)
  for name in names:
    for phrase in [name] + list(synthetic.KNOWLEDGE.get(name, ())):
      for attribute in [""] + list(synthetic.ATTRIBUTES[m]):
        texts.append(prompts.fill_template(prompts.TEMPLATES[m], phrase, attribute))
  src = synthetic.SyntheticSource(m, num_records=num_captions, seed=config.seed, image_size=32, name="corpus")
  texts += [src[i]["caption"] for i in range(num_captions)]
  return texts


# ----------------------------------------------------------------------------------------- CSV files


def _read_csv(path: str, required: Sequence[Sequence[str]], key: str) -> tuple[list[dict], list[str]]:
  """Rows of a CSV; `required` lists alternatives per needed column. Returns (rows, chosen column names)."""
  if not os.path.isfile(path):
    raise DataError(f"{path} (config.data.{key}) does not exist")
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    header = reader.fieldnames or []
    chosen = []
    for alternatives in required:
      found = [a for a in alternatives if a in header]
      if not found:
        raise DataError(f"{path}: no column {' or '.join(repr(a) for a in alternatives)} (columns: {header})")
      chosen.append(found[0])
    rows = list(reader)
  if not rows:
    raise DataError(f"{path} (config.data.{key}) has no rows")
  return rows, chosen


def _literal_list(value: str, path: str, row: int, column: str) -> list[str]:
  try:
    parsed = ast.literal_eval(value)
  except (ValueError, SyntaxError):
    raise DataError(f"{path} row {row}: column {column!r} must be a Python list literal like "
                    f"\"['glaucoma']\", got {value!r}") from None
  if isinstance(parsed, str):
    parsed = [parsed]
  if not isinstance(parsed, (list, tuple)) or not all(isinstance(x, str) for x in parsed):
    raise DataError(f"{path} row {row}: column {column!r} must be a list of strings, got {value!r}")
  return [x.strip() for x in parsed]


def load_image(path: str, where: str) -> np.ndarray:
  try:
    with Image.open(path) as im:
      return np.asarray(im.convert("RGB"))
  except FileNotFoundError:
    raise DataError(f"{where}: image file {path} does not exist; check config.data.image_root") from None
  except (UnidentifiedImageError, OSError) as e:
    raise DataError(f"{where}: image file {path} cannot be decoded ({e}); replace it or remove its row") from None


class FlairCsvSource:
  """FLAIR's pretraining CSV: columns `image`, `atributes` (sic), `categories`, the lists as Python literals."""

  def __init__(self, csv_path: str, image_root: str, rows: list[dict] | None = None, row_numbers=None):
    self.csv_path, self.image_root = csv_path, image_root
    if rows is None:
      rows, (self.c_img, self.c_atr, self.c_cat) = _read_csv(
          csv_path, [("image",), ("atributes", "attributes"), ("categories",)], "categorical_csv")
      row_numbers = list(range(2, len(rows) + 2))     # 1-based, after the header
      self.rows = [(r[self.c_img], _literal_list(r[self.c_atr], csv_path, n, self.c_atr),
                    _literal_list(r[self.c_cat], csv_path, n, self.c_cat)) for r, n in zip(rows, row_numbers)]
      for (_, _, cats), n in zip(self.rows, row_numbers):
        if not cats:
          raise DataError(f"{csv_path} row {n}: empty categories list")
    else:
      self.rows = rows
    self.row_numbers = row_numbers

  def __len__(self):
    return len(self.rows)

  def categories_of(self, i):
    return self.rows[i][2]

  def __getitem__(self, i):
    image, attributes, categories = self.rows[i]
    where = f"{self.csv_path} row {self.row_numbers[i]}"
    return {"image": load_image(os.path.join(self.image_root, image), where), "attributes": attributes,
            "categories": categories, "id": image}

  def split_by_dataset(self) -> dict[str, "FlairCsvSource"]:
    """FLAIR keeps each dataset in its own folder: group rows by the first component of `image`."""
    groups: dict[str, list[int]] = {}
    for i, (image, _, _) in enumerate(self.rows):
      groups.setdefault(image.replace("\\", "/").split("/")[0] if "/" in image else "default", []).append(i)
    return {name: FlairCsvSource(self.csv_path, self.image_root, [self.rows[i] for i in idx],
                                 [self.row_numbers[i] for i in idx]) for name, idx in sorted(groups.items())}


class EliteCsvSource:
  """MM-Retinal elite pairs: columns `image, caption` (or the raw v1 release's `Image_ID, en_caption`)."""

  def __init__(self, csv_path: str, image_root: str):
    self.csv_path, self.image_root = csv_path, image_root
    rows, (c_img, c_cap) = _read_csv(csv_path, [("image", "Image_ID"), ("caption", "en_caption")], "elite_csv")
    self.rows = []
    for n, r in enumerate(rows, start=2):
      if not (r[c_cap] or "").strip():
        raise DataError(f"{csv_path} row {n}: empty caption")
      self.rows.append((r[c_img], r[c_cap].strip(), n))

  def __len__(self):
    return len(self.rows)

  def __getitem__(self, i):
    image, caption, n = self.rows[i]
    return {"image": load_image(os.path.join(self.image_root, image), f"{self.csv_path} row {n}"),
            "caption": caption, "id": image}


def _parse_weights(spec: str, names: Sequence[str]) -> dict[str, float]:
  weights = {n: 1.0 for n in names}
  for item in filter(None, (x.strip() for x in spec.split(","))):
    name, sep, value = item.partition("=")
    if not sep or name not in weights:
      raise DataError(f"config.data.dataset_weights: {item!r} must be NAME=WEIGHT with NAME one of {sorted(names)}")
    try:
      weights[name] = float(value)
    except ValueError:
      raise DataError(f"config.data.dataset_weights: weight of {name!r} is not a number: {value!r}") from None
  return weights


def load_knowledge(path: str) -> dict[str, tuple[str, ...]]:
  """A domain-knowledge dictionary: JSON object {category: [description, ...]}."""
  try:
    with open(path) as f:
      raw = json.load(f)
  except FileNotFoundError:
    raise DataError(f"config.data.knowledge: {path} does not exist") from None
  except json.JSONDecodeError as e:
    raise DataError(f"config.data.knowledge: {path} is not valid JSON ({e})") from None
  if not isinstance(raw, dict) or not all(isinstance(v, list) and all(isinstance(x, str) for x in v)
                                          for v in raw.values()):
    raise DataError(f"config.data.knowledge: {path} must be a JSON object mapping each category to a list of "
                    f"descriptions")
  return {k.strip(): tuple(x.strip() for x in v) for k, v in raw.items()}


class _Rows:
  """The first `n` records of a source (the elite rows left for training when some are held out)."""

  def __init__(self, source, n: int):
    self.source, self.n = source, n

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    if not 0 <= i < self.n:
      raise IndexError(i)
    return self.source[i]


def _csv_streams(config: ml_collections.ConfigDict) -> Streams:
  d, m = config.data, config.modality
  for key, what, example in (("categorical_csv", "FLAIR-format CSV (image, atributes, categories)", "flair.csv"),
                             ("elite_csv", "MM-Retinal CSV (image, caption)", "mm_retinal.csv"),
                             ("image_root", "folder the CSVs' image paths are relative to", "images")):
    if not d[key]:
      raise DataError(_MISSING_DATA.format(key=key, what=what, example=example, modality=m))
  per_dataset = FlairCsvSource(d.categorical_csv, d.image_root).split_by_dataset()
  weights = _parse_weights(d.dataset_weights, list(per_dataset))
  categorical = [CategoricalSource(name, src, weights[name]) for name, src in per_dataset.items()]
  elite = EliteCsvSource(d.elite_csv, d.image_root)
  if d.heldout_elite:
    if d.heldout_elite >= len(elite):
      raise DataError(f"config.data.heldout_elite={d.heldout_elite} leaves no elite pair of {d.elite_csv} "
                      f"({len(elite)} rows) for training")
    elite = _Rows(elite, len(elite) - d.heldout_elite)
  knowledge = None
  if d.knowledge_augmentation:
    if d.knowledge:
      knowledge = load_knowledge(d.knowledge)
      names = {c for src in per_dataset.values() for i in range(len(src)) for c in src.categories_of(i)}
      missing = sorted(names - set(knowledge) - set(d.ood_ban))
      if missing:
        logging.warning("config.data.knowledge has no descriptions for %d categories (they keep their name): %s",
                        len(missing), ", ".join(missing[:20]))
    else:
      logging.warning("config.data.knowledge is not set: knowledge augmentation and domain-knowledge zero-shot "
                      "are off. Point it at a JSON {category: [descriptions]} dictionary to turn them on.")
  return Streams(categorical=categorical, elite=elite, template=prompts.TEMPLATES[m], knowledge=knowledge,
                 ood_ban=tuple(d.ood_ban))


def build_streams(config: ml_collections.ConfigDict) -> Streams:
  if config.data.source == "synthetic":
    return _synthetic_streams(config)
  if config.data.source == "csv":
    return _csv_streams(config)
  raise DataError(f"config.data.source must be 'synthetic' or 'csv', got {config.data.source!r}")


# ----------------------------------------------------------------------------------------- held-out sets


@dataclasses.dataclass
class EvalSets:
  zeroshot_images: np.ndarray | None = None
  zeroshot_labels: np.ndarray | None = None
  class_names: tuple[str, ...] = ()
  retrieval_images: np.ndarray | None = None
  retrieval_captions: tuple[str, ...] = ()


def build_eval_sets(config: ml_collections.ConfigDict) -> EvalSets:
  """Held-out sets: synthetic ones drawn with other seeds, or config.data.eval_csv / heldout_elite for real data."""
  from input_pipeline.transforms import letterbox
  d, m, size = config.data, config.modality, config.image_size
  if d.source == "synthetic":
    s = d.synthetic
    classes = synthetic.CLASSES[m]
    zs = synthetic.SyntheticSource(m, num_records=s.heldout_per_class * len(classes), seed=config.seed + 10_000,
                                   image_size=size, name=f"synthetic_{m}_heldout")
    rt = synthetic.SyntheticSource(m, num_records=s.heldout_pairs, seed=config.seed + 20_000, image_size=size,
                                   name=f"synthetic_{m}_heldout_pairs")
    zs_records = [zs[i] for i in range(len(zs))]
    rt_records = [rt[i] for i in range(len(rt))]
    return EvalSets(
        zeroshot_images=np.stack([letterbox(r["image"], size) for r in zs_records]),
        zeroshot_labels=np.asarray([classes.index(r["categories"][0]) for r in zs_records], np.int32),
        class_names=tuple(classes),
        retrieval_images=np.stack([letterbox(r["image"], size) for r in rt_records]),
        retrieval_captions=tuple(r["caption"] for r in rt_records))
  sets = EvalSets()
  if d.eval_csv:
    src = FlairCsvSource(d.eval_csv, d.image_root)
    labels = [src.categories_of(i)[0] for i in range(len(src))]
    sets.class_names = tuple(sorted(set(labels)))
    sets.zeroshot_images = np.stack([letterbox(src[i]["image"], size) for i in range(len(src))])
    sets.zeroshot_labels = np.asarray([sets.class_names.index(c) for c in labels], np.int32)
  if d.heldout_elite:
    elite = EliteCsvSource(d.elite_csv, d.image_root)
    rows = range(len(elite) - d.heldout_elite, len(elite))
    sets.retrieval_images = np.stack([letterbox(elite[i]["image"], size) for i in rows])
    sets.retrieval_captions = tuple(elite[i]["caption"] for i in rows)
  if sets.zeroshot_images is None and sets.retrieval_images is None:
    logging.warning("no evaluation data: set config.data.eval_csv (zero-shot) and/or config.data.heldout_elite "
                    "(retrieval) to evaluate during training")
  return sets
