"""Speed of BaMBNet's training steps and inference on the device JAX finds; one JSON line per case.

    python experiments/benchmark.py                       # every case at the paper's sizes
    python experiments/benchmark.py --cases deblur_b2_fp32,infer_bf16 --runs 50
    python experiments/benchmark.py --size 64 --infer-size 64x96 --width 8 --runs 3   # CPU check

Timing: each case is jitted, called --warmup times (compilation excluded), then timed --runs
times, each call ended by block_until_ready; the median is reported with the card's name, the
peak device memory, and the achieved TFLOP/s from SPEC section 1's FLOP counts (501 GFLOP per
512x512 forward, 3,597 GFLOP at 1120x1680; a training step counts as 3 forwards: forward,
backward through activations and through weights). The SPEC's released-code figures on an H200
are printed beside each case for reference.
"""

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bambnet_jax.losses import reblur
from bambnet_jax.models import networks
from bambnet_jax.training import parallel
from bambnet_jax.training import steps

GFLOP_PER_PIXEL_FORWARD = 501.0 / (512 * 512)  # SPEC section 1, default width
RELEASED_H200_MS = {"deblur_b2_fp32": 99, "deblur_b2_bf16": 80, "deblur_b8_bf16": 163, "coc_b4_fp32": 395,
                    "reblur_loss_b4": 187, "infer_fp32": 157, "infer_bf16": 137}


def median_ms(fn, args, runs, warmup):
  for _ in range(warmup):
    out = fn(*args)
    args = _carry(args, out)
  jax.block_until_ready(out)
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    out = fn(*args)
    jax.block_until_ready(out)
    times.append((time.perf_counter() - start) * 1e3)
    args = _carry(args, out)
  return statistics.median(times)


def _carry(args, out):
  """A train step donates its state: feed the returned state into the next call."""
  if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], steps.TrainState):
    return (out[0],) + tuple(args[1:])
  return args


def _batch(rng, n, size, keys=("left", "right", "sharp")):
  return {k: jnp.asarray(rng.random((n, size, size, 3), np.float32)) for k in keys}


def train_case(kind, batch_size, size, dtype, width, mesh):
  config = networks.model_config(width=width, dtype=dtype)
  optimizer = optax.adam(1e-4)
  rng = np.random.default_rng(0)
  if kind == "coc":
    model = networks.build("coc", config)
    state = steps.create_state(networks.init_params("coc", config, jax.random.key(0)), optimizer)
    fn = steps.jit_train_step(steps.coc_train_step, mesh, model=model, optimizer=optimizer, tv_start=0,
                              tv_weight=1e-5)
  else:
    model = networks.build("deblur", config)
    state = steps.create_state(networks.init_params("deblur", config, jax.random.key(0)), optimizer)
    fn = steps.jit_train_step(steps.deblur_train_step, mesh, model=model, coc_model=None, optimizer=optimizer,
                              mask_mode=steps.NO_MASKS, anneal_steps=1)
  state = parallel.put_replicated(state, mesh)
  batch_size *= mesh.devices.size  # the case's batch is per device: data parallelism scales it
  batch = parallel.put_batch(jax.device_get(_batch(rng, batch_size, size)), mesh)
  flops = 3 * GFLOP_PER_PIXEL_FORWARD * batch_size * size * size * (width / 64) ** 2
  return fn, (state, batch), flops


def reblur_case(batch_size, size):
  rng = np.random.default_rng(0)
  b = _batch(rng, batch_size, size, ("left", "right"))
  coc = jnp.asarray(rng.uniform(-6, 6, (batch_size, size, size, 3)).astype(np.float32))

  @jax.jit
  def loss_and_grad(left, right, coc):
    responses = reblur.kernel_responses(left, right)
    return jax.value_and_grad(lambda c: reblur.reblur_loss_from_responses(responses, c))(coc)

  return loss_and_grad, (b["left"], b["right"], coc), None


def infer_case(height, width_px, dtype, width):
  config = networks.model_config(width=width, dtype=dtype)
  model = networks.build("deblur", config)
  params = networks.init_params("deblur", config, jax.random.key(0))
  x = jnp.asarray(np.random.default_rng(0).random((1, height, width_px, 6), np.float32))
  fn = jax.jit(lambda p, v: model.apply({"params": p}, v))
  flops = GFLOP_PER_PIXEL_FORWARD * height * width_px * (width / 64) ** 2
  return fn, (params, x), flops


def make_cases(args, mesh):
  s, (ih, iw) = args.size, map(int, args.infer_size.split("x"))
  return {
      "deblur_b2_fp32": lambda: train_case("deblur", 2, s, "float32", args.width, mesh),
      "deblur_b2_bf16": lambda: train_case("deblur", 2, s, "bfloat16", args.width, mesh),
      "deblur_b8_fp32": lambda: train_case("deblur", 8, s, "float32", args.width, mesh),
      "deblur_b8_bf16": lambda: train_case("deblur", 8, s, "bfloat16", args.width, mesh),
      "coc_b4_fp32": lambda: train_case("coc", 4, s, "float32", args.width, mesh),
      "coc_b4_bf16": lambda: train_case("coc", 4, s, "bfloat16", args.width, mesh),
      "reblur_loss_b4": lambda: reblur_case(4, s),
      "infer_fp32": lambda: infer_case(ih, iw, "float32", args.width),
      "infer_bf16": lambda: infer_case(ih, iw, "bfloat16", args.width),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--cases", default="all", help="comma-separated case names, or all")
  parser.add_argument("--size", type=int, default=512, help="training crop size")
  parser.add_argument("--infer-size", default="1120x1680", help="HxW of the inference case")
  parser.add_argument("--width", type=int, default=64, help="network width (64 = the paper's)")
  parser.add_argument("--runs", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--devices", type=int, default=1,
                      help="devices in the data-parallel mesh; train cases' batches are per device")
  args = parser.parse_args()
  mesh = parallel.make_mesh(jax.devices()[:args.devices])
  cases = make_cases(args, mesh)
  names = list(cases) if args.cases == "all" else args.cases.split(",")
  device = jax.devices()[0]
  for name in names:
    fn, fn_args, gflop = cases[name]()
    ms = median_ms(fn, fn_args, args.runs, args.warmup)
    stats = device.memory_stats() or {}
    record = {"case": name, "device": device.device_kind, "devices": args.devices, "median_ms": round(ms, 3),
              "peak_memory_gib_so_far": round(stats.get("peak_bytes_in_use", 0) / 2**30, 3),
              "released_h200_ms": RELEASED_H200_MS.get(name)}
    if gflop:
      record["tflops"] = round(gflop / ms, 2)  # GFLOP / ms = TFLOP / s
    if isinstance(fn_args[0], steps.TrainState):
      record["images_per_s"] = round(fn_args[1]["left"].shape[0] / ms * 1e3, 2)  # the global batch
    print(json.dumps(record), flush=True)
    del fn, fn_args


if __name__ == "__main__":
  main()
