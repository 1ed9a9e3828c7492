"""The three training stages of BaMBNet (paper section III-D), each resumable from its checkpoints.

1. `train_coc`: the COC net on the unsupervised reblur loss.
2. `search_thresholds`: Algorithm 1, rounds of hard-mask training and exact threshold updates.
3. `train_deblur`: thresholds fixed, masks annealed away over T steps, L1 loss.
"""

import dataclasses
import pathlib
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bambnet_jax.io import weights as weights_io
from bambnet_jax.data import pipeline
from bambnet_jax.models import networks
from bambnet_jax.training import stage_checkpoints
from bambnet_jax.training import logs
from bambnet_jax.training import loop
from bambnet_jax.parallel import sharding
from bambnet_jax.training import steps
from bambnet_jax.training import thresholds as threshold_search

# Distinct streams of one seed: parameter init of each net, and each stage's data order.
_COC_STREAM, _DEBLUR_STREAM, _SEARCH_DATA, _DEBLUR_DATA = 1, 2, 3, 4


@dataclasses.dataclass
class Context:
  config: Any
  workdir: pathlib.Path
  mesh: Any
  data: Any  # datasets.DataSources

  def key(self, stream):
    return jax.random.fold_in(jax.random.key(self.config.seed), stream)

  def settings(self, stage):
    return loop.LoopSettings(stage, self.config.log_every, self.config.checkpoint_every,
                             self.config.skip_nonfinite)


def _restore_or_start(ckpts, state, batches):
  """Restores state and data position from the stage's latest checkpoint, if any."""
  if ckpts.latest_step() is None:
    return state, {}
  state, extra = ckpts.restore(state)
  batches.set_state(loop.decode_data_state(extra["data"]))
  return state, extra


def _export_weights(ctx, stage, params, net):
  """Writes the stage's final weights (a `--weights` directory); replaces a partial earlier one."""
  directory = ctx.workdir / stage / "weights"
  if directory.exists() and jax.process_index() == 0:
    shutil.rmtree(directory)
  weights_io.save_weights(directory, jax.device_get(params), net, ctx.config.model)
  return directory


def coc_stage_model_config(config):
  """The model config the COC stage trains with: `coc.dtype`, when set, overrides the compute dtype.

  Only the compute dtype changes (parameters stay float32), so the weights load into either.
  """
  model_config = config.model
  if config.coc.get("dtype"):
    model_config = model_config.copy_and_resolve_references()
    model_config.dtype = config.coc.dtype
  return model_config


def train_coc(ctx):
  """Stage 1. Returns the trained COC net's parameters."""
  cfg = ctx.config.coc
  model_config = coc_stage_model_config(ctx.config)
  model = networks.build("coc", model_config)
  learning_rate = cfg.learning_rate
  if cfg.lr_halve_every:
    learning_rate = optax.exponential_decay(cfg.learning_rate, transition_steps=cfg.lr_halve_every,
                                            decay_rate=0.5, staircase=True)
  optimizer = optax.adam(learning_rate, b1=0.9, b2=0.999)
  state = steps.create_state(networks.init_params("coc", ctx.config.model, ctx.key(_COC_STREAM)), optimizer)
  batches = ctx.data.train_batches(pipeline.COC_STAGE_KEYS, cfg.batch_size, seed=ctx.config.seed,
                                   crop_size=cfg.get("crop_size"))
  ckpts = stage_checkpoints.StageCheckpoints(ctx.workdir, "coc")
  state, _ = _restore_or_start(ckpts, state, batches)
  state = sharding.put_replicated(state, ctx.mesh)
  step_fn = steps.jit_train_step(steps.coc_train_step, ctx.mesh,
                                 compiler_options=networks.compiler_options(model_config),
                                 model=model, optimizer=optimizer,
                                 tv_start=cfg.tv_start, tv_weight=cfg.tv_weight, loss_border=cfg.loss_border,
                                 skip_nonfinite=ctx.config.skip_nonfinite)
  return _train_and_export(ctx, "coc", state, lambda _: step_fn, batches, ckpts, cfg.num_steps)


