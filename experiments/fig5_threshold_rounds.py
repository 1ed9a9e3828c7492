"""The paper's Fig. 5: the defocus masks of test images over the rounds of the threshold search.

    python experiments/fig5_threshold_rounds.py --config configs/dpdd.py --workdir workdirs/dpdd
    python experiments/fig5_threshold_rounds.py --workdir /tmp/fig5    # smoke config, CPU, seconds

For the first --num-images test images: the COC net's map and the masks D_i of the search's start
and of each round, in <workdir>/fig5/fig5.png (purple slight to yellow heavy blur, as the paper)
and fig5.json (each round's thresholds and share of pixels per branch).
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from bambnet_jax.commands import report
from bambnet_jax.io import figures
from bambnet_jax.io import files
from bambnet_jax.models import masks
from bambnet_jax.models import networks
import runs


def round_thresholds(history):
  """[(label, r_1..r_{M+1})]: the starting split, then each round's result; a round's label carries
  the share of the meta set's pixels each branch got (search/rounds.json)."""
  def label(i, h):
    shares = "/".join(f"{100 * s:.0f}" for s in h.get("branch_shares", ()))
    return (f"round {h['round']}" + (" (final)" if i == len(history) - 1 else "")
            + (f"\nmeta % {shares}" if shares else ""))
  return [("initial", history[0]["thresholds_before"])] + [
      (label(i, h), h["thresholds"]) for i, h in enumerate(history)]


def branch_maps(coc, thresholds):
  """Index of the branch each pixel goes to, (N, H, W), for thresholds r_1..r_{M+1}."""
  return np.asarray(jnp.argmax(masks.defocus_masks(coc, jnp.asarray(thresholds[:-1])), axis=-1))


def plot(views, blur, label_maps, labels, num_branches):
  from matplotlib import colors as mcolors  # pylint: disable=g-import-not-at-top
  plt = figures.pyplot()
  # viridis runs purple -> blue -> teal -> yellow: the paper's slight-to-heavy colours.
  palette = mcolors.ListedColormap(plt.get_cmap("viridis")(np.linspace(0, 1, num_branches)))
  cols = 2 + len(labels)
  fig, axes = plt.subplots(len(views), cols, figsize=(2.4 * cols, 2.0 * len(views)), squeeze=False)
  for row, view in enumerate(views):
    axes[row, 0].imshow(np.clip(view, 0, 1))
    axes[row, 1].imshow(blur[row], cmap="magma")
    for col, label in enumerate(labels):
      axes[row, 2 + col].imshow(label_maps[col][row], cmap=palette, vmin=-0.5, vmax=num_branches - 0.5,
                                interpolation="nearest")
  for col, title in enumerate(["input view", "|COC| (px)"] + labels):
    axes[0, col].set_title(title, fontsize=8)
  for ax in axes.flat:
    ax.axis("off")
  return figures.png_bytes(fig)


def main(argv=None):
  p = runs.parser(__doc__)
  p.add_argument("--num-images", type=int, default=2, help="test images shown (default: %(default)s)")
  args = p.parse_args(argv)
  config = runs.load_config(args)
  workdir = pathlib.Path(args.workdir)
  runs.train(config, workdir)
  run = runs.Run(workdir)
  if not run.search_history:
    raise ValueError(f"{workdir}: the run has no threshold-search record (search/rounds.json); "
                     "Fig. 5 needs a config with search.enabled=True")
  examples = report.first_test_scenes(config, args.num_images)
  views = np.stack([np.concatenate([e["left"], e["right"]], axis=-1) for e in examples])
  coc = jax.jit(networks.build("coc", run.model_config).apply)({"params": run.coc_params}, views)
  steps = round_thresholds(run.search_history)
  label_maps = [branch_maps(coc, thresholds) for _, thresholds in steps]
  num_branches = len(run.model_config.branch_capacities)
  record = [{"label": label, "thresholds": [float(r) for r in thresholds],
             "pixel_share": (np.bincount(m.ravel(), minlength=num_branches) / m.size).tolist()}
            for (label, thresholds), m in zip(steps, label_maps)]
  out = workdir / "fig5"
  blur = np.asarray(jnp.max(jnp.abs(coc), axis=-1))
  files.atomic_write_bytes(out / "fig5.png", plot([e["combined"] for e in examples], blur, label_maps,
                                                  [label for label, _ in steps], num_branches))
  files.atomic_write_bytes(out / "fig5.json", json.dumps({"images": [e["name"] for e in examples],
                                                          "rounds": record}, indent=1).encode())
  for r in record:
    print(f"{r['label'].splitlines()[0]:>18}: r = {', '.join(f'{t:.2f}' for t in r['thresholds'])}; pixel share per branch "
          + ", ".join(f"{s:.2f}" for s in r["pixel_share"]))
  return record


if __name__ == "__main__":
  main()
