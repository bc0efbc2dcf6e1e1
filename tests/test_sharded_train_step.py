"""The same train step on 1 device and on 8 (fake CPU) devices gives the same losses."""
import jax
import numpy as np
import pytest

from keepfit_jax import sharding, train
from tests import helpers


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  config = helpers.tiny_config()
  encoder = helpers.text_encoder(config, str(tmp_path_factory.mktemp("tok")))
  ds = helpers.dataset(config, encoder)
  return config, encoder, [ds[0], ds[1]]


def run_two_steps(config, encoder, batches, devices, **mesh):
  config = config.copy_and_resolve_references()
  config.mesh = dict(dict(data=-1, fsdp=1, tensor=1), **mesh)
  mesh_ = sharding.create_mesh(config.mesh, devices)
  program = train.build_train_program(config, helpers.model_config(config, encoder), mesh_, batches[0])
  with jax.set_mesh(mesh_):
    state = program.init()
    out = []
    for b in batches:
      state, metrics = program.step(state, helpers.global_batch(b, program.batch_shardings))
      out.append(jax.device_get(metrics))
    params = jax.device_get(state["params"])
  return out, params


def test_eight_devices_match_one_device(setup):
  config, encoder, batches = setup
  assert len(jax.devices()) == 8
  one, params_one = run_two_steps(config, encoder, batches, jax.devices()[:1])
  eight, params_eight = run_two_steps(config, encoder, batches, jax.devices())
  for a, b in zip(one, eight):
    for key in ("loss", "loss_cat", "loss_elite", "loss_ref", "loss_cap"):
      assert abs(float(a[key]) - float(b[key])) <= 1e-5, (key, a[key], b[key])
  # The second step's loss depends on the first update, so the parameters agreed too; check them directly.
  diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))), params_one, params_eight)
  assert max(jax.tree.leaves(diffs)) < 1e-4


def test_fsdp_and_tensor_axes_give_the_same_loss(setup):
  config, encoder, batches = setup
  one, params_one = run_two_steps(config, encoder, batches[:1], jax.devices()[:1])
  mixed, params_mixed = run_two_steps(config, encoder, batches[:1], jax.devices(), data=2, fsdp=2, tensor=2)
  assert abs(float(one[0]["loss"]) - float(mixed[0]["loss"])) <= 1e-5
  assert abs(float(one[0]["grad_norm"]) - float(mixed[0]["grad_norm"])) <= 1e-4
  diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))), params_one, params_mixed)
  assert max(jax.tree.leaves(diffs)) < 1e-4          # the update, not only the forward pass, agrees


def test_per_device_contrastive_scope_differs_from_global(setup):
  config, encoder, batches = setup
  glob, _ = run_two_steps(config, encoder, batches[:1], jax.devices())
  config = config.copy_and_resolve_references()
  config.loss.contrastive_scope = "per_device"
  local, _ = run_two_steps(config, encoder, batches[:1], jax.devices())
  # Blocks of 2 see far fewer negatives: the per-device loss is much smaller than the global one.
  assert float(local[0]["loss_cat"]) < float(glob[0]["loss_cat"]) - 0.5


def test_whole_loop_with_evaluation_runs_on_eight_devices(tmp_path):
  # 20 held-out items per eval batch do not split over 8 devices: the evaluator pads to a multiple.
  config = helpers.tiny_config(**{"train.total_steps": 2, "train.eval_every": 2, "eval.batch_size": 20})
  metrics = train.train_and_evaluate(config, str(tmp_path))
  assert {"eval/zeroshot/aca", "eval/zeroshot/auc", "eval/retrieval/i2t_r5"} <= set(metrics)
  assert 0.0 <= metrics["eval/zeroshot/aca"] <= 1.0