def _train_and_export(ctx, stage, state, choose_step, batches, ckpts, num_steps):
  """Runs a stage's steps to `num_steps`, then exports its weights; returns the parameters."""
  logger = logs.StageLogger(ctx.workdir, stage, num_steps, int(state.step))
  try:
    state = loop.run_steps(state, choose_step=choose_step, batches=batches, end_step=num_steps,
                           settings=ctx.settings(stage), checkpoints=ckpts, logger=logger, extra=dict)
  finally:
    logger.close()
    ckpts.close()
  params = jax.device_get(state.params).tree()
  _export_weights(ctx, stage, params, stage)
  return params


def _deblur_models(ctx):
  return networks.build("deblur", ctx.config.model), networks.build("coc", ctx.config.model)


def _guidance(coc_params, thresholds):
  return {"coc_params": coc_params, "thresholds": jnp.asarray(thresholds, jnp.float32)}


def meta_branch_errors(ctx, params, guidance, error_fn):
  """Sums the per-(branch, bin) errors of each branch alone over the meta set."""
  errors = counts = None
  for batch in ctx.data.meta_batches(ctx.config.search.batch_size):
    e, c = error_fn(params, guidance, batch)
    errors, counts = (e, c) if errors is None else (errors + e, counts + c)
  return np.asarray(jax.device_get(errors), np.float64), np.asarray(jax.device_get(counts), np.float64)


def search_thresholds(ctx, coc_params):
  """Stage 2 (Algorithm 1). Returns (thresholds r_1..r_{M+1}, history, trained params or None)."""
  cfg = ctx.config.search
  num_branches = len(ctx.config.model.branch_capacities)
  if not cfg.enabled:
    return [float(r) for r in cfg.fixed_thresholds], [], None
  model, coc_model = _deblur_models(ctx)
  optimizer = optax.adam(cfg.learning_rate)
  start = threshold_search.uniform_thresholds(num_branches, cfg.max_coc)
  params = networks.init_params("deblur", ctx.config.model, ctx.key(_DEBLUR_STREAM))
  state = steps.create_state(params, optimizer, _guidance(coc_params, start))
  batches = ctx.data.train_batches(pipeline.DEBLUR_STAGE_KEYS, cfg.batch_size, seed=ctx.config.seed + _SEARCH_DATA)
  ckpts = stage_checkpoints.StageCheckpoints(ctx.workdir, "search")
  state, extra = _restore_or_start(ckpts, state, batches)
  history = extra.get("history", [])
  state = sharding.put_replicated(state, ctx.mesh)
  train_fn = steps.jit_train_step(steps.deblur_train_step, ctx.mesh,
                                  compiler_options=networks.compiler_options(ctx.config.model),
                                  model=model, coc_model=coc_model,
                                  optimizer=optimizer, mask_mode=steps.HARD_MASKS, anneal_steps=1,
                                  skip_nonfinite=ctx.config.skip_nonfinite)
  edges = threshold_search.bin_edges(cfg.max_coc, cfg.bin_width)
  error_fn = jax.jit(lambda p, g, b: steps.branch_error_step(p, g, b, model=model, coc_model=coc_model,
                                                             num_bins=len(edges) - 1, bin_width=cfg.bin_width),
                     compiler_options=steps.step_options())
  logger = logs.StageLogger(ctx.workdir, "search", cfg.max_rounds * cfg.steps_per_round, int(state.step))
  try:
    while len(history) < cfg.max_rounds and not (history and history[-1]["converged"]):
      round_index = len(history)
      end = (round_index + 1) * cfg.steps_per_round
      extra_fn = lambda: {"history": history}
      state = loop.run_steps(state, choose_step=lambda _: train_fn, batches=batches, end_step=end,
                             settings=ctx.settings("search"), checkpoints=ckpts, logger=logger,
                             extra=extra_fn, save_at_end=False)
      before = np.asarray(jax.device_get(state.guidance["thresholds"]), np.float64)
      errors, counts = meta_branch_errors(ctx, state.params, state.guidance, error_fn)
      after, cost = threshold_search.solve_thresholds(errors, edges)
      history.append({"round": round_index + 1, "step": end, "thresholds_before": before.tolist(),
                      "thresholds": after.tolist(), "cost": cost, "errors": errors.tolist(),
                      "counts": counts.tolist(), "bin_edges": edges.tolist(),
                      "converged": threshold_search.has_converged(before, after, cfg.tolerance)})
      # The state's own guidance: the COC parameters passed in were donated with the first step.
      new_thresholds = sharding.put_replicated(np.asarray(after, np.float32), ctx.mesh)
      state = state.replace(guidance=state.guidance | {"thresholds": new_thresholds})
      ckpts.save(end, state, extra_fn() | {"data": loop.encode_data_state(batches.get_state())})
      logger.write(end, {"search_cost": cost, **{f"r{i + 1}": r for i, r in enumerate(after)}})
  finally:
    logger.close()
    ckpts.close()
  return history[-1]["thresholds"], history, state.params.tree()


