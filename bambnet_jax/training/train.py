"""`train(config, workdir)`: BaMBNet's three training stages (paper section III-D) as one resumable run.

Resume order: a stage finished in workdir/progress.json is never redone; an unfinished one restores
its latest checkpoint (state, optimizer, thresholds, history, data position) and goes on.
"""

import dataclasses
import pathlib
import sys
from typing import Any

import jax

from bambnet_jax.data import datasets
from bambnet_jax.io import files
from bambnet_jax.io import weights as weights_io
from bambnet_jax.parallel import sharding
from bambnet_jax.training import search_plots
from bambnet_jax.training import stage_checkpoints
from bambnet_jax.training import stages


@dataclasses.dataclass
class TrainedRun:
  """What a finished training run hands on: its context, COC net (host arrays) and thresholds."""
  context: stages.Context
  progress: stage_checkpoints.Progress
  coc_params: Any  # None when no stage needed a COC net
  thresholds: list


def train(config, workdir, stop_after=None):
  """Runs (or resumes) every stage; `stop_after` names the last one. Returns a `TrainedRun`."""
  sharding.initialize_distributed(config.parallel.coordinator, config.parallel.num_processes,
                                  config.parallel.process_id, config.parallel.local_device_ids)
  workdir = pathlib.Path(workdir).absolute()
  workdir.mkdir(parents=True, exist_ok=True)
  if jax.process_index() == 0:
    print(f"bambnet train: {sharding.device_report()}", file=sys.stderr)
    files.atomic_write_bytes(workdir / "config.json", config.to_json_best_effort(indent=1).encode())
  mesh = sharding.make_mesh()
  ctx = stages.Context(config, workdir, mesh, datasets.DataSources(config.data, mesh))
  progress = stage_checkpoints.Progress(workdir)
  run = TrainedRun(ctx, progress, None, [])

  # Only the search's and the annealing's masks read COC maps: the Table III ablation has no COC stage.
  needs_coc = config.search.enabled or config.deblur.use_masks
  if needs_coc and not progress.is_finished("coc"):
    stages.train_coc(ctx)
    progress.finish("coc", {"weights": str(workdir / "coc" / "weights")})
  if stop_after == "coc":
    return run
  # Kept on the host: each stage places its own copy (its train state is donated every step).
  if needs_coc:
    run.coc_params = jax.device_get(weights_io.load_weights(workdir / "coc" / "weights", expected_net="coc")[0])

  if not progress.is_finished("search"):
    found, history, _ = stages.search_thresholds(ctx, run.coc_params)
    if history and jax.process_index() == 0:
      search_plots.write_search_report(history, workdir / "search")
    progress.finish("search", {"thresholds": [float(r) for r in found], "rounds": len(history)})
  run.thresholds = progress.result("search")["thresholds"]
  if stop_after == "search":
    return run

  if not progress.is_finished("deblur"):
    init = None
    if config.deblur.init_from_search and config.search.enabled:
      init = stages.latest_search_params(ctx, run.coc_params)
    stages.train_deblur(ctx, run.coc_params, run.thresholds, init)
    progress.finish("deblur", {"weights": str(workdir / "deblur" / "weights")})
  return run
