"""FLAIR / MM-Retinal CSV readers on tiny files made here: good rows load, bad input names the row/file."""
import os

import numpy as np
import pytest
from PIL import Image

from input_pipeline.pipeline import DataError
from input_pipeline.sources import EliteCsvSource, FlairCsvSource


def write_image(path, value=128, size=(40, 30)):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


@pytest.fixture
def flair_dir(tmp_path):
  write_image(tmp_path / "01_EYEPACS" / "a.png", 10)
  write_image(tmp_path / "01_EYEPACS" / "b.png", 20)
  write_image(tmp_path / "05_REFUGE" / "c.png", 30)
  (tmp_path / "flair.csv").write_text(
      "image,atributes,categories\n"
      "01_EYEPACS/a.png,\"['macula centered']\",\"['no diabetic retinopathy']\"\n"
      "01_EYEPACS/b.png,[],\"['mild diabetic retinopathy', 'diabetic retinopathy']\"\n"
      "05_REFUGE/c.png,[],\"['glaucoma']\"\n")
  return tmp_path


def test_flair_csv_reads_lists_and_splits_by_dataset_folder(flair_dir):
  src = FlairCsvSource(str(flair_dir / "flair.csv"), str(flair_dir))
  assert len(src) == 3
  rec = src[1]
  assert rec["categories"] == ["mild diabetic retinopathy", "diabetic retinopathy"]
  assert rec["attributes"] == [] and rec["image"].shape == (30, 40, 3) and rec["image"][0, 0, 0] == 20
  parts = src.split_by_dataset()
  assert sorted(parts) == ["01_EYEPACS", "05_REFUGE"]
  assert len(parts["01_EYEPACS"]) == 2 and parts["05_REFUGE"].categories_of(0) == ["glaucoma"]


def test_malformed_list_names_file_row_and_column(flair_dir):
  (flair_dir / "bad.csv").write_text("image,atributes,categories\n"
                                     "01_EYEPACS/a.png,[],\"['glaucoma']\"\n"
                                     "01_EYEPACS/b.png,[],glaucoma, cataract]\n")
  with pytest.raises(DataError, match=r"bad.csv row 3: column 'categories'"):
    FlairCsvSource(str(flair_dir / "bad.csv"), str(flair_dir))


def test_missing_column_and_empty_csv(flair_dir):
  (flair_dir / "nocol.csv").write_text("image,atributes,labels\nx.png,[],[]\n")
  with pytest.raises(DataError, match="no column 'categories'"):
    FlairCsvSource(str(flair_dir / "nocol.csv"), str(flair_dir))
  (flair_dir / "empty.csv").write_text("image,atributes,categories\n")
  with pytest.raises(DataError, match="has no rows"):
    FlairCsvSource(str(flair_dir / "empty.csv"), str(flair_dir))


def test_missing_and_corrupt_images_name_the_file_and_row(flair_dir):
  src = FlairCsvSource(str(flair_dir / "flair.csv"), str(flair_dir))
  os.remove(flair_dir / "05_REFUGE" / "c.png")
  with pytest.raises(DataError, match=r"flair.csv row 4: image file .*c.png does not exist"):
    src[2]
  (flair_dir / "01_EYEPACS" / "a.png").write_bytes(b"not a png at all")
  with pytest.raises(DataError, match=r"row 2: image file .*a.png cannot be decoded"):
    src[0]


def test_elite_csv_accepts_both_layouts(tmp_path):
  write_image(tmp_path / "img" / "x.jpg", 50)
  (tmp_path / "mm.csv").write_text("image,caption\nimg/x.jpg,Scattered drusen in the macula.\n")
  (tmp_path / "v1.csv").write_text("Image_ID,cn_caption,en_caption\nimg/x.jpg,黄斑区玻璃膜疣,Drusen in the macula.\n")
  assert EliteCsvSource(str(tmp_path / "mm.csv"), str(tmp_path))[0]["caption"] == "Scattered drusen in the macula."
  assert EliteCsvSource(str(tmp_path / "v1.csv"), str(tmp_path))[0]["caption"] == "Drusen in the macula."
  (tmp_path / "blank.csv").write_text("image,caption\nimg/x.jpg,  \n")
  with pytest.raises(DataError, match="blank.csv row 2: empty caption"):
    EliteCsvSource(str(tmp_path / "blank.csv"), str(tmp_path))


def test_dataset_weights_and_knowledge_files_are_checked(tmp_path):
  from input_pipeline.sources import _parse_weights, load_knowledge
  assert _parse_weights("a=2, b=0.5", ["a", "b", "c"]) == {"a": 2.0, "b": 0.5, "c": 1.0}
  with pytest.raises(DataError, match="'d=1' must be NAME=WEIGHT with NAME one of"):
    _parse_weights("d=1", ["a", "b"])
  with pytest.raises(DataError, match="weight of 'a' is not a number"):
    _parse_weights("a=lots", ["a"])
  (tmp_path / "k.json").write_text('{"glaucoma": ["enlarged optic cup", "high cup-to-disc ratio"]}')
  assert load_knowledge(str(tmp_path / "k.json")) == {"glaucoma": ("enlarged optic cup", "high cup-to-disc ratio")}
  (tmp_path / "bad.json").write_text('{"glaucoma": "enlarged optic cup"}')
  with pytest.raises(DataError, match="must be a JSON object mapping each category to a list"):
    load_knowledge(str(tmp_path / "bad.json"))
