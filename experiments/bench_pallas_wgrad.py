"""A trial: the 3x3 convolutions' weight gradient from a Pallas (Triton) kernel, not cuDNN (float32).

    python experiments/bench_pallas_wgrad.py                # the kernel alone, then the training step
    python experiments/bench_pallas_wgrad.py --no-step

Why: cuDNN's TF32 weight-gradient kernel runs at a quarter of the bfloat16 rate on an H100, not
half as the forward and the activation gradient do (experiments/PERF.md, session 7), and it is the
largest single cost of the float32 training step. `conv3x3_weight_gradient` reduces over pixels
itself: each program takes a run of `chunk` consecutive pixels (flattened N, H, W) and one kernel
row `kh`, loads the output gradient once per `block` of pixels and the input three times shifted
(one per kernel column, zero outside the image), and accumulates three (C_in, C_out) products;
XLA adds the per-chunk partial sums. `precision`: "tf32" (what XLA's float32 convolutions use) or
"bf16x3" (each operand split into two bfloat16 parts, three products: closer to float32). Off GPU
the kernel is interpreted, in plain float32.

Outcome on an H100 (PERF.md, session 7): 0.6x cuDNN's speed at best, so the library keeps
cuDNN's weight gradient; this script is kept so the trial can be rerun or improved.

Part 1 times the kernel against XLA's (cuDNN's) weight gradient of a 64 -> 64 3x3 conv at batch
2, for each configuration in --configs, with its largest difference from XLA's float32 result
relative to XLA's largest value. Part 2 times the float32 deblurring step at batch 2
(`benchmark.py`'s case, with XLA's TF32 weight gradients) as it is, then with every 3x3
convolution of at least --min-pixels pixels taking its weight gradient from the fastest
configuration (patched into `blocks.conv` for this measurement only). One JSON line per
measurement.
"""

import argparse
import functools
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

import bench_conv_kernels
import benchmark
from bambnet_jax.models import blocks

# The library's convolution, bound before `patched_conv` replaces `blocks.conv`.
_xla_conv = functools.partial(blocks.conv, kernel_layout="OHWI")

PRECISIONS = {"tf32": jax.lax.DotAlgorithmPreset.TF32_TF32_F32,
              "bf16x3": jax.lax.DotAlgorithmPreset.BF16_BF16_F32_X3}


def _wgrad_kernel(x_ref, dy_ref, out_ref, *, height, width, chunk, block, precision):
  chunk_index, kh = pl.program_id(0), pl.program_id(1)
  num_pixels = x_ref.shape[0]
  start = chunk_index * chunk
  channels_in, channels_out = x_ref.shape[1], dy_ref.shape[1]
  channel = jnp.arange(channels_in, dtype=jnp.int32)

  def body(step, accumulators):
    first = start + step * block
    pixels = first + jnp.arange(block, dtype=jnp.int32)
    row = jax.lax.rem(jax.lax.div(pixels, width), height)  # pixels are >= 0: no floor fix-ups
    column = jax.lax.rem(pixels, width)
    source_row = row + kh - 1
    dy = plgpu.load(dy_ref.at[pl.ds(first, block), :])
    updated = []
    for kw in range(3):
      source_column = column + (kw - 1)
      inside = (source_row >= 0) & (source_row < height) & (source_column >= 0) & (source_column < width)
      source = jnp.clip(pixels + (kh - 1) * width + (kw - 1), 0, num_pixels - 1)
      # Row indices, not a slice: the shifted rows may start before the first pixel, and
      # masked-off rows must not move the others (as a clamped slice start would).
      mask = jnp.broadcast_to(inside[:, None], (block, channels_in))
      x = plgpu.load(x_ref.at[source[:, None], channel[None, :]], mask=mask, other=0.0)
      updated.append(accumulators[kw] + jax.lax.dot_general(
          x, dy, (((0,), (0,)), ((), ())), precision=precision, preferred_element_type=jnp.float32))
    return tuple(updated)

  zeros = jnp.zeros((channels_in, channels_out), jnp.float32)
  accumulators = jax.lax.fori_loop(0, chunk // block, body, (zeros, zeros, zeros))
  for kw in range(3):
    out_ref[0, 0, kw] = accumulators[kw]


@functools.partial(jax.jit, static_argnames=("chunk", "block", "precision", "num_warps", "num_stages", "interpret"))
def conv3x3_weight_gradient(x, dy, *, chunk=4096, block=64, precision="tf32", num_warps=4, num_stages=3,
                            interpret=None):
  """dL/dW in OHWI of a stride-1 zero-padded 3x3 conv y = conv(x, W): x (N, H, W, C_in) and
  dy = dL/dy (N, H, W, C_out), float32. N*H*W must divide by `chunk`, `chunk` by `block`."""
  n, height, width, channels_in = x.shape
  channels_out = dy.shape[-1]
  num_pixels = n * height * width
  if num_pixels % chunk or chunk % block:
    raise ValueError(f"{num_pixels} pixels in chunks of {chunk} in blocks of {block}: not divisible")
  if interpret is None:
    interpret = jax.default_backend() != "gpu"
  num_chunks = num_pixels // chunk
  # Interpreted (off GPU) the products are plain float32: CPUs have no TF32.
  kernel = functools.partial(_wgrad_kernel, height=height, width=width, chunk=chunk, block=block,
                             precision=None if interpret else PRECISIONS[precision])
  partials = pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct((num_chunks, 3, 3, channels_in, channels_out), jnp.float32),
      grid=(num_chunks, 3),
      in_specs=[pl.BlockSpec((num_pixels, channels_in), lambda c, kh: (0, 0)),
                pl.BlockSpec((num_pixels, channels_out), lambda c, kh: (0, 0))],
      out_specs=pl.BlockSpec((1, 1, 3, channels_in, channels_out), lambda c, kh: (c, kh, 0, 0, 0)),
      compiler_params=plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages),
      interpret=interpret,
  )(x.reshape(num_pixels, channels_in), dy.reshape(num_pixels, channels_out))
  return partials.sum(0).transpose(3, 0, 1, 2)  # (kh, kw, in, out) -> OHWI


