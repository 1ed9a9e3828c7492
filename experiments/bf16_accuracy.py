"""Accuracy kept by bfloat16 inference: a trained run's test set restored in float32 and in bfloat16.

    python experiments/bf16_accuracy.py --config configs/synthetic.py --workdir workdirs/synthetic
    python experiments/bf16_accuracy.py --workdir /tmp/bf16 --metrics psnr,ssim,mae   # CPU, smoke config

The same float32 parameters with the deblurring net's compute dtype switched, scored on the test
split, and the largest pixel difference. The bar: bfloat16 PSNR within 0.05 dB of float32.
Writes <workdir>/bf16_accuracy.json.
"""

import copy
import json

import jax
import numpy as np

from bambnet_jax.data import pipeline
from bambnet_jax.evaluation import evaluate
from bambnet_jax.io import files
from bambnet_jax.parallel import sharding
import runs


def restorations(run, config, mesh):
  """Every real test image restored by a Run, as host arrays."""
  restore = evaluate.make_restore_fn(run.model_config)
  params = sharding.put_replicated(run.deblur_params, mesh)
  coc = None if run.coc_params is None else sharding.put_replicated(run.coc_params, mesh)
  outputs = []
  for batch in evaluate.test_batches(config, mesh):
    images = {k: batch[k] for k in pipeline.EVAL_KEYS}
    out = np.asarray(jax.device_get(restore(params, coc, images, None)["restored"]))
    outputs.extend(out[np.asarray(jax.device_get(batch["mask"]), bool)])
  return outputs


def main(argv=None):
  args = runs.parser(__doc__).parse_args(argv)
  config = runs.load_config(args)
  runs.train(config, args.workdir)
  run = runs.Run(args.workdir)
  suite = runs.metric_suite(args)
  result = {"device": jax.devices()[0].device_kind}
  per_dtype = {}
  for dtype in ("float32", "bfloat16"):
    run_as = copy.copy(run)
    run_as.model_config = run.model_config.copy_and_resolve_references()
    run_as.model_config.dtype = dtype
    summary = runs.evaluate_run(run_as, config, suite, None)
    result[dtype] = {k: summary[k] for k in suite.image_metrics}
    per_dtype[dtype] = restorations(run_as, config, sharding.make_mesh())
  result["psnr_bf16_minus_fp32_db"] = result["bfloat16"]["psnr"] - result["float32"]["psnr"]
  result["max_abs_pixel_difference"] = float(max(np.max(np.abs(a - b)) for a, b in
                                                 zip(per_dtype["float32"], per_dtype["bfloat16"])))
  result["num_images"] = len(per_dtype["float32"])
  files.atomic_write_bytes(f"{args.workdir}/bf16_accuracy.json", json.dumps(result, indent=1).encode())
  print(result)
  return result


if __name__ == "__main__":
  main()
