"""The card's measured matmul rate and memory bandwidth: the denominators of PERF.md's two floors.

    python experiments/bench_floors.py
    python experiments/bench_floors.py --matmul-size 512 --copy-mib 64 --runs 3   # CPU check

An N x N matmul in bfloat16, and in float32 at the default precision (TF32 on NVIDIA GPUs, as float32
convolutions) and "highest"; y = x * 2 + 1 over a large float32 array. Medians of --runs calls.
"""

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp


def median_seconds(fn, *args, runs):
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def matmul_tflops(n, dtype, precision, runs):
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  fn = jax.jit(lambda x, y: jnp.matmul(x, y, precision=precision))
  return 2 * n**3 / median_seconds(fn, a, b, runs=runs) / 1e12


def copy_gbps(mib, runs):
  x = jnp.ones((mib * 2**20 // 4,), jnp.float32)
  fn = jax.jit(lambda v: v * 2.0 + 1.0)
  return 2 * x.nbytes / median_seconds(fn, x, runs=runs) / 1e9


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--matmul-size", type=int, default=8192)
  parser.add_argument("--copy-mib", type=int, default=4096)
  parser.add_argument("--runs", type=int, default=20)
  args = parser.parse_args()
  n, runs = args.matmul_size, args.runs
  record = {
      "device": jax.devices()[0].device_kind,
      "matmul_tflops_bf16": round(matmul_tflops(n, jnp.bfloat16, None, runs), 1),
      "matmul_tflops_fp32_default": round(matmul_tflops(n, jnp.float32, None, runs), 1),
      "matmul_tflops_fp32_highest": round(matmul_tflops(n, jnp.float32, jax.lax.Precision.HIGHEST, runs), 1),
      "bandwidth_gb_per_s": round(copy_gbps(args.copy_mib, runs), 1),
  }
  print(json.dumps(record), flush=True)


if __name__ == "__main__":
  main()