def conv3x3_pallas_wgrad(x, kernel, **options):
  """`blocks.conv(x, kernel, "OHWI")` for a 3x3 OHWI kernel, whose weight gradient comes from
  `conv3x3_weight_gradient(**options)`; the input gradient stays XLA's (cuDNN's dgrad)."""

  @jax.custom_vjp
  def conv(x, kernel):
    return _xla_conv(x, kernel)

  def forward(x, kernel):
    return _xla_conv(x, kernel), (x, kernel)

  def backward(residuals, dy):
    x, kernel = residuals
    dx = jax.vjp(lambda x: _xla_conv(x, kernel), x)[1](dy)[0]
    return dx, conv3x3_weight_gradient(x, dy, **options).astype(kernel.dtype)

  conv.defvjp(forward, backward)
  return conv(x, kernel)


DEFAULT_CONFIGS = ("tf32:4096:64:4:3,tf32:4096:64:8:3,tf32:4096:32:4:3,tf32:2048:64:8:2,"
                   "bf16x3:4096:64:8:3,bf16x3:4096:32:4:3")


def parse_config(text):
  precision, chunk, block, warps, stages = text.split(":")
  return dict(precision=precision, chunk=int(chunk), block=int(block), num_warps=int(warps), num_stages=int(stages))


def kernel_trials(sizes, configs, burst, repeats):
  best = {}
  for size in sizes:
    calls, wait, device, inputs = bench_conv_kernels.jax_passes(2, size, 64, "float32")
    reference = np.asarray(calls["wgrad"]())
    scale = np.abs(reference).max()
    xla_us = bench_conv_kernels.median_us(calls["wgrad"], wait, burst, repeats)
    print(json.dumps({"part": "kernel", "size": size, "config": "xla", "us": round(xla_us, 1), "device": device}),
          flush=True)
    for text in configs:
      options = parse_config(text)
      try:
        fn = lambda: conv3x3_weight_gradient(inputs["x"], inputs["dy"], **options)
        error = float(np.abs(np.asarray(fn()) - reference).max() / scale)
        us = bench_conv_kernels.median_us(fn, wait, burst, repeats)
      except Exception as e:  # a configuration Triton cannot compile: say so, try the next
        print(json.dumps({"part": "kernel", "size": size, "config": text, "error": repr(e)[:300]}), flush=True)
        continue
      print(json.dumps({"part": "kernel", "size": size, "config": text, "us": round(us, 1),
                        "vs_xla": round(xla_us / us, 2), "max_rel_diff": error}), flush=True)
      if size not in best or us < best[size][1]:
        best[size] = (options, us)
  return best


def patched_conv(options, min_pixels):
  """`blocks.conv`, but 3x3 float32 convs of at least `min_pixels` pixels take their weight
  gradient from the kernel (where its shapes allow)."""
  original = blocks.conv

  def conv(x, kernel, kernel_layout, *native_options):
    n, h, w, _ = x.shape
    if (kernel_layout == "OHWI" and kernel.shape[1:3] == (3, 3) and x.dtype == jnp.float32
        and h * w >= min_pixels and (n * h * w) % options["chunk"] == 0 and kernel.shape[0] % 16 == 0
        and x.shape[-1] % 16 == 0):
      return conv3x3_pallas_wgrad(x, kernel, **options)
    return original(x, kernel, kernel_layout, *native_options)

  return conv


def step_trials(options, min_pixels, runs, size=512, width=64):
  mesh = benchmark.sharding.make_mesh(jax.devices()[:1])
  for label in ("xla", "pallas"):
    original = blocks.conv
    if label == "pallas":
      blocks.conv = patched_conv(options, min_pixels)
    try:
      fn, args, _ = benchmark.train_case("deblur", 2, size, "float32", width, mesh, conv_gradients="native")
      start = time.perf_counter()
      out = fn(*args)
      jax.block_until_ready(out)
      compile_s = time.perf_counter() - start
      args = benchmark._carry(args, out)
      synced, pipelined, dispatch = benchmark.time_calls(fn, args, runs, warmup=3)
      print(json.dumps({"part": "step", "wgrad": label, "options": options if label == "pallas" else None,
                        "min_pixels": min_pixels, "median_ms": round(synced, 2), "pipelined_ms": round(pipelined, 2),
                        "dispatch_ms": round(dispatch, 2), "compile_s": round(compile_s, 1),
                        "loss": float(out[1]["loss"]), "grad_norm": float(out[1]["grad_norm"])}), flush=True)
    finally:
      blocks.conv = original


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sizes", default="512,256")
  parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="precision:chunk:block:warps:stages, comma-separated")
  parser.add_argument("--burst", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--no-step", action="store_true")
  parser.add_argument("--min-pixels", type=int, default=256 * 256)
  parser.add_argument("--runs", type=int, default=20)
  parser.add_argument("--step-size", type=int, default=512, help="the step's image size (small for a CPU check)")
  parser.add_argument("--width", type=int, default=64)
  args = parser.parse_args(argv)
  best = kernel_trials([int(s) for s in args.sizes.split(",")], args.configs.split(","), args.burst, args.repeats)
  if not args.no_step and best:
    options, _ = best[max(best)]
    step_trials(options, args.min_pixels, args.runs, args.step_size, args.width)


if __name__ == "__main__":
  main()
