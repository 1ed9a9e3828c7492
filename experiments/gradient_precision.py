"""How close a whole net's float32 parameter gradients come to float32 products, per conv-gradient mode.

    python experiments/gradient_precision.py                          # both nets, 512x512, batch 2, width 64
    python experiments/gradient_precision.py --size 128 --width 8     # a CPU check

Each net gets random DP views, an L1 loss against a random target and a random last conv (zero at
initialisation, which would stop the gradient). Its parameter gradients with `model.conv_gradients`
"native" (TF32 on a GPU) and "float16" (docs/conv_gradients.md) are compared with float32 products.
One JSON line per net and mode. On a CPU native equals the reference.
"""

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from bambnet_jax.models import networks


def random_last_conv(params, key):
  """`params` with the tail's kernel (zero at initialisation) He-initialised instead."""
  kernel = params["tail"]["kernel"]
  fan_in = kernel.size // kernel.shape[0]  # OHWI
  params = dict(params, tail=dict(params["tail"]))
  params["tail"]["kernel"] = jax.random.normal(key, kernel.shape) * (2.0 / fan_in) ** 0.5
  return params


def net_gradients(net, config, params, views, target, precision=None):
  model = networks.build(net, config)
  loss = lambda p: jnp.mean(jnp.abs(model.apply({"params": p}, views) - target))
  with jax.default_matmul_precision(precision):
    return jax.device_get(jax.jit(jax.grad(loss))(params))


def errors(gradients, reference):
  """Relative Frobenius error of all arrays together; median and largest of each array's."""
  named = zip(jax.tree_util.tree_leaves_with_path(reference), jax.tree_util.tree_leaves(gradients))
  pairs = {jax.tree_util.keystr(path): (np.asarray(g, np.float64), np.asarray(r, np.float64)) for (path, r), g in named}
  total = np.sqrt(sum(np.sum((g - r) ** 2) for g, r in pairs.values()) / sum(np.sum(r ** 2) for _, r in pairs.values()))
  each = {name: np.linalg.norm(g - r) / np.linalg.norm(r) for name, (g, r) in pairs.items() if np.linalg.norm(r) > 0}
  worst = max(each, key=each.get)
  return {"rel_fro_err": float(total), "median_array_rel_err": float(np.median(list(each.values()))),
          "max_array_rel_err": float(each[worst]), "worst_array": worst, "arrays": len(each)}


def measure(net, size, batch, width, seed=0):
  """{mode: errors} for one net."""
  configs = {mode: networks.model_config(width=width, conv_gradients=mode) for mode in ("native", "float16")}
  k_params, k_tail, k_views, k_target = jax.random.split(jax.random.key(seed), 4)
  params = random_last_conv(networks.init_params(net, configs["native"], k_params), k_tail)
  views = jax.random.uniform(k_views, (batch, size, size, 6))
  out_shape = jax.eval_shape(lambda: networks.build(net, configs["native"]).apply({"params": params}, views))
  target = jax.random.uniform(k_target, out_shape.shape)
  reference = net_gradients(net, configs["native"], params, views, target, "highest")
  return {mode: errors(net_gradients(net, config, params, views, target), reference)
          for mode, config in configs.items()}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--nets", default="deblur,coc")
  parser.add_argument("--size", type=int, default=512)
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--width", type=int, default=64)
  args = parser.parse_args(argv)
  device = jax.devices()[0].device_kind
  for net in args.nets.split(","):
    for mode, record in measure(net, args.size, args.batch, args.width).items():
      print(json.dumps({"net": net, "conv_gradients": mode, "size": args.size, "batch": args.batch,
                        "width": args.width, "device": device, **record}), flush=True)


if __name__ == "__main__":
  main()