def train_deblur(ctx, coc_params, thresholds, init_params=None):
  """Stage 3. Returns the deblurring net's parameters."""
  cfg = ctx.config.deblur
  model, coc_model = _deblur_models(ctx)
  schedule = optax.exponential_decay(cfg.learning_rate, transition_steps=cfg.lr_halve_every,
                                     decay_rate=0.5, staircase=True)
  optimizer = optax.adam(schedule)
  if init_params is None:
    init_params = networks.init_params("deblur", ctx.config.model, ctx.key(_DEBLUR_STREAM))
  state = steps.create_state(init_params, optimizer, _guidance(coc_params, thresholds))
  batches = ctx.data.train_batches(pipeline.DEBLUR_STAGE_KEYS, cfg.batch_size, seed=ctx.config.seed + _DEBLUR_DATA)
  ckpts = stage_checkpoints.StageCheckpoints(ctx.workdir, "deblur")
  state, _ = _restore_or_start(ckpts, state, batches)
  state = sharding.put_replicated(state, ctx.mesh)
  common = dict(model=model, coc_model=coc_model, optimizer=optimizer, anneal_steps=cfg.anneal_steps,
                skip_nonfinite=ctx.config.skip_nonfinite,
                compiler_options=networks.compiler_options(ctx.config.model))
  annealed = steps.jit_train_step(steps.deblur_train_step, ctx.mesh, mask_mode=steps.ANNEALED_MASKS, **common)
  unmasked = steps.jit_train_step(steps.deblur_train_step, ctx.mesh, mask_mode=steps.NO_MASKS, **common)
  # After the annealing, nothing computes COC maps any more.
  choose = lambda step: annealed if cfg.use_masks and step < cfg.anneal_steps else unmasked
  return _train_and_export(ctx, "deblur", state, choose, batches, ckpts, cfg.num_steps)


def latest_search_params(ctx, coc_params):
  """The search stage's final deblurring-net parameters (to start stage 3 from), or None."""
  ckpts = stage_checkpoints.StageCheckpoints(ctx.workdir, "search")
  try:
    if ckpts.latest_step() is None:
      return None
    params = networks.init_params("deblur", ctx.config.model, ctx.key(_DEBLUR_STREAM))
    target = steps.create_state(params, optax.adam(ctx.config.search.learning_rate),
                                _guidance(coc_params, np.zeros(len(ctx.config.model.branch_capacities) + 1)))
    state, _ = ckpts.restore(target)
    return state.params.tree()
  finally:
    ckpts.close()
