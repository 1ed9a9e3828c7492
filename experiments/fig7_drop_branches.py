"""The paper's Fig. 7: a trained deblurring net with the residuals of some branches dropped.

    python experiments/fig7_drop_branches.py --config configs/dpdd.py --workdir workdirs/dpdd
    python experiments/fig7_drop_branches.py --workdir /tmp/fig7 --metrics psnr,ssim,mae  # CPU

No retraining: the branches left out get a gate of 0 in the merge z = F_enc + sum_i g_i o_i. The
paper's subsets (all; lightest-first; heaviest-first) are scored on the test split and shown on its
first image in <workdir>/fig7/{fig7.md,fig7.json,fig7.png}.
"""

import json
import pathlib

import jax.numpy as jnp
import numpy as np

from bambnet_jax.commands import report
from bambnet_jax.evaluation import evaluate
from bambnet_jax.evaluation import suite as suite_lib
from bambnet_jax.io import figures
from bambnet_jax.io import files
import runs


def branch_subsets(num_branches):
  """[(label, kept branches (0-based))]: all, lightest-first prefixes, heaviest-first suffixes."""
  ordinal = lambda i: "last" if i == num_branches - 1 else {0: "1st", 1: "2nd", 2: "3rd"}.get(i, f"{i + 1}th")
  name = lambda kept: "+".join(ordinal(i) for i in kept)
  subsets = [("all branches", tuple(range(num_branches)))]
  subsets += [(name(tuple(range(k))), tuple(range(k))) for k in range(1, num_branches)]
  subsets += [(name(tuple(range(num_branches - k, num_branches))), tuple(range(num_branches - k, num_branches)))
              for k in range(1, num_branches)]
  return subsets


def plot(example, outputs, labels, scores):
  plt = figures.pyplot()
  panels = [("input view", example["combined"]), ("GT", example["sharp"])]
  panels += [(f"{label}\n{score:.2f} dB", out) for label, out, score in zip(labels, outputs, scores)]
  cols = min(len(panels), 5)
  rows = -(-len(panels) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.4 * rows), squeeze=False)
  for ax, (title, image) in zip(axes.flat, panels):
    ax.imshow(np.clip(image, 0, 1))
    ax.set_title(title, fontsize=8)
  for ax in axes.flat:
    ax.axis("off")
  return figures.png_bytes(fig)


def main(argv=None):
  args = runs.parser(__doc__).parse_args(argv)
  config = runs.load_config(args)
  workdir = pathlib.Path(args.workdir)
  suite = runs.metric_suite(args)
  runs.train(config, workdir)
  run = runs.Run(workdir)
  num_branches = len(run.model_config.branch_capacities)
  out = workdir / "fig7"
  results, images_out, image_psnr = {}, [], []
  example = report.first_test_scenes(config, 1)[0]
  restore = evaluate.make_restore_fn(run.model_config)
  one = {k: jnp.asarray(example[k])[None] for k in ("left", "right", "combined", "sharp")}
  for label, kept in branch_subsets(num_branches):
    gates = np.asarray([float(i in kept) for i in range(num_branches)], np.float32)
    summary = runs.evaluate_run(run, config, suite, out / label.replace("+", "_").replace(" ", "_"),
                                branch_gates=gates, title=f"Branches kept: {label}")
    results[label] = {"kept": list(kept), **{k: summary[k] for k in suite.image_metrics}}
    if "fid" in suite.names:
      results[label]["fid"] = summary["fid"]
    restored = np.asarray(restore(run.deblur_params, None, one, jnp.asarray(gates))["restored"][0])
    images_out.append(restored)
    image_psnr.append(float(10 * np.log10(1.0 / np.mean((restored - example["sharp"]) ** 2))))
  columns = suite.names
  lines = ["# Fig. 7: dropping branches from the trained net (test split)", "",
           "| branches kept | " + " | ".join(suite_lib.LABELS[m] for m in columns) + " |",
           "| --- " * (len(columns) + 1) + "|"]
  cell = lambda value: "-" if value is None else f"{value:.4f}"
  lines += [f"| {label} | " + " | ".join(cell(r[m]) for m in columns) + " |" for label, r in results.items()]
  text = "\n".join(lines) + "\n"
  files.atomic_write_bytes(out / "fig7.md", text.encode())
  files.atomic_write_bytes(out / "fig7.json", json.dumps(results, indent=1).encode())
  files.atomic_write_bytes(out / "fig7.png", plot(example, images_out, list(results), image_psnr))
  print(text)
  return results


if __name__ == "__main__":
  main()
