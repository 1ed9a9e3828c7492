"""Does conv fusion (`model.conv_fusion`) change the training gradients more than bfloat16 itself does?

    python experiments/conv_fusion_numerics.py                              # GPU: the paper's net, 256x256
    python experiments/conv_fusion_numerics.py --size 32 --width 8          # CPU check (options ignored)

The deblurring net's L1 loss and its gradient for every parameter, on fixed random views, computed
three ways through the training steps' own compile path (`networks.compiler_options`): float32,
bfloat16 with plain cuDNN convolutions, and bfloat16 with cuDNN conv fusions. For each parameter
the relative L2 difference of its gradient is taken (a) between the two bfloat16 runs, the
rounding that conv fusion adds, and (b) between bfloat16 and float32, the rounding that training in
bfloat16 already accepts. One JSON line: the median and largest of each, and the parameters where
they are largest. Conv fusion is harmless when (a) stays well under (b).
"""

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from bambnet_jax.models import networks


def loss_and_grads(model_config, params, views, sharp):
  model = networks.build("deblur", model_config)

  def loss(p):
    return jnp.mean(jnp.abs(model.apply({"params": p}, views) - sharp))

  fn = jax.jit(jax.value_and_grad(loss), compiler_options=networks.compiler_options(model_config))
  value, grads = fn(params)
  return float(value), {jax.tree_util.keystr(k): np.asarray(v, np.float64)
                        for k, v in jax.tree_util.tree_leaves_with_path(jax.device_get(grads))}


def relative_differences(grads, reference):
  return {k: float(np.linalg.norm(grads[k] - reference[k]) / max(np.linalg.norm(reference[k]), 1e-30))
          for k in reference}


def summary(differences):
  values = np.array(list(differences.values()))
  worst = sorted(differences, key=differences.get, reverse=True)[:3]
  return {"median": float(np.median(values)), "max": float(values.max()),
          "worst": [[k, round(differences[k], 6)] for k in worst]}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--width", type=int, default=64)
  args = parser.parse_args(argv)
  base = networks.model_config(width=args.width)
  params = networks.init_params("deblur", base, jax.random.key(0))
  # The tail starts at zero, which would leave every body gradient at zero: perturb it.
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: x + 0.01 * jax.random.normal(jax.random.key(1), x.shape)
      if "tail" in jax.tree_util.keystr(path) else x, params)
  rng = np.random.default_rng(0)
  views = jnp.asarray(rng.random((args.batch, args.size, args.size, 6), np.float32))
  sharp = jnp.asarray(rng.random((args.batch, args.size, args.size, 3), np.float32))
  runs = {"float32": networks.model_config(width=args.width, dtype="float32", conv_fusion="off"),
          "bfloat16": networks.model_config(width=args.width, dtype="bfloat16", conv_fusion="off"),
          "bfloat16_conv_fusion": networks.model_config(width=args.width, dtype="bfloat16", conv_fusion="on")}
  losses, grads = {}, {}
  for name, config in runs.items():
    losses[name], grads[name] = loss_and_grads(config, params, views, sharp)
  record = {"device": jax.devices()[0].device_kind, "size": args.size, "batch": args.batch, "width": args.width,
            "losses": losses,
            "conv_fusion_vs_bfloat16": summary(relative_differences(grads["bfloat16_conv_fusion"], grads["bfloat16"])),
            "bfloat16_vs_float32": summary(relative_differences(grads["bfloat16"], grads["float32"]))}
  print(json.dumps(record), flush=True)
  return record


if __name__ == "__main__":
  main()
