"""Training on FLAIR / MM-Retinal CSVs: a corrupt image stops the run naming file and row; fixed, it resumes."""
import os

import numpy as np
import pytest
from PIL import Image

from input_pipeline.pipeline import DataError
from keepfit_jax import tokenizer as tokenizer_lib, train
from keepfit_jax.testing import faults
from tests import helpers


def make_dataset(root):
  rng = np.random.default_rng(0)
  rows, classes = [], ["glaucoma", "normal", "cataract"]          # cataract rows are banned (OOD)
  for ds in ("01_EYEPACS", "05_REFUGE"):
    os.makedirs(root / ds)
    for i in range(12):
      Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(root / ds / f"{i}.png")
      rows.append(f"{ds}/{i}.png,\"['dim']\",\"['{classes[i % 3]}']\"")
  (root / "flair.csv").write_text("image,atributes,categories\n" + "\n".join(rows) + "\n")
  (root / "elite.csv").write_text("image,caption\n" + "".join(
      f"01_EYEPACS/{i}.png,Scattered drusen in the macula number {i}.\n" for i in range(8)))
  (root / "eval.csv").write_text("image,atributes,categories\n" + "".join(
      f"05_REFUGE/{i}.png,[],\"['{classes[i % 2]}']\"\n" for i in range(6)))
  (root / "knowledge.json").write_text('{"glaucoma": ["enlarged optic cup"], "normal": ["healthy retina"]}')
  tokenizer_lib.write_vocab(["a dim fundus photograph of glaucoma normal scattered drusen in the macula number "
                             "enlarged optic cup healthy retina"], str(root / "tokenizer"))


def test_corrupt_image_stops_with_its_row_then_the_fixed_run_resumes(tmp_path):
  make_dataset(tmp_path)
  config = helpers.tiny_config(**{
      "data.source": "csv", "data.categorical_csv": str(tmp_path / "flair.csv"),
      "data.elite_csv": str(tmp_path / "elite.csv"), "data.image_root": str(tmp_path),
      "text.tokenizer": str(tmp_path / "tokenizer"), "train.batch_size": 8, "train.elite_batch_size": 8,
      "train.total_steps": 6, "train.checkpoint_every": 1, "train.eval_every": 6,
      "data.eval_csv": str(tmp_path / "eval.csv"), "data.heldout_elite": 3,
      "data.knowledge": str(tmp_path / "knowledge.json"), "data.dataset_weights": "01_EYEPACS=2"})
  good = (tmp_path / "05_REFUGE" / "4.png").read_bytes()
  faults.corrupt_image(str(tmp_path / "05_REFUGE" / "4.png"))
  workdir = str(tmp_path / "run")
  with pytest.raises(DataError, match=r"flair.csv row 18: image file .*05_REFUGE/4.png cannot be decoded"):
    train.train_and_evaluate(config, workdir)
  (tmp_path / "05_REFUGE" / "4.png").write_bytes(good)          # the user replaces the file
  metrics = train.train_and_evaluate(config, workdir)
  assert faults.logged_steps(workdir) == list(range(1, 7))
  # Real-data evaluation: zero-shot on eval_csv (2 classes) and retrieval on the 3 held-out elite pairs.
  assert {"eval/zeroshot/aca", "eval/zeroshot/auc", "eval/retrieval/i2t_r1"} <= set(metrics)
