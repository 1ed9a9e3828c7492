"""The threshold search's rounds as JSON and a plot of each branch's error per COC bin (cf. the paper's Fig. 5)."""

import json
import pathlib

import numpy as np

from bambnet_jax.io import figures
from bambnet_jax.io import files


def write_search_report(history, directory):
  directory = pathlib.Path(directory)
  files.atomic_write_bytes(directory / "rounds.json", json.dumps(history, indent=1).encode())
  files.atomic_write_bytes(directory / "rounds.png", plot_rounds(history))


def plot_rounds(history):
  """PNG bytes: one panel per round, mean error per bin for each branch, thresholds as lines."""
  plt = figures.pyplot()
  cols = min(3, len(history))
  rows = -(-len(history) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
  for ax, record in zip(axes.flat, history):
    edges = np.asarray(record["bin_edges"])
    centres = (edges[:-1] + edges[1:]) / 2
    counts = np.asarray(record["counts"])
    seen = counts > 0
    for i, errors in enumerate(np.asarray(record["errors"])):
      ax.plot(centres[seen], errors[seen] / counts[seen], label=f"branch {i}", lw=1.2)
    for r in record["thresholds"][1:-1]:
      ax.axvline(r, color="k", ls="--", lw=0.8)
    upper = centres[seen].max() if seen.any() else edges[-1]
    ax.set_xlim(0, max(upper * 1.05, record["thresholds"][-2] * 1.1))
    ax.set_title(f"round {record['round']}: r = " + ", ".join(f"{r:.2f}" for r in record["thresholds"][1:-1]),
                 fontsize=9)
    ax.set_xlabel("blur |COC| (px)")
    ax.set_ylabel("mean L1 error")
  for ax in list(axes.flat)[len(history):]:
    ax.axis("off")
  axes.flat[0].legend(fontsize=7)
  return figures.png_bytes(fig)
