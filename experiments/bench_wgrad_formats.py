"""Speed and error of a 3x3 convolution's weight gradient (wgrad) in each tensor-core number format.

    python experiments/bench_wgrad_formats.py               # 512 and 256 px, batch 2, 64 -> 64 channels
    python experiments/bench_wgrad_formats.py --sizes 32     # a CPU check

The float32 training step's costliest kernel is cuDNN's TF32 weight gradient, which runs at a
quarter of the bfloat16 rate (experiments/PERF.md, session 7). float16 carries TF32's 11-bit
significand at the 16-bit rate, but only float16's range: `models/convolution.py` scales the
operands per channel by powers of two so that nothing overflows (`model.weight_gradient`). This
times that path against TF32 and measures both against the same gradient at "highest" precision
(float32 products): the Frobenius norm of the difference over the reference's, and the largest
difference over the reference's largest entry. `float16_float32_out` asks cuDNN for a float32
result from the float16 operands instead (XLA then converts the operands back to float32 and
runs the TF32 kernel). The "kernel" variants time the cuDNN call alone on operands already in
its format. Inputs look like the net's: x a ReLU output, dy heavy-tailed (Student t, 3 degrees of
freedom) and small (1e-5). One JSON line per variant and size: microseconds per call (median of
bursts, as bench_conv_kernels.py) and the errors. The whole step: `benchmark.py --weight-gradient`.
"""

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from bench_conv_kernels import median_us
from bambnet_jax.models import blocks
from bambnet_jax.models import convolution

WINDOW = (3, 3)


def autodiff_weight_gradient(x, dy):
  """The weight gradient as jax.vjp of the model's convolution computes it (TF32 on a GPU)."""
  w = jnp.zeros((dy.shape[-1], *WINDOW, x.shape[-1]), x.dtype)  # OHWI
  return jax.vjp(lambda w: blocks.conv(x, w, "OHWI"), w)[1](dy)[0]


def sample_inputs(batch, size, channels, seed=0):
  kx, kdy = jax.random.split(jax.random.key(seed))
  x = jax.nn.relu(jax.random.normal(kx, (batch, size, size, channels))) * 3.0
  dy = jax.random.t(kdy, 3.0, (batch, size, size, channels)) * 1e-5
  return x, dy


def variants(x, dy):
  """{name: (jitted function, its arguments, whether it returns the gradient of x and dy)}.

  The "kernel" variants' operands are scaled arbitrarily, so their values are not compared.
  """
  x16, dy16 = (x * 2.0 ** -4).astype(jnp.float16), (dy * 2.0 ** 16).astype(jnp.float16)
  kernel = lambda out_dtype: jax.jit(lambda a, b: convolution.weight_gradient(a, b, WINDOW, out_dtype=out_dtype))
  return {
      "tf32_autodiff": (jax.jit(autodiff_weight_gradient), (x, dy), True),
      "float16": (jax.jit(lambda x, dy: convolution.float16_weight_gradient(x, dy, WINDOW)), (x, dy), True),
      "float16_float32_out": (jax.jit(lambda x, dy: convolution.float16_weight_gradient(x, dy, WINDOW, jnp.float32)),
                              (x, dy), True),
      "float16_kernel": (kernel(jnp.float16), (x16, dy16), False),
      "bfloat16_kernel": (kernel(jnp.bfloat16), (x.astype(jnp.bfloat16), dy.astype(jnp.bfloat16)), False),
      "highest": (jax.jit(lambda x, dy: convolution.weight_gradient(x, dy, WINDOW, precision="highest")), (x, dy),
                  True),
  }


def errors(gradient, reference):
  gradient, reference = np.asarray(gradient, np.float64), np.asarray(reference, np.float64)
  return {"rel_fro_err": float(np.linalg.norm(gradient - reference) / np.linalg.norm(reference)),
          "max_err_over_max": float(np.abs(gradient - reference).max() / np.abs(reference).max())}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sizes", default="512,256")
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--channels", type=int, default=64)
  parser.add_argument("--burst", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=7)
  args = parser.parse_args(argv)
  device = jax.devices()[0].device_kind
  for size in (int(s) for s in args.sizes.split(",")):
    x, dy = sample_inputs(args.batch, size, args.channels)
    cases = variants(x, dy)
    reference = cases["highest"][0](x, dy)
    for name, (fn, fn_args, comparable) in cases.items():
      record = {"variant": name, "size": size, "batch": args.batch, "device": device,
                "us": round(median_us(lambda: fn(*fn_args), jax.block_until_ready, args.burst, args.repeats), 1)}
      if comparable:
        record.update(errors(fn(*fn_args), reference))
      print(json.dumps(record), flush=True)


if __name__ == "__main__":
  main()
