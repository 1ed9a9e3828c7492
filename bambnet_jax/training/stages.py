"""BaMBNet's three training stages (paper section III-D), each resumable from its checkpoints:
`train_coc` (reblur loss), `search_thresholds` (Algorithm 1) and `train_deblur` (masks annealed away).
"""

import dataclasses
import pathlib
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bambnet_jax.data import pipeline
from bambnet_jax.io import weights as weights_io
from bambnet_jax.models import networks
from bambnet_jax.parallel import sharding
from bambnet_jax.training import logs
from bambnet_jax.training import loop
from bambnet_jax.training import stage_checkpoints
from bambnet_jax.training import steps
from bambnet_jax.training import thresholds as threshold_search

# Distinct streams of one seed: parameter init of each net, and each stage's data order.
_COC_STREAM, _DEBLUR_STREAM, _SEARCH_DATA, _DEBLUR_DATA = 1, 2, 3, 4


def fine_coc_grid(max_coc, num_bins=2000, smallest=1e-6):
  """Edges of the |COC| histogram whose pixel quantiles place the search's bins: 0, then
  geometric from `smallest` to max_coc px, so an early COC net's tiny outputs still spread over bins
  (1% relative resolution: 0.05 px at 5 px)."""
  return np.concatenate([[0.0], np.geomspace(smallest, max_coc, num_bins)])


@dataclasses.dataclass
class Context:
  config: Any
  workdir: pathlib.Path
  mesh: Any
  data: Any  # data.datasets.DataSources

  def key(self, stream):
    return jax.random.fold_in(jax.random.key(self.config.seed), stream)


@dataclasses.dataclass
class Stage:
  """A stage's train state on the mesh, its batches, checkpoints and restored extra state."""
  name: str
  state: Any
  batches: Any
  checkpoints: stage_checkpoints.StageCheckpoints
  extra_state: dict


def _start_stage(ctx, name, params, optimizer, *, keys, batch_size, data_seed, inputs_of_masks=None,
                 crop_size=None):
  """A stage's state from `params`, or from its latest checkpoint (state and data position)."""
  state = steps.create_state(params, optimizer, inputs_of_masks)
  batches = ctx.data.train_batches(keys, batch_size, seed=data_seed, crop_size=crop_size)
  checkpoints = stage_checkpoints.StageCheckpoints(ctx.workdir, name)
  extra_state = {}
  if checkpoints.latest_step() is not None:
    state, extra_state = checkpoints.restore(state)
    batches.set_state(loop.decode_data_state(extra_state.pop("data")))
  return Stage(name, sharding.put_replicated(state, ctx.mesh), batches, checkpoints, extra_state)


def _run(ctx, stage, step_fn, end_step, logger, save_at_end=True):
  settings = loop.LoopSettings(stage.name, ctx.config.log_every, ctx.config.checkpoint_every, ctx.config.skip_nonfinite)
  stage.state = loop.run_steps(stage.state, step_fn, stage.batches, end_step, settings=settings,
                               checkpoints=stage.checkpoints, logger=logger, extra_state=stage.extra_state,
                               save_at_end=save_at_end)


def _export_weights(ctx, net, params):
  """Writes the stage's final weights (a `--weights` directory); replaces a partial earlier one."""
  directory = ctx.workdir / net / "weights"
  if directory.exists() and jax.process_index() == 0:
    shutil.rmtree(directory)
  weights_io.save_weights(directory, jax.device_get(params), net, ctx.config.model)


def _halving(learning_rate, every):
  return optax.exponential_decay(learning_rate, every, 0.5, staircase=True) if every else learning_rate


def coc_stage_model_config(config):
  """The COC stage's model config: `coc.dtype`, when set, overrides the compute dtype (not the params')."""
  model_config = config.model
  if config.coc.dtype:
    model_config = model_config.copy_and_resolve_references()
    model_config.dtype = config.coc.dtype
  return model_config


class COCStageFailed(RuntimeError):
  """The COC net collapsed: its output sits at the clamp, and masks read from it mean nothing."""


def coc_optimizer(cfg):
  """The paper's Adam (0.9, 0.999), after a linear warm-up and with the global gradient norm clipped
  (0 disables either): early reblur-loss gradients are large and can throw the net to the clamp."""
  schedule = _halving(cfg.learning_rate, cfg.lr_halve_every)
  if cfg.warmup_steps:
    # join_schedules counts the second schedule's steps from the boundary; the halving counts from 0.
    after = schedule if callable(schedule) else optax.constant_schedule(schedule)
    schedule = optax.join_schedules([optax.linear_schedule(0.0, cfg.learning_rate, cfg.warmup_steps),
                                     lambda step: after(step + cfg.warmup_steps)], [cfg.warmup_steps])
  adam = optax.adam(schedule, b1=0.9, b2=0.999)
  return optax.chain(optax.clip_by_global_norm(cfg.clip_grad_norm), adam) if cfg.clip_grad_norm else adam


