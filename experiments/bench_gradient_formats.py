"""Speed and error of a 3x3 convolution's gradients in each tensor-core number format.

    python experiments/bench_gradient_formats.py              # 512 and 256 px, batch 2, 64 -> 64 channels
    python experiments/bench_gradient_formats.py --sizes 32   # a CPU check

In the float32 training step cuDNN's TF32 kernels run at half the bfloat16 rate, its weight
gradient (wgrad) at a quarter (experiments/PERF.md, sessions 7 to 9). float16 carries TF32's
11-bit significand at the 16-bit rate, but only float16's range: `models/convolution.py` scales
the operands per channel by powers of two so that nothing overflows (`model.conv_gradients`).
This times that path against TF32, for the weight gradient and for the input gradient (dgrad),
and measures both against the same gradient at "highest" precision (float32 products): the
Frobenius norm of the difference over the reference's, and the largest difference over the
reference's largest entry. `wgrad_float16_float32_out` asks cuDNN for a float32 result from the
float16 operands instead (XLA then converts the operands back to float32 and runs the TF32
kernel). The "kernel" variants time the cuDNN call alone on operands already in its format; the
float16 ones include the norms and conversions (in a training step dy's are shared by both
gradients). Inputs look like the net's: x a ReLU output, dy heavy-tailed (Student t, 3 degrees
of freedom) and small (1e-5), the kernel He-initialised. One JSON line per variant and size:
microseconds per call (median of bursts, as bench_conv_kernels.py) and the errors. The whole
step: `benchmark.py --conv-gradients`; a whole net's gradients: `gradient_precision.py`.
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


def autodiff_gradients(x, kernel, dy):
  """(dx, dW) as jax.vjp of the model's convolution computes them (TF32 on a GPU)."""
  return jax.vjp(lambda x, w: blocks.conv(x, w, "OHWI"), x, kernel)[1](dy)


def sample_inputs(batch, size, channels, seed=0):
  """(x, an OHWI kernel, dy)."""
  kx, kw, kdy = jax.random.split(jax.random.key(seed), 3)
  x = jax.nn.relu(jax.random.normal(kx, (batch, size, size, channels))) * 3.0
  kernel = jax.random.normal(kw, (channels, *WINDOW, channels)) * (2.0 / (9 * channels)) ** 0.5
  dy = jax.random.t(kdy, 3.0, (batch, size, size, channels)) * 1e-5
  return x, kernel, dy


def variants(x, kernel, dy):
  """{name: (jitted function, its arguments, the "highest" variant it is compared with or None)}.

  The "kernel" variants' operands are scaled arbitrarily, so their values are not compared.
  """
  x16, dy16 = (x * 2.0 ** -4).astype(jnp.float16), (dy * 2.0 ** 16).astype(jnp.float16)
  kernel16 = kernel.astype(jnp.float16)
  wgrad = lambda out_dtype: jax.jit(lambda a, b: convolution.weight_gradient(a, b, WINDOW, out_dtype=out_dtype))
  wgrad_highest = lambda x, dy: convolution.weight_gradient(x, dy, WINDOW, precision="highest")
  return {
      "wgrad_tf32_autodiff": (jax.jit(lambda x, dy: autodiff_gradients(x, kernel, dy)[1]), (x, dy), "wgrad_highest"),
      "wgrad_float16": (jax.jit(lambda x, dy: convolution.float16_weight_gradient(x, dy, WINDOW)), (x, dy),
                        "wgrad_highest"),
      "wgrad_float16_float32_out": (
          jax.jit(lambda x, dy: convolution.float16_weight_gradient(x, dy, WINDOW, jnp.float32)), (x, dy),
          "wgrad_highest"),
      "wgrad_float16_kernel": (wgrad(jnp.float16), (x16, dy16), None),
      "wgrad_bfloat16_kernel": (wgrad(jnp.bfloat16), (x.astype(jnp.bfloat16), dy.astype(jnp.bfloat16)), None),
      "wgrad_highest": (jax.jit(wgrad_highest), (x, dy), "wgrad_highest"),
      "dgrad_tf32_autodiff": (jax.jit(lambda w, dy: autodiff_gradients(x, w, dy)[0]), (kernel, dy), "dgrad_highest"),
      "dgrad_float16": (jax.jit(convolution.float16_input_gradient), (dy, kernel), "dgrad_highest"),
      "dgrad_float16_kernel": (jax.jit(convolution.input_gradient), (dy16, kernel16), None),
      "dgrad_highest": (jax.jit(lambda dy, w: convolution.input_gradient(dy, w, precision="highest")), (dy, kernel),
                        "dgrad_highest"),
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
    cases = variants(*sample_inputs(args.batch, size, args.channels))
    references = {name: fn(*fn_args) for name, (fn, fn_args, reference) in cases.items() if reference == name}
    for name, (fn, fn_args, reference) in cases.items():
      record = {"variant": name, "size": size, "batch": args.batch, "device": device,
                "us": round(median_us(lambda: fn(*fn_args), jax.block_until_ready, args.burst, args.repeats), 1)}
      if reference:
        record.update(errors(fn(*fn_args), references[reference]))
      print(json.dumps(record), flush=True)


if __name__ == "__main__":
  main()
