"""Time of the test-set metrics against the time of the inference that produced the images.

    python experiments/bench_metrics.py                          # 76 x 1120x1680, on the GPU
    python experiments/bench_metrics.py --lpips alex,squeeze,vgg # add the VGG backbone
    python experiments/bench_metrics.py --height 64 --width 96 --num-images 3   # a CPU check

The bar: the metrics over DPDD's 76 test pairs take less time than restoring them. Times both
halves of `evaluate.evaluate` image by image, each metric alone, and the host's Fréchet distance.
Random weights; images made on the device. One JSON line.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from bambnet_jax.evaluation import fid
from bambnet_jax.evaluation import inception
from bambnet_jax.evaluation import lpips
from bambnet_jax.evaluation import suite as suite_lib
from bambnet_jax.models import networks

PRECISIONS = {"highest": jax.lax.Precision.HIGHEST, "default": jax.lax.Precision.DEFAULT}


def random_suite(names, lpips_nets, precision, image):
  """A MetricSuite of `names` with randomly initialised LPIPS and InceptionV3 weights."""
  # Initialised under jit: op-by-op initialisation of these nets takes seconds each.
  lpips_params = {net: jax.jit(lpips.LPIPS(net).init)(jax.random.key(i), image, image)["params"]
                  for i, net in enumerate(lpips_nets)}
  variables = None
  if "fid" in names:
    variables = jax.jit(inception.FIDInceptionV3().init)(jax.random.key(9), jnp.zeros((1, 299, 299, 3)))
  return suite_lib.MetricSuite(names, lpips_params, variables, precision=precision)


def time_per_image(fn, inputs, warmup=1):
  """Seconds of fn over every input, each call waited for; the first `warmup` calls not counted."""
  for x in inputs[:warmup]:
    jax.block_until_ready(fn(x))
  start = time.perf_counter()
  outputs = [jax.block_until_ready(fn(x)) for x in inputs]
  return time.perf_counter() - start, outputs


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--height", type=int, default=1120)
  p.add_argument("--width", type=int, default=1680)
  p.add_argument("--num-images", type=int, default=76, help="DPDD's test split has 76")
  p.add_argument("--lpips", default="alex,squeeze", help="LPIPS backbones in the suite")
  p.add_argument("--precision", choices=tuple(PRECISIONS), default="highest",
                 help="metric networks' float32 precision (highest: no TF32, the evaluation's default)")
  p.add_argument("--dtype", default="float32", help="the deblurring net's compute dtype")
  args = p.parse_args(argv)

  device = jax.devices()[0]
  shape = (1, args.height, args.width, 3)
  keys = jax.random.split(jax.random.key(0), args.num_images)
  # Distinct images, all resident on the device before the clock starts.
  batches = [{name: jax.random.uniform(jax.random.fold_in(k, i), shape)
              for i, name in enumerate(("left", "right", "combined", "sharp"))} for k in keys]
  jax.block_until_ready(batches)

  model_config = networks.model_config(dtype=args.dtype)
  deblur_params = jax.device_put(networks.init_params("deblur", model_config, jax.random.key(1)))
  deblur = networks.build("deblur", model_config)
  restore = jax.jit(lambda params, left, right: deblur.apply({"params": params}, jnp.concatenate([left, right], -1)))
  inference_s, outputs = time_per_image(lambda b: restore(deblur_params, b["left"], b["right"]), batches)

  nets = [n.strip() for n in args.lpips.split(",") if n.strip()]
  names = suite_lib.PIXEL_METRICS + tuple(f"lpips_{n}" for n in nets) + ("fid",)
  precision = PRECISIONS[args.precision]
  pairs = list(zip(outputs, [b["sharp"] for b in batches]))
  suite = random_suite(names, nets, precision, outputs[0])
  metrics_s, scores = time_per_image(lambda pair: suite.per_image(*pair), pairs)

  alone = {}
  for name in names:
    single = random_suite((name,), [n for n in nets if name == f"lpips_{n}"], precision, outputs[0])
    alone[name] = time_per_image(lambda pair: single.per_image(*pair), pairs)[0]

  restored_features = np.stack([np.asarray(s["fid_restored"][0]) for s in scores])
  target_features = np.stack([np.asarray(s["fid_target"][0]) for s in scores])
  start = time.perf_counter()
  fid.fid(restored_features, target_features)
  frechet_s = time.perf_counter() - start

  result = {
      "device": f"{device.platform}: {device.device_kind}", "images": args.num_images,
      "size": [args.height, args.width], "deblur_dtype": args.dtype, "metric_precision": args.precision,
      "inference_s": round(inference_s, 3), "metrics_s": round(metrics_s, 3),
      "metrics_over_inference": round(metrics_s / inference_s, 3),
      "per_image_ms": {"inference": round(1e3 * inference_s / args.num_images, 2),
                       "metrics": round(1e3 * metrics_s / args.num_images, 2),
                       **{f"{k} alone": round(1e3 * v / args.num_images, 2) for k, v in alone.items()}},
      "frechet_distance_host_s": round(frechet_s, 3),
      "metrics_and_fid_over_inference": round((metrics_s + frechet_s) / inference_s, 3),
  }
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  main()
