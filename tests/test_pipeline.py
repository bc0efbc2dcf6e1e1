"""The Grain pipeline: determinism, resumable iterator state, process sharding, OOD ban, prompts, letterbox."""
import hashlib

import numpy as np
import pytest

from input_pipeline import pipeline, prompts, sources, synthetic, transforms
from tests import helpers


@pytest.fixture(scope="module")
def config_and_encoder(tmp_path_factory):
  config = helpers.tiny_config()
  return config, helpers.text_encoder(config, str(tmp_path_factory.mktemp("tok")))


def digest(batch) -> str:
  h = hashlib.sha256()
  for stream in ("categorical", "elite"):
    for key in sorted(batch[stream]):
      h.update(np.ascontiguousarray(batch[stream][key]).tobytes())
  return h.hexdigest()


def test_same_seed_gives_same_batches_and_another_seed_does_not(config_and_encoder):
  config, encoder = config_and_encoder
  a, b = helpers.dataset(config, encoder), helpers.dataset(config, encoder)
  assert [digest(a[i]) for i in range(3)] == [digest(b[i]) for i in range(3)]
  other = helpers.dataset(config, encoder, seed=config.seed + 1)
  assert digest(other[0]) != digest(a[0])


def test_batch_layout(config_and_encoder):
  config, encoder = config_and_encoder
  batch = helpers.dataset(config, encoder)[0]
  cat, elite = batch["categorical"], batch["elite"]
  assert cat["image"].shape == (16, 64, 64, 3) and cat["image"].dtype == np.uint8
  assert cat["input_ids"].shape == (16, config.text.max_len) and cat["input_ids"].dtype == np.int32
  assert elite["image"].shape == (16, 64, 64, 3) and elite["attention_mask"].shape == (16, config.text.max_len)
  assert cat["label"].shape == (16,) and cat["source"].shape == (16,)
  # Every categorical prompt starts like the template and every elite text is a real caption (long).
  first = encoder.decode(cat["input_ids"][0])
  assert first.startswith("a ") and "fundus photograph of" in first
  assert elite["attention_mask"].sum(1).min() > 10


def test_iterator_state_restores_the_exact_stream(config_and_encoder):
  config, encoder = config_and_encoder
  ds = helpers.dataset(config, encoder)
  it = pipeline.make_iterator(ds, num_threads=1)
  next(it)
  next(it)
  state = it.get_state()
  expected = [digest(next(it)) for _ in range(2)]
  resumed = pipeline.make_iterator(helpers.dataset(config, encoder), num_threads=1)
  resumed.set_state(state)
  assert [digest(next(resumed)) for _ in range(2)] == expected


def test_processes_read_disjoint_parts_of_the_same_global_batch(config_and_encoder):
  config, encoder = config_and_encoder
  whole = helpers.dataset(config, encoder)[1]
  parts = [helpers.dataset(config, encoder, process_index=p, process_count=2)[1] for p in (0, 1)]
  rows = lambda b: sorted(hashlib.sha256(img.tobytes()).hexdigest() for img in b["categorical"]["image"])
  assert sorted(rows(parts[0]) + rows(parts[1])) == rows(whole)
  assert not set(rows(parts[0])) & set(rows(parts[1]))


def test_ood_ban_drops_banned_categories(config_and_encoder):
  config, _ = config_and_encoder
  streams = sources.build_streams(config)
  screening = streams.categorical[0].source
  banned_records = [i for i in range(len(screening)) if "cataract" in screening.categories_of(i)]
  assert banned_records, "the synthetic screening set carries cataract images to exercise the ban"
  kept = pipeline.apply_ood_ban(screening, streams.ood_ban, "screening")
  assert len(kept) == len(screening) - len(banned_records)
  assert all("cataract" not in kept.categories_of(i) for i in range(len(kept)))
  assert "cataract" not in streams.category_names()


def test_apply_ood_ban_on_an_all_banned_dataset_names_it():
  class AllMyopia:
    def __len__(self):
      return 3

    def categories_of(self, i):
      return ["myopia"]

  with pytest.raises(pipeline.DataError, match="'myopia_set'.*config.data.ood_ban"):
    pipeline.apply_ood_ban(AllMyopia(), ["myopia"], "myopia_set")


def test_prompt_templates_and_knowledge_augmentation():
  assert prompts.fill_template(prompts.TEMPLATES["cfp"], "glaucoma", "macula-centred") == \
      "A macula-centred fundus photograph of glaucoma"
  assert prompts.fill_template(prompts.TEMPLATES["oct"], "drusen") == "A OCT scan of drusen"
  rng = np.random.default_rng(0)
  knowledge = {"glaucoma": ["enlarged optic cup", "high cup-to-disc ratio"]}
  seen = {prompts.sample_prompt(rng, "A fundus photograph of [CLS]", ["glaucoma"], [], knowledge)[0]
          for _ in range(200)}
  assert seen == {"A fundus photograph of glaucoma", "A fundus photograph of enlarged optic cup",
                  "A fundus photograph of high cup-to-disc ratio"}
  # The sampled category (soft-target label) is the class, not the description.
  assert prompts.sample_prompt(rng, "[CLS]", ["glaucoma"], [], knowledge)[1] == "glaucoma"


def test_letterbox_keeps_aspect_and_pads_bottom_right():
  image = np.full((50, 100, 3), 200, np.uint8)
  out = transforms.letterbox(image, 64)
  assert out.shape == (64, 64, 3)
  assert (out[:32] == 200).all() and (out[32:] == 0).all()
  tall = transforms.letterbox(np.full((100, 50, 3), 7, np.uint8), 64)
  assert (tall[:, :32] == 7).all() and (tall[:, 32:] == 0).all()


def test_augment_changes_pixels_but_not_shape():
  rng = np.random.default_rng(0)
  image = synthetic.SyntheticSource("cfp", num_records=1, seed=0, image_size=64)[0]["image"]
  image = transforms.letterbox(image, 64)
  outs = [transforms.augment(image, rng) for _ in range(20)]
  assert all(o.shape == image.shape and o.dtype == np.uint8 for o in outs)
  assert any(not np.array_equal(o, image) for o in outs)
