"""Training steps: data parallelism over devices and processes gives the single-device result."""

import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from bambnet_jax.models import networks
from bambnet_jax.parallel import launch
from bambnet_jax.parallel import sharding
from bambnet_jax.data import pipeline
from bambnet_jax.training import steps

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import step_runner  # pylint: disable=g-import-not-at-top,wrong-import-position


def _assert_same_run(a, b):
  (losses_a, params_a), (losses_b, params_b) = a, b
  np.testing.assert_allclose(losses_a, losses_b, rtol=1e-5)
  for x, y in zip(jax.tree_util.tree_leaves(params_a), jax.tree_util.tree_leaves(params_b)):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mode", ["coc", steps.ANNEALED_MASKS])
def test_two_device_mesh_matches_one_device(mode):
  assert len(jax.devices()) >= 2, "conftest sets two CPU devices"
  _assert_same_run(step_runner.run(mode, sharding.make_mesh(jax.devices()[:1])),
                   step_runner.run(mode, sharding.make_mesh(jax.devices()[:2])))


def test_two_processes_through_jax_distributed_match_one_device(tmp_path):
  mode, coordinator, out = steps.ANNEALED_MASKS, launch.local_coordinator(), tmp_path / "result.npz"
  script = pathlib.Path(step_runner.__file__)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen([sys.executable, str(script), str(i), coordinator, str(out), mode], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  logs = [p.communicate(timeout=300)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), "\n".join(logs)
  result = np.load(out)
  params = [result[f"p{i}"] for i in range(len(result.files) - 1)]
  reference_losses, reference_params = step_runner.run(mode, sharding.make_mesh(jax.devices()[:1]))
  _assert_same_run((reference_losses, jax.tree_util.tree_leaves(reference_params)),
                   (result["losses"].tolist(), params))


def test_batch_is_split_across_devices():
  mesh = sharding.make_mesh(jax.devices()[:2])
  batch = pipeline.put_on_mesh(step_runner.global_batch(0), mesh)
  shards = batch["left"].addressable_shards
  assert len(shards) == 2 and {s.data.shape[0] for s in shards} == {2}
  np.testing.assert_array_equal(np.asarray(shards[1].data), step_runner.global_batch(0)["left"][2:])


def test_nonfinite_step_is_skipped_when_asked():
  mesh = sharding.make_mesh(jax.devices()[:1])
  config = step_runner.CONFIG
  optimizer = optax.adam(1e-3)
  params = jax.device_get(networks.init_params("deblur", config, jax.random.key(0)))
  fn = steps.jit_train_step(steps.deblur_train_step, mesh, model=networks.build("deblur", config), coc_model=None,
                            optimizer=optimizer, mask_mode=steps.NO_MASKS, anneal_steps=1, skip_nonfinite=True)
  state = sharding.put_replicated(steps.create_state(params, optimizer), mesh)
  bad = step_runner.global_batch(0)
  bad["sharp"][0, 0, 0, 0] = np.nan
  new, metrics = fn(state, pipeline.put_on_mesh(bad, mesh))
  assert float(metrics["nonfinite"]) == 1.0 and int(new.step) == 1
  for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(new.params).tree()), jax.tree_util.tree_leaves(params)):
    np.testing.assert_array_equal(a, b)


def test_global_norm_matches_numpy():
  rng = np.random.default_rng(0)
  tree = {"a": rng.normal(size=(3, 3, 4, 5)).astype(np.float32), "b": {"c": rng.normal(size=(7,)).astype(np.float32)},
          "d": jax.numpy.asarray(rng.normal(size=(2, 2)), jax.numpy.bfloat16)}
  want = np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64))) for x in jax.tree_util.tree_leaves(tree)))
  np.testing.assert_allclose(float(steps.global_norm(tree)), want, rtol=1e-6)