def check_coc_net(ctx, params, max_share=0.5):
  """Raises COCStageFailed if the COC net's output sits at the clamp on most meta-set values."""
  coc_model = networks.build("coc", ctx.config.model)
  count = jax.jit(lambda p, b: steps.coc_clamp_step(p, b, coc_model=coc_model), compiler_options=steps.step_options())
  on_mesh = sharding.put_replicated(params, ctx.mesh)
  at_clamp, total = _meta_sums(ctx, lambda batch: count(on_mesh, batch))
  share = float(at_clamp / max(total, 1.0))
  if share > max_share:
    raise COCStageFailed(
        f"the COC stage failed: its net outputs the +-{ctx.config.model.coc_clamp:g} px clamp on {share:.0%} of "
        f"the meta set's pixels ({ctx.workdir / 'coc'}); retrain it with a lower coc.learning_rate, or a "
        "longer coc.warmup_steps (delete the coc folder and progress.json's coc entry first)")
  return share


def train_coc(ctx):
  """Stage 1. Returns the trained COC net's parameters."""
  cfg = ctx.config.coc
  optimizer = coc_optimizer(cfg)
  stage = _start_stage(ctx, "coc", networks.init_params("coc", ctx.config.model, ctx.key(_COC_STREAM)), optimizer,
                       keys=pipeline.COC_STAGE_KEYS, batch_size=cfg.batch_size, data_seed=ctx.config.seed,
                       crop_size=cfg.crop_size)
  step_fn = steps.jit_train_step(steps.coc_train_step, ctx.mesh,
                                 model=networks.build("coc", coc_stage_model_config(ctx.config)),
                                 optimizer=optimizer, tv_start=cfg.tv_start, tv_weight=cfg.tv_weight,
                                 loss_border=cfg.loss_border, skip_nonfinite=ctx.config.skip_nonfinite)
  with logs.StageLogger(ctx.workdir, "coc", cfg.num_steps, int(stage.state.step)) as logger, stage.checkpoints:
    _run(ctx, stage, step_fn, cfg.num_steps, logger)
  params = jax.device_get(stage.state.params).tree()
  check_coc_net(ctx, params)
  _export_weights(ctx, "coc", params)
  return params


def _meta_sums(ctx, step_fn):
  """Sums step_fn(batch) (arrays or tuples of arrays) over the meta set, as float64 NumPy."""
  total = None
  for batch in ctx.data.meta_batches(ctx.config.search.batch_size):
    out = step_fn(batch)
    total = out if total is None else jax.tree_util.tree_map(jnp.add, total, out)
  return jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x), np.float64), total)


def _search_grid(ctx, coc_model, flat_coc_params):
  """(bin edges, initial thresholds): the paper's uniform ones, or at the meta set's |COC| quantiles."""
  cfg = ctx.config.search
  num_branches = len(ctx.config.model.branch_capacities)
  if cfg.paper_rule:
    return threshold_search.bin_edges(cfg.max_coc, cfg.bin_width), threshold_search.uniform_thresholds(
        num_branches, cfg.max_coc)
  fine = fine_coc_grid(cfg.max_coc)
  histogram = jax.jit(lambda p, b, e: steps.blur_histogram_step(p, b, e, coc_model=coc_model),
                      compiler_options=steps.step_options())
  fine_edges = jnp.asarray(fine, jnp.float32)
  counts = _meta_sums(ctx, lambda batch: histogram(flat_coc_params, batch, fine_edges))
  edges = threshold_search.quantile_edges(counts, fine, cfg.num_bins, cfg.max_coc)
  return edges, threshold_search.initial_thresholds(counts, fine, num_branches)


