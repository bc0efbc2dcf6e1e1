"""Bad configs stop before anything is compiled, with one line that names the key and what to do."""
import os
import subprocess
import sys

import pytest

from configs import common
from keepfit_jax import sharding, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args, timeout=120):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TRANSFORMERS_VERBOSITY="error")
  return subprocess.run([sys.executable, "-m", "keepfit_jax.main", *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=timeout)


def test_paper_config_without_data_says_which_key_to_set_and_points_to_demo(tmp_path):
  proc = run_main("--config=configs/cfp.py", f"--workdir={tmp_path}")
  assert proc.returncode == 2
  assert "config.data.categorical_csv is not set" in proc.stderr
  assert "--config=configs/cfp.py:demo" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_unknown_config_key_is_rejected(tmp_path):
  proc = run_main("--config=configs/oct.py:demo", f"--workdir={tmp_path}", "--config.train.totl_steps=5")
  assert proc.returncode != 0
  assert "totl_steps" in proc.stderr


def test_unknown_variant_is_rejected():
  with pytest.raises(ValueError, match="unknown config variant 'dmeo'"):
    common.get_config("cfp", "dmeo")


@pytest.mark.parametrize("mesh, devices, message", [
    (dict(data=3, fsdp=1, tensor=1), 8, "needs 3 devices but 8 are available"),
    (dict(data=-1, fsdp=3, tensor=1), 8, "8 is not divisible by 3"),
    (dict(data=-1, fsdp=-1, tensor=1), 8, "at most one axis may be -1"),
])
def test_impossible_meshes(mesh, devices, message):
  with pytest.raises(sharding.ConfigError, match=message):
    sharding.mesh_shape(mesh, devices)


def test_mesh_fills_the_minus_one_axis():
  assert sharding.mesh_shape(dict(data=-1, fsdp=2, tensor=1), 8) == (4, 2, 1)


def test_batch_not_divisible_by_data_axis(tmp_path):
  config = common.get_config("cfp", "demo")
  config.train.batch_size = 30     # 8 fake devices on the data axis
  with pytest.raises(sharding.ConfigError, match="config.train.batch_size=30 is not divisible by the 8"):
    train.train_and_evaluate(config, str(tmp_path))


@pytest.mark.parametrize("key, value, message", [
    ("dtype", "float16", "config.dtype must be 'float32' or 'bfloat16'"),
    ("loss.ref", -1.0, "config.loss.ref must be >= 0"),
    ("train.total_steps", 0, "config.train.total_steps must be positive"),
    ("loss.contrastive_scope", "local", "contrastive_scope must be 'global' or 'per_device'"),
    ("model.decoder.enabled", False, "config.loss.cap > 0 needs the caption decoder"),
    ("model.vision.variant", "resnet5", "config.model.vision.variant must be one of"),
    ("model.text_pooling", "mean", "config.model.text_pooling must be"),
    ("model.reference.softmax_over", "rows", "softmax_over must be 'keys' or 'heads'"),
    ("model.text.num_heads", 3, "config.model.text: width 64 is not divisible by 3 heads"),
])
def test_invalid_values(key, value, message):
  config = common.get_config("ffa", "demo")
  section, _, name = key.rpartition(".")
  target = config
  for part in filter(None, section.split(".")):
    target = target[part]
  target[name] = value
  with pytest.raises(sharding.ConfigError, match=message):
    train.validate_config(config)


def test_vit_image_size_must_be_a_multiple_of_the_patch():
  config = common.get_config("cfp")
  config.model.vision.variant = "vit_b16"
  config.image_size = 200
  with pytest.raises(sharding.ConfigError, match="not a multiple of the ViT patch size 16"):
    train.validate_config(config)


@pytest.mark.parametrize("override, message", [
    ("--config.dtype=float16", "config.dtype must be"),
    ("--config.model.decoder.enabled=False", "needs the caption decoder"),
    ("--config.text.tokenizer=/nonexistent/tokenizer", "config.text.tokenizer='/nonexistent/tokenizer' cannot be"),
])
def test_bad_values_through_main_give_one_line_not_a_traceback(tmp_path, override, message):
  proc = run_main("--config=configs/cfp.py:demo", f"--workdir={tmp_path}", override)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert message in proc.stderr and "Traceback" not in proc.stderr


def test_url_workdir_is_refused(tmp_path):
  config = common.get_config("cfp", "demo")
  with pytest.raises(sharding.ConfigError, match="URLs are not supported"):
    train.train_and_evaluate(config, "gs://bucket/run")
