"""The train state's flat parameters (training/flat_params.py) against the parameter tree itself."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from bambnet_jax.models import networks
from bambnet_jax.training import stage_checkpoints
from bambnet_jax.training import flat_params
from bambnet_jax.training import steps

CONFIG = networks.model_config(width=8, branch_capacities=(1, 4))


def _tree(seed=0):
  return networks.init_params("deblur", CONFIG, jax.random.key(seed))


def test_vector_is_the_leaves_raveled_in_tree_order_and_unravels_back():
  tree = _tree()
  flat = flat_params.FlatParams.from_tree(tree)
  leaves = jax.tree_util.tree_leaves(jax.device_get(tree))
  np.testing.assert_array_equal(np.asarray(flat.vector), np.concatenate([np.ravel(x) for x in leaves]))
  for back in (flat.tree(), jax.device_get(flat).tree()):  # on the device and in NumPy
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(tree)
    for a, b in zip(jax.tree_util.tree_leaves(back), leaves):
      np.testing.assert_array_equal(np.asarray(a), b)
  assert isinstance(jax.tree_util.tree_leaves(jax.device_get(flat).tree())[0], np.ndarray)


def test_adam_on_the_vector_is_adam_on_the_tree():
  """optax over FlatParams (one vector) updates every parameter exactly as over the tree."""
  tree, optimizer = _tree(), optax.adam(1e-2)
  flat = flat_params.FlatParams.from_tree(tree)
  tree_state, flat_state = optimizer.init(tree), optimizer.init(flat)
  for seed in range(3):
    grads = jax.tree_util.tree_map(lambda x, s=seed: jax.random.normal(jax.random.key(s), x.shape), tree)
    updates, tree_state = optimizer.update(grads, tree_state, tree)
    tree = optax.apply_updates(tree, updates)
    flat_updates, flat_state = optimizer.update(flat_params.FlatParams.from_tree(grads), flat_state, flat)
    flat = optax.apply_updates(flat, flat_updates)
  assert isinstance(flat, flat_params.FlatParams) and flat.vector.ndim == 1
  for a, b in zip(jax.tree_util.tree_leaves(flat.tree()), jax.tree_util.tree_leaves(tree)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_gradient_through_the_tree_is_the_tree_gradient_raveled_with_one_concatenation():
  tree = _tree()
  flat = flat_params.FlatParams.from_tree(tree)
  loss = lambda t: sum(jnp.sum(jnp.sin(x) * (i + 1)) for i, x in enumerate(jax.tree_util.tree_leaves(t)))
  want = jax.grad(loss)(tree)
  got = jax.grad(lambda v: loss(flat.spec.unravel(v)))(flat.vector)
  np.testing.assert_allclose(np.asarray(got), np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(want)]),
                             rtol=1e-6)
  # Slices would each have a zero-padded copy of the vector as gradient, all summed by XLA.
  hlo = jax.jit(jax.grad(lambda v: loss(flat.spec.unravel(v)))).lower(flat.vector).as_text()
  assert " pad(" not in hlo and "stablehlo.pad" not in hlo


def test_equal_trees_give_equal_specs_so_a_step_compiles_once():
  a, b = flat_params.FlatParams.from_tree(_tree(0)), flat_params.FlatParams.from_tree(_tree(1))
  assert a.spec == b.spec and hash(a.spec) == hash(b.spec)
  traces = []

  @jax.jit
  def total(p):
    traces.append(1)
    return jnp.sum(p.vector)

  total(a), total(b)
  assert len(traces) == 1


def test_non_float32_parameters_are_refused():
  with pytest.raises(ValueError, match="float32"):
    flat_params.FlatParams.from_tree({"w": jnp.zeros((2,), jnp.bfloat16)})


def test_train_state_keeps_parameters_and_adam_moments_flat():
  """A step handles a few arrays, not one per parameter and moment (the point of the flat state)."""
  state = steps.create_state(_tree(), optax.adam(1e-3), {"coc_params": _tree(1), "thresholds": jnp.zeros(3)})
  num_params = len(jax.tree_util.tree_leaves(_tree()))
  assert num_params > 50
  # step, parameters, Adam's count and two moments, the COC parameters and the thresholds.
  assert len(jax.tree_util.tree_leaves(state)) == 7
  assert isinstance(state.mask_inputs["coc_params"], flat_params.FlatParams)


def test_steps_on_cpu_compile_with_xla_older_fusion_emitters_and_gpu_steps_do_not():
  """The CPU option that halves the flat state's compile time is set on CPU only, and this jaxlib
  accepts it: a function of a FlatParams compiled with it computes what NumPy does."""
  assert steps.step_options("cpu") == steps.CPU_FLAT_STATE_OPTIONS and steps.step_options("gpu") == {}
  tree = _tree()
  fn = jax.jit(lambda p: sum(jnp.sum(x * x) for x in jax.tree_util.tree_leaves(p.tree())),
               compiler_options=steps.step_options(platform="cpu"))
  expected = sum(np.sum(np.asarray(x, np.float64) ** 2) for x in jax.tree_util.tree_leaves(tree))
  np.testing.assert_allclose(float(fn(flat_params.FlatParams.from_tree(tree))), expected, rtol=1e-5)


def test_checkpoints_keep_the_flat_state_and_refuse_the_per_leaf_format(tmp_path):
  optimizer = optax.adam(1e-3)
  state = steps.create_state(_tree(0), optimizer)
  ckpts = stage_checkpoints.StageCheckpoints(tmp_path, "deblur")
  ckpts.save(3, state, {"data": "x"})
  restored, extra = ckpts.restore(steps.create_state(_tree(1), optimizer))
  assert extra["data"] == "x"
  np.testing.assert_array_equal(np.asarray(restored.params.vector), np.asarray(state.params.vector))
  assert restored.params.spec == state.params.spec
  # A checkpoint of the per-leaf state written before flat parameters (no format tag).
  directory = tmp_path / "old" / "deblur" / "checkpoints"
  with ocp.CheckpointManager(directory, item_names=("state", "extra")) as manager:
    old = {"step": np.zeros((), np.int32), "params": jax.device_get(_tree(0))}
    manager.save(7, args=ocp.args.Composite(state=ocp.args.StandardSave(old), extra=ocp.args.JsonSave({"data": "x"})))
    manager.wait_until_finished()
  with pytest.raises(stage_checkpoints.CheckpointError, match=f"{directory}/7: train state in format 1"):
    stage_checkpoints.StageCheckpoints(tmp_path / "old", "deblur").restore(state)
