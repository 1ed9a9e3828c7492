"""How a training crop's edges bias the reblur loss's COC: the classical estimate on a crop alone
against the same pixels estimated with the whole scene around them.

    python experiments/coc_crop_borders.py                 # 8 scenes of 256x256, 128-px crops
    python experiments/coc_crop_borders.py --crop 256 --size 384

The COC stage trains on random crops, and the reblur loss's kernel responses are zero-padded at
the crop's edges, so within about a blur radius of an edge the loss is minimised by the wrong COC.
`coc_search.estimate_coc` is that loss's minimiser (windowed): its error against the true COC of
`dp_synthetic`-style scenes, on textured pixels, in a band along the crop's edges and inside it,
computed from the crop alone and from the full scene. One JSON line (CPU, about a minute).
"""

import argparse
import json

import numpy as np

from bambnet_jax.data import synthetic
from bambnet_jax.losses import coc_search


def band_mask(size, band):
  mask = np.zeros((size, size), bool)
  mask[:band] = mask[-band:] = True
  mask[:, :band] = mask[:, -band:] = True
  return mask


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--size", type=int, default=256, help="scene side (dp_synthetic's in configs/synthetic.py)")
  p.add_argument("--crop", type=int, default=128, help="training crop side (configs/synthetic.py's)")
  p.add_argument("--band", type=int, default=16, help="width of the edge band, px")
  p.add_argument("--max-coc", type=float, default=12.0)
  p.add_argument("--scenes", type=int, default=8)
  args = p.parse_args(argv)
  config = synthetic.SceneConfig(height=args.size, width=args.size, max_coc=args.max_coc)
  start = (args.size - args.crop) // 2
  window = (slice(start, start + args.crop),) * 2
  band = band_mask(args.crop, args.band)
  errors = {k: [] for k in ("band_crop_alone", "band_full_scene", "inside_crop_alone", "inside_full_scene")}
  for seed in range(args.scenes):
    sample = synthetic.render_sample(1000 + seed, config)
    truth = sample["coc"].reshape(args.size, args.size)[window]
    full, textured = coc_search.estimate_coc(sample["left"], sample["right"])
    alone, _ = coc_search.estimate_coc(sample["left"][window], sample["right"][window])
    textured = np.asarray(textured)[window]
    for name, estimate in (("crop_alone", np.asarray(alone)), ("full_scene", np.asarray(full)[window])):
      error = np.abs(estimate - truth)
      errors[f"band_{name}"].append(float(error[band & textured].mean()))
      errors[f"inside_{name}"].append(float(error[~band & textured].mean()))
  result = {"scenes": args.scenes, "size": args.size, "crop": args.crop, "band": args.band,
            "band_fraction_of_crop": float(band.mean()),
            **{f"mae_px_{k}": round(float(np.mean(v)), 3) for k, v in errors.items()}}
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  main()
