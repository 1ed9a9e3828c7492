"""Speed of the DP reblur loss, forward + backward (gradient with respect to the COC map).

The released PyTorch code takes 187 ms for this at batch 4 x 512x512 x 3 on one H200 (SPEC
section 8: it recomputes 25 radii x 4 convolutions per channel every step); the target is 10 ms.
Three timings, each the median of --runs calls after --warmup calls, every call ended by
block_until_ready:
  total      responses + loss + gradient in one jitted function (what a train step pays),
  responses  `kernel_responses` alone (once per batch, outside the gradient),
  blend      value_and_grad of `reblur_loss_from_responses` given the responses.
Prints one JSON line. On a GPU:

    python experiments/bench_reblur_loss.py                   # batch 4 x 512x512 x 3
    python experiments/bench_reblur_loss.py --method conv     # the direct-convolution variant
    python experiments/bench_reblur_loss.py --size 64         # a quick CPU check
"""

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp

from bambnet_jax.losses import reblur

RELEASED_CODE_H200_MS = 187.0
TARGET_MS = 10.0


def median_ms(fn, args, runs, warmup):
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append((time.perf_counter() - start) * 1e3)
  return statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--size", type=int, default=512, help="height and width")
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--channels", type=int, default=3)
  parser.add_argument("--max-radius", type=int, default=24)
  parser.add_argument("--method", choices=("fft", "conv"), default="fft")
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                      help="storage type of the responses")
  parser.add_argument("--runs", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=3)
  args = parser.parse_args()

  shape = (args.batch, args.size, args.size, args.channels)
  keys = jax.random.split(jax.random.key(0), 3)
  left = jax.random.uniform(keys[0], shape)
  right = jax.random.uniform(keys[1], shape)
  coc = jax.random.uniform(keys[2], shape, minval=-args.max_radius, maxval=args.max_radius)
  dtype = jnp.dtype(args.dtype)

  def responses_of(left, right):
    return reblur.kernel_responses(left, right, max_radius=args.max_radius, method=args.method,
                                   dtype=dtype)

  blend = jax.jit(jax.value_and_grad(reblur.reblur_loss_from_responses, argnums=1))

  @jax.jit
  def total(left, right, coc):
    return jax.value_and_grad(reblur.reblur_loss_from_responses, argnums=1)(
        responses_of(left, right), coc)

  responses = jax.block_until_ready(responses_of(left, right))
  result = {
      "benchmark": "reblur_loss_forward_backward",
      "device": jax.devices()[0].device_kind,
      "backend": jax.default_backend(),
      "shape": list(shape),
      "max_radius": args.max_radius,
      "method": args.method,
      "responses_dtype": args.dtype,
      "responses_mib": round(responses.size * responses.dtype.itemsize / 2**20, 1),
      "total_ms": round(median_ms(total, (left, right, coc), args.runs, args.warmup), 3),
      "responses_ms": round(median_ms(responses_of, (left, right), args.runs, args.warmup), 3),
      "blend_ms": round(median_ms(blend, (responses, coc), args.runs, args.warmup), 3),
      "loss": float(blend(responses, coc)[0]),
      "runs": args.runs,
      "released_code_h200_ms": RELEASED_CODE_H200_MS,
      "target_ms": TARGET_MS,
  }
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    result["peak_memory_mib"] = round(stats["peak_bytes_in_use"] / 2**20, 1)
  print(json.dumps(result))


if __name__ == "__main__":
  main()
