"""Signed COC maps of a user's DP pair: the library behind `bambnet coc`.

Two estimators: the classical search (`losses/coc_search.py`, no training needed) and a trained or
converted COC network (`--weights`). Both give the signed COC radius in pixels, > 0 in front of the
focal plane, < 0 behind it (SPEC section 3). Raw views (black and white levels, a flat-field pair)
are read through `images.DPReader`, as by `bambnet deblur`.
"""

import pathlib

import jax
import jax.numpy as jnp
from matplotlib import colormaps
import numpy as np

from bambnet_jax.io import files
from bambnet_jax.io import images
from bambnet_jax.io import weights as weights_io
from bambnet_jax.losses import coc_search
from bambnet_jax.models import networks

METHODS = ("search", "network")
COLORMAP = "RdBu_r"  # diverging: red in front of the focal plane, white in focus, blue behind


def colour_range(coc):
  """The symmetric colour range +-vmax: the 99th percentile of |COC|, at least 1 px.

  A percentile rather than the maximum, so a few outliers do not wash out the map.
  """
  return max(1.0, float(np.percentile(np.abs(coc), 99)))


def colour_map(coc, vmax):
  """(H, W) signed COC -> (H, W, 3) uint8 RGB with the diverging COLORMAP over [-vmax, vmax]."""
  scaled = np.clip((np.asarray(coc, np.float64) + vmax) / (2.0 * vmax), 0.0, 1.0)
  rgba = colormaps[COLORMAP](scaled, bytes=True)
  return np.ascontiguousarray(rgba[..., :3])


def _coc_from_network(weights, left, right):
  """The COC net's per-colour-channel map for float (H, W, C) views: (H, W, 3), or (H, W, 1) for
  single-channel views (replicated to RGB, as the Deblurrer does; the three maps averaged)."""
  if left.shape[2] not in (1, 3):
    raise ValueError(f"the COC network needs RGB or single-channel views, got {left.shape[2]} channels")
  params, net, config = weights_io.load_weights(weights, expected_net="coc")
  model = networks.build(net, config)
  views = jnp.concatenate([jnp.asarray(left), jnp.asarray(right)], axis=-1)[None]
  if left.shape[2] == 1:
    views = jnp.repeat(views, 3, axis=-1)
  coc = np.asarray(jax.jit(model.apply)({"params": params}, views)[0], np.float32)
  return coc.mean(axis=-1, keepdims=True) if left.shape[2] == 1 else coc


def estimate(left, right, method="search", weights=None, per_channel=False):
  """The signed COC of float (H, W, C) views: (H, W), or (H, W, C) with per_channel."""
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
  if method == "network":
    if weights is None:
      raise ValueError("the network method needs --weights (a trained or converted COC net)")
    coc = _coc_from_network(weights, left, right)
    # The net predicts one radius per colour channel; one shared map is their mean.
    return coc if per_channel else coc.mean(axis=-1)
  if weights is not None:
    raise ValueError("--weights is only used by --method network")
  coc, _ = coc_search.estimate_coc(left, right, per_channel=per_channel)
  return coc


def run_coc(left_path, right_path, output_dir, method="search", weights=None, per_channel=False,
            black_level=None, white_level=None, flat_field=None):
  """Writes `coc.npy` (float32 signed COC in px) and `coc.png` (colour map) into output_dir.

  method: "search" (the classical estimate) or "network" (needs `weights`); a `weights` argument
  alone selects the network. With per_channel the .npy is H x W x C and the PNG shows the mean
  over channels. black_level, white_level: raw levels (None: from a dp_raw.json beside the left
  view, else none); flat_field: None or (left, right) flat-field files; see `images.DPReader`.
  Returns a dict: paths of the two files, the colour range and the median COC.
  """
  if weights is not None and method == "search":
    method = "network"
  reader = images.DPReader(black_level, white_level, *(flat_field or (None, None)))
  views = reader.read(left_path, right_path)
  left, right = images.to_float(views.left), images.to_float(views.right)
  coc = estimate(left, right, method=method, weights=weights, per_channel=per_channel)
  coc = np.asarray(coc, np.float32)
  output_dir = pathlib.Path(output_dir)
  npy_path, png_path = output_dir / "coc.npy", output_dir / "coc.png"
  images.write_npy(npy_path, coc)
  shown = coc.mean(axis=-1) if coc.ndim == 3 else coc
  vmax = colour_range(shown)
  files.atomic_write_bytes(png_path, images.encode_png(colour_map(shown, vmax)))
  return {"npy": npy_path, "png": png_path, "vmax": vmax, "median": float(np.median(shown))}
