"""The inference API on a run trained here: loading, embeddings, zero-shot, greedy captions."""

import numpy as np
import pytest
from PIL import Image

from input_pipeline import synthetic
from keepfit_jax import train
from keepfit_jax.inference import Predictor
from tests import helpers


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run"))
  config = helpers.tiny_config(**{"train.total_steps": 3, "train.eval_every": 100})
  train.train_and_evaluate(config, workdir)
  return Predictor.from_workdir(workdir, batch_size=4)


@pytest.fixture(scope="module")
def images():
  src = synthetic.SyntheticSource("cfp", num_records=5, seed=123, image_size=80)
  return [src[i]["image"] for i in range(5)]


def test_paths_and_arrays_give_the_same_embeddings(predictor, images, tmp_path):
  paths = []
  for i, im in enumerate(images):
    paths.append(str(tmp_path / f"{i}.png"))
    Image.fromarray(im).save(paths[-1])          # PNG is lossless
  from_arrays, features = predictor.embed_images(images)
  from_paths, _ = predictor.embed_images(paths)
  assert from_arrays.shape == (5, 64) and features.shape == (5, 128)
  np.testing.assert_allclose(np.linalg.norm(from_arrays, axis=1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(from_arrays, from_paths, atol=1e-6)
  # Batching (4 + 1 padded) does not change an image's embedding.
  np.testing.assert_allclose(predictor.embed_images(images[4:])[0], from_arrays[4:], atol=1e-5)


def test_zero_shot_probabilities(predictor, images):
  probs = predictor.zero_shot(images, list(synthetic.CLASSES["cfp"]), knowledge=synthetic.KNOWLEDGE)
  assert probs.shape == (5, len(synthetic.CLASSES["cfp"]))
  np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)


def test_greedy_caption_is_the_argmax_of_a_teacher_forced_pass(predictor, images):
  """The incremental decoding loop must agree with one full forward pass over its own output."""
  import jax.numpy as jnp
  from keepfit_jax.train_step import images_to_float

  tokens = predictor.caption_tokens(images[:2])
  tok = predictor.encoder.tokenizer
  assert (tokens[:, 0] == tok.cls_token_id).all()
  model = predictor.model()
  _, _, fmap = model.encode_image(images_to_float(jnp.asarray(predictor._images(images[:2]))), train=False)
  for row, f in zip(tokens, fmap):
    end = int(np.argmax(row == tok.sep_token_id)) if (row == tok.sep_token_id).any() else len(row) - 1
    mask = np.zeros((1, len(row)), np.int32)
    mask[0, :end + 1] = 1
    logits = np.asarray(model.caption_decoder(jnp.asarray(row[None]), jnp.asarray(mask), f[None], train=False))
    np.testing.assert_array_equal(logits[0, :end].argmax(-1), row[1:end + 1])
  assert all(isinstance(c, str) for c in predictor.caption(images[:2]))


def test_from_workdir_errors_name_the_problem(tmp_path):
  with pytest.raises(FileNotFoundError, match="not a keepfit_jax training workdir"):
    Predictor.from_workdir(str(tmp_path))
