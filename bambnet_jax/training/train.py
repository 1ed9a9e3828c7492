"""`train_and_evaluate(config, workdir)`: BaMBNet's whole method as one resumable pipeline.

Stages in order: coc (COC net on the reblur loss) -> search (threshold search, Algorithm 1) ->
deblur (thresholds fixed, masks annealed away) -> eval (test split). Resume order: a finished
stage (recorded in workdir/progress.json with its result) is never redone; an unfinished one
restores its latest checkpoint (state, optimizer, thresholds, history, data position) and goes on.
"""

import json
import pathlib

import jax

from bambnet_jax import checkpoints as weights_io
from bambnet_jax.evaluation import evaluate
from bambnet_jax.io import files
from bambnet_jax.models import networks
from bambnet_jax.training import checkpointing
from bambnet_jax.training import data_sources
from bambnet_jax.training import parallel
from bambnet_jax.training import search_plots
from bambnet_jax.training import stages


def _weights(ctx, stage, net):
  return weights_io.load_weights(ctx.workdir / stage / "weights", expected_net=net,
                                 kernel_layout=networks.kernel_layout(ctx.config.model))[0]


def train_and_evaluate(config, workdir, stop_after=None):
  """Runs (or resumes) every stage; returns the evaluation summary. `stop_after` names a stage."""
  parallel.initialize_distributed(config.parallel.coordinator, config.parallel.num_processes,
                                  config.parallel.process_id, config.parallel.local_device_ids)
  workdir = pathlib.Path(workdir).absolute()
  workdir.mkdir(parents=True, exist_ok=True)
  if jax.process_index() == 0:
    files.atomic_write_bytes(workdir / "config.json", config.to_json_best_effort(indent=1).encode())
  mesh = parallel.make_mesh()
  ctx = stages.Context(config, workdir, mesh, data_sources.DataSources(config.data, mesh))
  progress = checkpointing.Progress(workdir)

  # Only the search's and the annealing's masks read COC maps: without both (the Table III
  # ablation) the COC stage is skipped, and the evaluation reports no COC error.
  needs_coc = config.search.enabled or config.deblur.use_masks
  if needs_coc and not progress.is_finished("coc"):
    stages.train_coc(ctx)
    progress.finish("coc", {"weights": str(workdir / "coc" / "weights")})
  if stop_after == "coc":
    return None
  # Kept on the host: each stage places its own copy (its train state is donated every step).
  coc_params = jax.device_get(_weights(ctx, "coc", "coc")) if needs_coc else None

  if not progress.is_finished("search"):
    found, history, _ = stages.search_thresholds(ctx, coc_params)
    if history and jax.process_index() == 0:
      search_plots.write_search_report(history, workdir / "search")
    progress.finish("search", {"thresholds": [float(r) for r in found], "rounds": len(history)})
  thresholds = progress.result("search")["thresholds"]
  if stop_after == "search":
    return None

  if not progress.is_finished("deblur"):
    init = None
    if config.deblur.init_from_search and config.search.enabled:
      init = stages.latest_search_params(ctx, coc_params)
    stages.train_deblur(ctx, coc_params, thresholds, init)
    progress.finish("deblur", {"weights": str(workdir / "deblur" / "weights")})
  if stop_after == "deblur":
    return None

  if not progress.is_finished("eval"):
    deblur_params = parallel.put_replicated(_weights(ctx, "deblur", "deblur"), mesh)
    coc_on_mesh = None if coc_params is None else parallel.put_replicated(coc_params, mesh)
    summary = evaluate.evaluate(deblur_params, coc_on_mesh, config.model,
                                ctx.data.test_batches(config.eval.batch_size), workdir / "eval")
    summary["thresholds"] = thresholds
    progress.finish("eval", summary)
    if jax.process_index() == 0:
      print(json.dumps({"eval": summary}))
  return progress.result("eval")
