"""The COC stage's schedule (warm-up, halving, clipping) and its collapse check."""

import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bambnet_jax.models import networks
from bambnet_jax.parallel import sharding
from bambnet_jax.training import stages
from bambnet_jax.training import steps


def _coc_cfg(**fields):
  return ml_collections.ConfigDict(dict(learning_rate=1e-3, lr_halve_every=40, warmup_steps=10,
                                        clip_grad_norm=0.0) | fields)


def _reference_rate(step, cfg):
  if step < cfg.warmup_steps:
    return cfg.learning_rate * step / cfg.warmup_steps
  return cfg.learning_rate * 0.5 ** (step // cfg.lr_halve_every)


def test_warm_up_then_halving_as_written():
  # Adam's step under a constant gradient is the learning rate itself (m / sqrt(v) = 1).
  cfg = _coc_cfg()
  optimizer = stages.coc_optimizer(cfg)
  params = {"w": jnp.zeros(2)}
  state = optimizer.init(params)
  for step in range(100):
    updates, state = optimizer.update({"w": jnp.full(2, 3.0)}, state, params)
    np.testing.assert_allclose(-updates["w"], _reference_rate(step, cfg), rtol=1e-4, atol=1e-9)


def test_clipping_bounds_the_first_step_of_a_huge_gradient():
  cfg = _coc_cfg(warmup_steps=0, clip_grad_norm=1.0, learning_rate=1.0)
  params = {"w": jnp.zeros(4)}
  clipped = stages.coc_optimizer(cfg)
  updates, _ = clipped.update({"w": jnp.asarray([1e6, 0.0, 0.0, 0.0])}, clipped.init(params), params)
  np.testing.assert_allclose(updates["w"], [-1.0, 0.0, 0.0, 0.0], atol=1e-3)


class _MetaOnly:
  """Stands in for data.datasets.DataSources: a meta set of two random batches."""

  def __init__(self, mesh):
    rng = np.random.default_rng(0)
    self.batches = [{"left": rng.random((2, 32, 32, 3), np.float32), "right": rng.random((2, 32, 32, 3), np.float32),
                     "mask": np.asarray([True, i == 0])} for i in range(2)]
    self.mesh = mesh

  def meta_batches(self, batch_size):
    del batch_size
    return iter([jax.device_put(b, sharding.batch_sharded(self.mesh)) for b in self.batches])


def _context(tmp_path):
  config = ml_collections.ConfigDict({"model": networks.model_config(width=8, branch_capacities=(1, 4)),
                                      "search": {"batch_size": 2}, "seed": 0})
  mesh = sharding.make_mesh(jax.devices()[:1])
  return stages.Context(config, pathlib.Path(tmp_path), mesh, _MetaOnly(mesh))


def test_a_coc_net_pinned_to_the_clamp_fails_the_stage(tmp_path):
  ctx = _context(tmp_path)
  params = networks.init_params("coc", ctx.config.model, jax.random.key(0))
  assert stages.check_coc_net(ctx, params) == 0.0  # a fresh net outputs 0 px
  pinned = dict(params, tail={"kernel": params["tail"]["kernel"], "bias": jnp.full(3, 100.0)})
  with pytest.raises(stages.COCStageFailed, match=r"\+-24 px clamp on 100%"):
    stages.check_coc_net(ctx, pinned)


def test_the_clamp_count_covers_only_real_pixels_of_a_padded_batch():
  config = networks.model_config(width=8, branch_capacities=(1, 4))
  params = networks.init_params("coc", config, jax.random.key(0))
  pinned = dict(params, tail={"kernel": params["tail"]["kernel"], "bias": jnp.full(3, 100.0)})
  rng = np.random.default_rng(1)
  pixel_mask = np.zeros((2, 32, 32), bool)
  pixel_mask[0, :20, :12] = True  # a 20 x 12 image padded to 32 x 32; the second row is padding
  batch = {"left": rng.random((2, 32, 32, 3), np.float32), "right": rng.random((2, 32, 32, 3), np.float32),
           "mask": np.asarray([True, False]), "pixel_mask": pixel_mask}
  at_clamp, total = steps.coc_clamp_step(pinned, batch, coc_model=networks.build("coc", config))
  assert float(total) == 20 * 12 * 3
  assert float(at_clamp) == 20 * 12 * 3