def search_thresholds(ctx, coc_params):
  """Stage 2 (Algorithm 1). Returns (thresholds r_1..r_{M+1}, history, trained params or None)."""
  cfg = ctx.config.search
  if not cfg.enabled:
    return [float(r) for r in cfg.fixed_thresholds], [], None
  model, coc_model = networks.build("deblur", ctx.config.model), networks.build("coc", ctx.config.model)
  optimizer = optax.adam(cfg.learning_rate)
  min_share = 0.0 if cfg.paper_rule else cfg.min_branch_share
  num_branches = len(ctx.config.model.branch_capacities)
  params = networks.init_params("deblur", ctx.config.model, ctx.key(_DEBLUR_STREAM))
  # The start is overwritten by a restored state; the grid comes back from the extra state.
  stage = _start_stage(ctx, "search", params, optimizer, keys=pipeline.DEBLUR_STAGE_KEYS,
                       batch_size=cfg.batch_size, data_seed=ctx.config.seed + _SEARCH_DATA,
                       inputs_of_masks=steps.mask_inputs(coc_params, np.zeros(num_branches + 1)))
  if "bin_edges" not in stage.extra_state:
    edges, start = _search_grid(ctx, coc_model, stage.state.mask_inputs["coc_params"])
    stage.extra_state.update(history=[], bin_edges=np.asarray(edges).tolist())
    stage.state = stage.state.replace(mask_inputs=stage.state.mask_inputs | {
        "thresholds": sharding.put_replicated(np.asarray(start, np.float32), ctx.mesh)})
  history, edges = stage.extra_state["history"], np.asarray(stage.extra_state["bin_edges"])
  train_fn = steps.jit_train_step(steps.deblur_train_step, ctx.mesh, model=model, coc_model=coc_model,
                                  optimizer=optimizer, mask_mode=steps.HARD_MASKS, anneal_steps=1,
                                  skip_nonfinite=ctx.config.skip_nonfinite)
  error_fn = jax.jit(lambda p, m, b, e: steps.branch_error_step(p, m, b, e, model=model, coc_model=coc_model),
                     compiler_options=steps.step_options())
  edges_on_device = jnp.asarray(edges, jnp.float32)
  with logs.StageLogger(ctx.workdir, "search", cfg.max_rounds * cfg.steps_per_round,
                        int(stage.state.step)) as logger, stage.checkpoints:
    while len(history) < cfg.max_rounds and not (history and history[-1]["converged"]):
      end = (len(history) + 1) * cfg.steps_per_round
      _run(ctx, stage, train_fn, end, logger, save_at_end=False)
      state = stage.state
      before = np.asarray(jax.device_get(state.mask_inputs["thresholds"]), np.float64)
      errors, counts = _meta_sums(ctx, lambda b: error_fn(state.params, state.mask_inputs, b, edges_on_device))
      share = threshold_search.feasible_share(counts, len(before) - 1, min_share)
      after, cost = threshold_search.solve_thresholds(errors, edges, counts, share)
      shares = threshold_search.branch_shares(after, counts, edges)
      history.append({"round": len(history) + 1, "step": end, "thresholds_before": before.tolist(),
                      "thresholds": after.tolist(), "cost": cost, "branch_shares": shares.tolist(),
                      "min_branch_share": share, "errors": errors.tolist(), "counts": counts.tolist(),
                      "bin_edges": edges.tolist(),
                      "converged": threshold_search.has_converged(before, after, cfg.tolerance)})
      new_thresholds = sharding.put_replicated(np.asarray(after, np.float32), ctx.mesh)
      stage.state = state.replace(mask_inputs=state.mask_inputs | {"thresholds": new_thresholds})
      stage.checkpoints.save(end, stage.state, stage.extra_state | {
          "data": loop.encode_data_state(stage.batches.get_state())})
      logger.write(end, {"search_cost": cost, **{f"r{i + 1}": r for i, r in enumerate(after)},
                         **{f"share{i + 1}": s for i, s in enumerate(shares)}})
  return history[-1]["thresholds"], history, stage.state.params.tree()


def train_deblur(ctx, coc_params, thresholds, init_params=None):
  """Stage 3. Returns the deblurring net's parameters."""
  cfg = ctx.config.deblur
  model, coc_model = networks.build("deblur", ctx.config.model), networks.build("coc", ctx.config.model)
  optimizer = optax.adam(_halving(cfg.learning_rate, cfg.lr_halve_every))
  if init_params is None:
    init_params = networks.init_params("deblur", ctx.config.model, ctx.key(_DEBLUR_STREAM))
  stage = _start_stage(ctx, "deblur", init_params, optimizer, keys=pipeline.DEBLUR_STAGE_KEYS,
                       batch_size=cfg.batch_size, data_seed=ctx.config.seed + _DEBLUR_DATA,
                       inputs_of_masks=steps.mask_inputs(coc_params, thresholds))
  step_fn = lambda mask_mode: steps.jit_train_step(
      steps.deblur_train_step, ctx.mesh, model=model, coc_model=coc_model, optimizer=optimizer,
      mask_mode=mask_mode, anneal_steps=cfg.anneal_steps, skip_nonfinite=ctx.config.skip_nonfinite)
  # Masks fade out over the first T steps; after that nothing computes COC maps any more.
  annealed_until = min(cfg.anneal_steps, cfg.num_steps) if cfg.use_masks else 0
  with logs.StageLogger(ctx.workdir, "deblur", cfg.num_steps, int(stage.state.step)) as logger, stage.checkpoints:
    if int(stage.state.step) < annealed_until:
      _run(ctx, stage, step_fn(steps.ANNEALED_MASKS), annealed_until, logger,
           save_at_end=annealed_until == cfg.num_steps)
    _run(ctx, stage, step_fn(steps.NO_MASKS), cfg.num_steps, logger)
  params = jax.device_get(stage.state.params).tree()
  _export_weights(ctx, "deblur", params)
  return params


def latest_search_params(ctx, coc_params):
  """The search stage's final deblurring-net parameters (to start stage 3 from), or None."""
  with stage_checkpoints.StageCheckpoints(ctx.workdir, "search") as checkpoints:
    if checkpoints.latest_step() is None:
      return None
    params = networks.init_params("deblur", ctx.config.model, ctx.key(_DEBLUR_STREAM))
    target = steps.create_state(params, optax.adam(ctx.config.search.learning_rate),
                                steps.mask_inputs(coc_params, np.zeros(len(ctx.config.model.branch_capacities) + 1)))
    state, _ = checkpoints.restore(target)
    return state.params.tree()
