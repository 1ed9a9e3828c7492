"""`bambnet coc`: the signed COC map of a DP pair, in px, > 0 in front of the focal plane (SPEC 3).

From the classical search (`losses/coc_search.py`, no training) or a trained or converted COC net.
"""

import pathlib

import jax
from matplotlib import colormaps
import numpy as np

from bambnet_jax.commands import inference
from bambnet_jax.io import files
from bambnet_jax.io import images
from bambnet_jax.io import weights as weights_io
from bambnet_jax.losses import coc_search
from bambnet_jax.models import networks

COLORMAP = "RdBu_r"  # diverging: red in front of the focal plane, white in focus, blue behind


def colour_range(coc):
  """The symmetric colour range +-vmax: the 99th percentile of |COC| (outliers would wash the map
  out), at least 1 px."""
  return max(1.0, float(np.percentile(np.abs(coc), 99)))


def colour_map(coc, vmax):
  """(H, W) signed COC -> (H, W, 3) uint8 RGB with the diverging COLORMAP over [-vmax, vmax]."""
  scaled = np.clip((np.asarray(coc, np.float64) + vmax) / (2.0 * vmax), 0.0, 1.0)
  return np.ascontiguousarray(colormaps[COLORMAP](scaled, bytes=True)[..., :3])


def _coc_from_network(weights, left, right):
  """The COC net's per-colour-channel map of float (H, W, C) views: (H, W, 3), or (H, W, 1) for
  single-channel views (replicated to RGB as by the Deblurrer, the three maps averaged)."""
  if left.shape[2] not in (1, 3):
    raise ValueError(f"the COC network needs RGB or single-channel views, got {left.shape[2]} channels")
  params, net, config = weights_io.load_weights(weights, expected_net="coc")
  views = inference.net_input(np.concatenate([left, right], axis=-1)[None])
  coc = np.asarray(jax.jit(networks.build(net, config).apply)({"params": params}, views)[0], np.float32)
  return coc.mean(axis=-1, keepdims=True) if left.shape[2] == 1 else coc


def run_coc(left_path, right_path, output_dir, weights=None, per_channel=False, black_level=None,
            white_level=None, flat_field=None):
  """Writes `coc.npy` (float32 signed COC in px; H x W x C with per_channel) and `coc.png` (colour
  map of the mean over channels) into output_dir; returns their paths, the colour range and median.

  weights: a COC net's weights directory (None: the classical search). black_level, white_level,
  flat_field (None or two files): see `images.DPReader`.
  """
  views = images.DPReader(black_level, white_level, *(flat_field or (None, None))).read(left_path, right_path)
  left, right = images.to_float(views.left), images.to_float(views.right)
  if weights is not None:
    coc = _coc_from_network(weights, left, right)
    # The net predicts one radius per colour channel; one shared map is their mean.
    coc = coc if per_channel else coc.mean(axis=-1)
  else:
    coc = np.asarray(coc_search.estimate_coc(left, right, per_channel=per_channel)[0], np.float32)
  output_dir = pathlib.Path(output_dir)
  npy_path, png_path = output_dir / "coc.npy", output_dir / "coc.png"
  images.write_npy(npy_path, coc)
  shown = coc.mean(axis=-1) if coc.ndim == 3 else coc
  vmax = colour_range(shown)
  files.atomic_write_bytes(png_path, images.encode_png(colour_map(shown, vmax)))
  return {"npy": npy_path, "png": png_path, "vmax": vmax, "median": float(np.median(shown))}
