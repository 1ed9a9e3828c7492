"""Training steps: data parallelism gives the single-device result; non-finite handling."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bambnet_jax.models import networks
from bambnet_jax.training import parallel
from bambnet_jax.training import steps

CONFIG = networks.model_config(width=8, branch_capacities=(1, 4))


def _batch(seed, n=4, size=32):
  rng = np.random.default_rng(seed)
  sharp = rng.random((n, size, size, 3), np.float32)
  shift = np.roll(sharp, 1, axis=2)
  return {"left": sharp * 0.7 + shift * 0.3, "right": sharp * 0.7 + np.roll(sharp, -1, axis=2) * 0.3,
          "sharp": sharp}


def _run(step_fn_name, mesh, num_steps=2, **static):
  model = networks.build("deblur" if step_fn_name != "coc" else "coc", CONFIG)
  optimizer = optax.adam(1e-3)
  net = "coc" if step_fn_name == "coc" else "deblur"
  params = networks.init_params(net, CONFIG, jax.random.key(0))
  if step_fn_name == "coc":
    state = steps.create_state(params, optimizer)
    fn = steps.jit_train_step(steps.coc_train_step, mesh, model=model, optimizer=optimizer, tv_start=0,
                              tv_weight=1e-5, **static)
  else:
    coc_params = networks.init_params("coc", CONFIG, jax.random.key(1))
    guidance = {"coc_params": coc_params, "thresholds": jnp.array([0.0, 0.05, 25.0])}
    state = steps.create_state(params, optimizer, guidance)
    fn = steps.jit_train_step(steps.deblur_train_step, mesh, model=model,
                              coc_model=networks.build("coc", CONFIG), optimizer=optimizer,
                              mask_mode=step_fn_name, anneal_steps=100, **static)
  state = parallel.put_replicated(state, mesh)
  losses = []
  for i in range(num_steps):
    state, metrics = fn(state, parallel.put_batch(_batch(i), mesh))
    losses.append(float(metrics["loss"]))
  return jax.device_get(state.params), losses


@pytest.mark.parametrize("mode", ["coc", steps.ANNEALED_MASKS, steps.NO_MASKS])
def test_two_device_mesh_matches_one_device(mode):
  assert len(jax.devices()) >= 2, "conftest sets two CPU devices"
  params_1, losses_1 = _run(mode, parallel.make_mesh(jax.devices()[:1]))
  params_2, losses_2 = _run(mode, parallel.make_mesh(jax.devices()[:2]))
  np.testing.assert_allclose(losses_1, losses_2, rtol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(params_1), jax.tree_util.tree_leaves(params_2)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_batch_is_split_across_devices():
  mesh = parallel.make_mesh(jax.devices()[:2])
  batch = parallel.put_batch(_batch(0), mesh)
  shards = batch["left"].addressable_shards
  assert len(shards) == 2 and {s.data.shape[0] for s in shards} == {2}
  np.testing.assert_array_equal(np.asarray(shards[1].data), _batch(0)["left"][2:])


def test_nonfinite_step_is_skipped_when_asked():
  mesh = parallel.make_mesh(jax.devices()[:1])
  model = networks.build("deblur", CONFIG)
  optimizer = optax.adam(1e-3)
  params = jax.device_get(networks.init_params("deblur", CONFIG, jax.random.key(0)))
  fn = steps.jit_train_step(steps.deblur_train_step, mesh, model=model, coc_model=None, optimizer=optimizer,
                            mask_mode=steps.NO_MASKS, anneal_steps=1, skip_nonfinite=True)
  state = parallel.put_replicated(steps.create_state(params, optimizer), mesh)
  bad = _batch(0)
  bad["sharp"][0, 0, 0, 0] = np.nan
  new, metrics = fn(state, parallel.put_batch(bad, mesh))
  assert float(metrics["nonfinite"]) == 1.0 and int(new.step) == 1
  for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(new.params)), jax.tree_util.tree_leaves(params)):
    np.testing.assert_array_equal(a, b)
