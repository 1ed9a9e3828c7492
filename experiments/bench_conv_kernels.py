"""Speed of one 3x3 convolution's three passes at the resolutions BaMBNet's branches run at.

    python experiments/bench_conv_kernels.py                      # JAX, float32 and bfloat16
    python experiments/bench_conv_kernels.py --torch              # the same shapes in PyTorch
    XLA_FLAGS=--xla_gpu_force_conv_nchw=true python experiments/bench_conv_kernels.py

A training step's convolutions are 64 -> 64 3x3 at 512, 256, 128, 64 and 32 pixels square
(SPEC section 1); each runs forward, backward through the activations (dgrad) and backward
through the weights (wgrad). This times each pass alone, so a slow kernel shows up by itself:
`--torch` runs the same passes through PyTorch's cuDNN (benchmark mode, TF32 allowed, channels
last), a reference for what the library can do on the card. One JSON line per (pass, size,
dtype): microseconds per call (median of --repeats bursts of --burst calls issued back to back)
and TFLOP/s (2 FLOP per multiply-add).
"""

import argparse
import json
import statistics
import time


def _flop(batch, size, channels):
  return 2.0 * batch * size * size * 9 * channels * channels


def median_us(call, wait, burst, repeats, warmup=3):
  out = None
  for _ in range(warmup):
    out = call()
  wait(out)
  samples = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(burst):
      out = call()
    wait(out)
    samples.append((time.perf_counter() - start) * 1e6 / burst)
  return statistics.median(samples)


def jax_passes(batch, size, channels, dtype_name):
  """({pass: zero-argument call}, wait, device name, inputs) for one conv in JAX, with the kernel
  OHWI as the model stores it. inputs: x (NHWC), w (OHWI) and dy, the output's cotangent."""
  import jax
  import jax.numpy as jnp
  from bambnet_jax.models import blocks
  dtype = jnp.dtype(dtype_name)
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (batch, size, size, channels), dtype)
  w = jax.random.normal(keys[1], (channels, 3, 3, channels), dtype) * 0.05
  dy = jax.random.normal(keys[2], (batch, size, size, channels), dtype)
  conv = lambda x, w: blocks.conv(x, w, "OHWI")
  forward = jax.jit(conv)
  dgrad = jax.jit(lambda w, dy: jax.vjp(lambda x: conv(x, w), x)[1](dy)[0])
  wgrad = jax.jit(lambda x, dy: jax.vjp(lambda w: conv(x, w), w)[1](dy)[0])
  bias_grad = jax.jit(lambda dy: dy.astype(jnp.float32).sum((0, 1, 2)))
  calls = {"forward": lambda: forward(x, w), "dgrad": lambda: dgrad(w, dy), "wgrad": lambda: wgrad(x, dy),
           "bias_grad": lambda: bias_grad(dy)}
  return calls, jax.block_until_ready, jax.devices()[0].device_kind, {"x": x, "w": w, "dy": dy}


def torch_passes(batch, size, channels, dtype_name):
  """The same passes through PyTorch (cuDNN benchmark mode, TF32 allowed, channels last)."""
  import torch
  torch.backends.cudnn.benchmark = True
  torch.backends.cudnn.allow_tf32 = True
  dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype_name]
  generator = torch.Generator(device="cuda").manual_seed(0)
  make = lambda *shape: torch.randn(*shape, device="cuda", dtype=dtype, generator=generator)
  x = make(batch, channels, size, size).to(memory_format=torch.channels_last)
  w = (make(channels, channels, 3, 3) * 0.05).to(memory_format=torch.channels_last)
  dy = make(batch, channels, size, size).to(memory_format=torch.channels_last)
  backward = lambda mask: torch.ops.aten.convolution_backward(
      dy, x, w, None, (1, 1), (1, 1), (1, 1), False, (0, 0), 1, mask)
  calls = {"forward": lambda: torch.nn.functional.conv2d(x, w, padding=1),
           "dgrad": lambda: backward([True, False, False]), "wgrad": lambda: backward([False, True, False]),
           "bias_grad": lambda: dy.float().sum((0, 2, 3))}
  return calls, lambda _: torch.cuda.synchronize(), torch.cuda.get_device_name(), {"x": x, "w": w, "dy": dy}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--torch", action="store_true", help="time PyTorch's cuDNN instead of JAX")
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--channels", type=int, default=64)
  parser.add_argument("--sizes", default="512,256,128,64,32")
  parser.add_argument("--dtypes", default="float32,bfloat16")
  parser.add_argument("--burst", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--label", default="", help="copied into every line (e.g. the XLA flags tried)")
  args = parser.parse_args(argv)
  passes = torch_passes if args.torch else jax_passes
  for dtype_name in args.dtypes.split(","):
    for size in (int(s) for s in args.sizes.split(",")):
      calls, wait, device, _ = passes(args.batch, size, args.channels, dtype_name)
      for name, call in calls.items():
        us = median_us(call, wait, args.burst, args.repeats)
        flop = _flop(args.batch, size, args.channels) if name != "bias_grad" else 0.0
        print(json.dumps({"framework": "torch" if args.torch else "jax", "label": args.label, "pass": name,
                          "size": size, "dtype": dtype_name, "us": round(us, 1),
                          "tflop_s": round(flop / us / 1e6, 1), "device": device}), flush=True)


if __name__ == "__main__":
  main()
