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
])
def test_invalid_values(key, value, message):
  config = common.get_config("ffa", "demo")
  section, _, name = key.rpartition(".")
  (config[section] if section else config)[name] = value
  with pytest.raises((sharding.ConfigError, ValueError), match=message):
    train.validate_config(config)
