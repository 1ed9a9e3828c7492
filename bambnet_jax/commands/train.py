"""`bambnet train`: the three training stages, then the evaluation of the test split."""

import json

import jax

from bambnet_jax.evaluation import evaluate
from bambnet_jax.io import weights as weights_io
from bambnet_jax.parallel import sharding
from bambnet_jax.training import train


def train_and_evaluate(config, workdir, stop_after=None):
  """Runs (or resumes) every stage and the evaluation; returns its summary. `stop_after` ("coc",
  "search" or "deblur") ends the run after that stage, with no evaluation."""
  run = train.train(config, workdir, stop_after)
  if stop_after is not None:
    return None
  ctx, progress = run.context, run.progress
  if not progress.is_finished("eval"):
    deblur_params = weights_io.load_weights(ctx.workdir / "deblur" / "weights", expected_net="deblur")[0]
    coc_on_mesh = None if run.coc_params is None else sharding.put_replicated(run.coc_params, ctx.mesh)
    summary = evaluate.evaluate(sharding.put_replicated(deblur_params, ctx.mesh), coc_on_mesh, config.model,
                                ctx.data.test_batches(config.eval.batch_size), ctx.workdir / "eval")
    summary["thresholds"] = run.thresholds
    progress.finish("eval", summary)
    if jax.process_index() == 0:
      print(json.dumps({"eval": summary}))
  return progress.result("eval")
