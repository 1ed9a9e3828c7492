"""Does a COC net read real cameras? Its signed COC on the Canon DP pairs of tests/data, against truth.

    bambnet train --config configs/synthetic.py --workdir workdirs/synthetic --stop-after coc
    python experiments/coc_real_camera.py workdirs/synthetic --classical

One JSON line per (estimator, pair): the median signed COC (px, > 0 in front of focus) over the
pair's textured pixels, and whether it meets the target; a last line per estimator sums up, and
the exit status is 1 if any estimator given fails. Textured: `coc_search.textured_mask` of
(l + r) / 2, the mask the evaluation's `coc_mae_textured` uses: the RMS horizontal central
difference of the grey image over a 15x15 window is at least 0.01 per px (absolute, so it does
not depend on the estimator).
Truth (the poster at 0.6 m and 1.5 m, focus at 1.0 m): about +2.25 px at 0600/f4 (in front of focus),
-1.5 px at 1500/f4 (behind), 0 at f/20. The targets leave room for a net's scale error, not its sign.
"""

import argparse
import json
import pathlib
import sys
import tempfile

import numpy as np

from bambnet_jax.commands import coc
from bambnet_jax.io import images
from bambnet_jax.losses import coc_search

REPO = pathlib.Path(__file__).resolve().parents[1]
CANON = REPO / "tests" / "data" / "real_dp" / "canon_r6m2_flat"
# pair -> (lowest, highest) median signed COC that passes, px (None: unbounded)
TARGETS = {"0600/f4": (1.0, None), "1500/f4": (None, -0.75), "0600/f20": (-0.75, 0.75),
           "1500/f20": (-0.75, 0.75)}


def coc_weights(path):
  """A COC weights directory, or a training workdir's (its coc/weights)."""
  path = pathlib.Path(path)
  return path / "coc" / "weights" if (path / "coc" / "weights").is_dir() else path


def textured(pair):
  left, right = (images.to_float(images.read_image(CANON / pair / f"{side}.png")) for side in ("l", "r"))
  return coc_search.textured_mask((left + right) / 2)


def measure(estimator, weights, output_dir):
  """JSON rows of one estimator ("classical" or a weights path) over the Canon pairs."""
  rows = []
  for pair, (low, high) in TARGETS.items():
    out = pathlib.Path(output_dir) / pair
    coc.run_coc(CANON / pair / "l.png", CANON / pair / "r.png", out, weights=weights)  # None: classical
    median = float(np.median(np.load(out / "coc.npy")[textured(pair)]))
    rows.append({"estimator": estimator, "pair": pair, "median_coc_textured": round(median, 3),
                 "target": [low, high], "pass": (low is None or median >= low) and (high is None or median <= high)})
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("weights", nargs="*", help="COC weights directories or training workdirs")
  parser.add_argument("--classical", action="store_true", help="also the classical search (bambnet coc)")
  parser.add_argument("--output-dir", help="keep the COC maps here (default: a temporary directory)")
  args = parser.parse_args(argv)
  if not args.weights and not args.classical:
    parser.error("give COC weights, --classical, or both")
  estimators = [(str(w), coc_weights(w)) for w in args.weights] + [("classical", None)] * args.classical
  for name, weights in estimators:
    if weights is not None and not weights.is_dir():
      parser.error(f"{name}: no COC weights there (a weights directory or a workdir with coc/weights)")
  all_pass = True
  with tempfile.TemporaryDirectory() as scratch:
    for index, (name, weights) in enumerate(estimators):
      rows = measure(name, weights, pathlib.Path(args.output_dir or scratch) / str(index))
      for row in rows:
        print(json.dumps(row), flush=True)
      passed = all(row["pass"] for row in rows)
      print(json.dumps({"estimator": name, "all_pass": passed}), flush=True)
      all_pass &= passed
  return 0 if all_pass else 1


if __name__ == "__main__":
  sys.exit(main())
