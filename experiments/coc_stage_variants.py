"""The COC stage alone under several settings, each scored on the held-out scenes' true COC.

    python experiments/coc_stage_variants.py --workdir /tmp/coc_variants \\
        --variant paper: --variant interior:coc.loss_border=16 \\
        --variant whole_scenes:coc.crop_size=256,coc.batch_size=4,coc.loss_border=16
    python experiments/coc_stage_variants.py --config configs/smoke.py --workdir /tmp/v \\
        --variant a: --variant b:coc.loss_border=4        # CPU, seconds

A variant is `name:override,override,...` on top of `--config` (and the shared overrides after
the flags). Each trains only stage 1 of the pipeline (`train_and_evaluate(stop_after="coc")`, in
<workdir>/<name>, so a finished variant is not retrained), then the COC net's signed-COC MAE on
the test split is measured (all pixels and textured pixels) against the scenes' ground truth.
One JSON line per variant with the stage's wall time; <workdir>/variants.json holds them all.
"""

import argparse
import json
import pathlib
import time

import jax

from bambnet_jax.io import weights as weights_io
from bambnet_jax.io import config_files
from bambnet_jax.evaluation import evaluate
from bambnet_jax.io import files
from bambnet_jax.parallel import sharding
from bambnet_jax.training import stages
from bambnet_jax.commands import train


def parse_variant(text):
  """'name:a=1,b=2' -> ('name', ['a=1', 'b=2'])."""
  name, sep, overrides = text.partition(":")
  if not sep or not name:
    raise ValueError(f"variant {text!r} is not name:override,override,...")
  return name, [o for o in overrides.split(",") if o]


def run_variant(config, workdir):
  """Trains (or finds finished) the COC stage in `workdir`; returns its test-split COC errors."""
  start = time.perf_counter()
  train.train_and_evaluate(config, workdir, stop_after="coc")
  seconds = time.perf_counter() - start
  params, _, _ = weights_io.load_weights(pathlib.Path(workdir) / "coc" / "weights", expected_net="coc")
  mesh = sharding.make_mesh()
  errors = evaluate.evaluate_coc(sharding.put_replicated(params, mesh), stages.coc_stage_model_config(config),
                                 evaluate.test_batches(config, mesh))
  return errors | {"stage_seconds": round(seconds, 1)}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="configs/synthetic.py")
  p.add_argument("--workdir", required=True)
  p.add_argument("--variant", action="append", required=True, help="name:override,override,...")
  p.add_argument("overrides", nargs="*", help="overrides shared by every variant, e.g. data.data_dir=/tmp/tfds")
  args = p.parse_args(argv)
  workdir = pathlib.Path(args.workdir)
  results = []
  for name, overrides in map(parse_variant, args.variant):
    config = config_files.apply_overrides(config_files.load_config(args.config), args.overrides + overrides)
    record = {"variant": name, "overrides": overrides, "device": jax.devices()[0].device_kind}
    record |= run_variant(config, workdir / name)
    print(json.dumps(record), flush=True)
    results.append(record)
  if jax.process_index() == 0:
    files.atomic_write_bytes(workdir / "variants.json", json.dumps(results, indent=1).encode())
  return results


if __name__ == "__main__":
  main()
