"""Inference on images of any size: a network applied tile by tile, and the `Deblurrer` (a DP pair to
a restored image, a signed COC map and branch masks).

Tiles have one shape (nothing recompiles); edge tiles shift inward; neighbours hand over by a short
raised cosine mid-overlap. Zero padding disturbs a tile's output up to 64-80 px inside its border,
hence the 160-px overlap. Channel attention pools over a whole tile: tiled and untiled results agree
closely, not exactly.
"""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from bambnet_jax.io import images
from bambnet_jax.losses import coc_search
from bambnet_jax.models import masks
from bambnet_jax.models import networks
from bambnet_jax.models import padding

NET_MULTIPLE = 16  # the branches pool four times by 2: tiles start on this grid, as the full image
DEFAULT_TILE = 512  # px, the training patch size: tiles of frames too large to restore whole
# A forward pass's working memory per pixel, with headroom (XLA: 3.2 KB in float32 at 256 x 256).
BYTES_PER_PIXEL = 4096
DEFAULT_OVERLAP = 160  # px; see the module docstring
DEFAULT_RAMP = 32  # px over which one tile hands over to the next (at most the overlap)
# The COC search reaches 24 + 10 + 10 px around a pixel (radius, window, shift): this overlap puts
# its hand-over beyond that from both tiles' borders, so tiling it changes only the rounding.
COC_SEARCH_OVERLAP = 128
COC_SOURCES = ("network", "search", "none")


def fits_whole(height, width, share=0.5):
  """Whether a net's forward pass over a whole H x W image fits in `share` of the device's memory."""
  stats = jax.devices()[0].memory_stats() or {}
  memory = stats.get("bytes_limit") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  return height * width * BYTES_PER_PIXEL <= share * memory


def tile_starts(size, tile, overlap):
  """Tile origins along one axis: stride tile - overlap, the last tile shifted inward to end at size."""
  if tile >= size:
    return [0]
  return list(range(0, size - tile, tile - overlap)) + [size - tile]


def blend_weights(starts, tile, ramp):
  """Per tile, its weight along one axis, (len(starts), tile) float32: neighbours hand over by a
  raised-cosine ramp (0: a hard cut) mid-overlap. They sum to 1, so their outer products do too."""
  def rising(position, centre):
    if ramp == 0:
      return (position >= centre).astype(np.float64)
    t = np.clip((position - (centre - ramp / 2.0)) / ramp, 0.0, 1.0)
    return np.sin(0.5 * np.pi * t) ** 2

  pixel_centres = np.arange(tile) + 0.5
  weights = np.ones((len(starts), tile))
  for k in range(len(starts) - 1):
    centre = (starts[k + 1] + starts[k] + tile) / 2.0
    weights[k] *= 1.0 - rising(starts[k] + pixel_centres, centre)
    weights[k + 1] *= rising(starts[k + 1] + pixel_centres, centre)
  total = np.zeros(starts[-1] + tile)
  for start, weight in zip(starts, weights):
    total[start:start + tile] += weight
  # The sum is >= 1 wherever ramps meet and exactly 1 elsewhere; dividing keeps it smooth.
  weights /= np.stack([total[start:start + tile] for start in starts])
  return weights.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class TileLayout:
  """Where the tiles of an image lie: its padded size, the tile shape and the origins per axis."""
  padded_shape: tuple
  tile_shape: tuple
  starts_y: list
  starts_x: list

  @property
  def num_tiles(self):
    return len(self.starts_y) * len(self.starts_x)


def tile_layout(height, width, tile, overlap, align=1):
  """The tiling of an H x W image (see `tiled_apply`); tile 0 means one tile of the whole image."""
  if tile < 0 or overlap < 0 or (tile and tile <= overlap):
    raise ValueError(f"need tile > overlap >= 0 (tile 0: no tiling), got tile {tile}, overlap {overlap}")
  if tile % align or overlap % align:
    raise ValueError(f"tile ({tile}) and overlap ({overlap}) must be multiples of {align}")
  padded = (padding.padded_size(height, align), padding.padded_size(width, align))
  shape = tuple(p if tile == 0 else min(tile, p) for p in padded)
  return TileLayout(padded, shape, *(tile_starts(p, s, overlap) for p, s in zip(padded, shape)))


def tiled_apply(fn, image, tile=DEFAULT_TILE, overlap=DEFAULT_OVERLAP, align=1, batch_size=1,
                progress=None, max_tiles=None, ramp=DEFAULT_RAMP):
  """Applies `fn` to overlapping tiles of an (H, W, C) `image`; returns the blend, (H, W, C') float32.

  fn: (B, h, w, C) tiles -> (B, h, w, C'), always called with one shape (the last batch is filled up
  with a repeated tile). tile: side in px (0: the whole image); overlap: px shared by neighbours;
  ramp: px of each hand-over; align: tile origins are multiples of this (the image is reflect-padded
  at the bottom and right to one); batch_size: tiles per call, the next one running while the last is
  blended; progress: called with the tiles finished per batch; max_tiles: only the first ones.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be at least 1, got {batch_size}")
  height, width = image.shape[:2]
  layout = tile_layout(height, width, tile, overlap, align)
  if layout.padded_shape != (height, width):
    pad = ((0, layout.padded_shape[0] - height), (0, layout.padded_shape[1] - width), (0, 0))
    image = np.pad(image, pad, mode="reflect")
  (tile_h, tile_w), ramp = layout.tile_shape, min(ramp, overlap)
  weights_y = blend_weights(layout.starts_y, tile_h, ramp)
  weights_x = blend_weights(layout.starts_x, tile_w, ramp)
  origins = [(y, x, wy, wx) for y, wy in zip(layout.starts_y, weights_y)
             for x, wx in zip(layout.starts_x, weights_x)][:max_tiles]
  output = None

  def blend(batch_origins, result):
    nonlocal output
    result = np.asarray(result, np.float32)
    if output is None:
      output = np.zeros((*layout.padded_shape, result.shape[-1]), np.float32)
    for (y, x, wy, wx), tile_out in zip(batch_origins, result):
      output[y:y + tile_h, x:x + tile_w] += wy[:, None, None] * wx[None, :, None] * tile_out
    if progress is not None:
      progress(len(batch_origins))

  pending = None
  for first in range(0, len(origins), batch_size):
    batch_origins = origins[first:first + batch_size]
    filled = batch_origins + [batch_origins[-1]] * (batch_size - len(batch_origins))
    result = fn(np.stack([image[y:y + tile_h, x:x + tile_w] for y, x, _, _ in filled]))
    if pending is not None:  # blended while the device computes `result`
      blend(*pending)
    pending = (batch_origins, result[:len(batch_origins)])
  blend(*pending)
  return output[:height, :width]


def branch_index(coc, thresholds):
  """Per pixel, the branch whose defocus mask holds it, (H, W) int8: i where r_i <= max_c |COC| <
  r_(i+1) (masks.defocus_masks' rule), the last one open above; -1 below r_1."""
  thresholds = np.asarray(thresholds, np.float32)
  blur = np.max(np.abs(np.asarray(coc, np.float32)), axis=-1)
  return (np.searchsorted(thresholds, blur, side="right") - 1).astype(np.int8)


@dataclasses.dataclass
class DeblurResult:
  """What `Deblurrer` returns for one DP pair (all NumPy, at the input's height and width)."""
  restored: np.ndarray  # (H, W, C) float32 in [0, 1], C as the input (1 or 3)
  coc: np.ndarray | None  # (H, W, K) float32 signed COC, px: K = 3 (COC net) or 1 (search)
  branches: np.ndarray | None  # (H, W) int8 branch per pixel (see `branch_index`)
  coc_source: str  # "network", "search" or "none"


def net_input(tiles):
  """Tiles (B, h, w, 2C) of L then R, any pixel type, to the nets' float RGB (B, h, w, 6). On the
  host, tile by tile: the frame stays compact and every input type shares one compiled net."""
  views = images.to_float(tiles)
  return np.repeat(views, 3, axis=-1) if views.shape[-1] == 2 else views


class Deblurrer:
  """Loads the networks once and applies them, tiled, to DP pairs of any size.

  The deblurring net runs with all gates at 1, as at the end of training; the COC map and the
  masks from r_1..r_M show how each pixel would be routed. Single-channel views are replicated to
  RGB and the restored channels averaged.
  """

  def __init__(self, deblur_params, deblur_config, coc_params=None, coc_config=None, coc_source=None,
               thresholds=None, compute_dtype=None, tile=None, overlap=DEFAULT_OVERLAP, batch_size=1,
               progress=None):
    """compute_dtype: None keeps the configs' dtype, else "float32"/"bfloat16" (params stay float32).
    tile: None: whole images where they fit in device memory, else DEFAULT_TILE; 0: always whole.
    coc_source: "network" (needs coc_params), "search", "none", or None (network if given, else search).
    progress: optional factory(total=, desc=) of tile progress bars, e.g. tqdm.tqdm."""
    self.coc_source = coc_source or ("network" if coc_params is not None else "search")
    if self.coc_source not in COC_SOURCES:
      raise ValueError(f"unknown COC source {self.coc_source!r}; expected one of {COC_SOURCES}")
    if self.coc_source == "network" and coc_params is None:
      raise ValueError("the COC network was asked for but no COC weights are at hand (--coc-weights)")
    num_branches = len(deblur_config.branch_capacities)
    if thresholds is None:
      # The released code's hand-set values for the paper's 4 branches; else the search's start.
      thresholds = (masks.RELEASED_THRESHOLDS if num_branches == len(masks.RELEASED_THRESHOLDS)
                    else tuple(np.linspace(0.0, 25.0, num_branches + 1)[:-1]))
    if len(thresholds) != num_branches or list(thresholds) != sorted(thresholds):
      raise ValueError(f"need {num_branches} increasing thresholds r_1..r_{num_branches} for this "
                       f"network's {num_branches} branches, got {list(thresholds)}")
    self.thresholds = tuple(float(r) for r in thresholds)
    self.tile, self.overlap, self.batch_size, self._progress = tile, overlap, batch_size, progress
    tile_layout(NET_MULTIPLE, NET_MULTIPLE, tile or 0, overlap, NET_MULTIPLE)  # checks tile and overlap early

    def compiled(net, params, config):
      config = config.copy_and_resolve_references()
      if compute_dtype is not None:
        config.dtype = compute_dtype
      model = networks.build(net, config)
      params = jax.device_put(params)  # once: every tile reuses the device copy
      # Parameters as an argument, not constants baked into the program.
      apply = jax.jit(lambda params, views: model.apply({"params": params}, views))
      return lambda tiles: apply(params, net_input(tiles))

    self._deblur = compiled("deblur", deblur_params, deblur_config)
    self._coc_net = compiled("coc", coc_params, coc_config) if self.coc_source == "network" else None

  def _tiled(self, fn, views, description, tile, overlap, align, max_tiles=None):
    layout = tile_layout(*views.shape[:2], tile, overlap, align)
    bar = self._progress(total=layout.num_tiles, desc=description) if self._progress else None
    try:
      return tiled_apply(fn, views, tile, overlap, align, self.batch_size, bar and bar.update, max_tiles)
    finally:
      if bar is not None:
        bar.close()

  def _run_net(self, fn, views, description, max_tiles=None):
    tile = (0 if fits_whole(*views.shape[:2]) else DEFAULT_TILE) if self.tile is None else self.tile
    return self._tiled(fn, views, description, tile, self.overlap if tile else 0, NET_MULTIPLE, max_tiles)

  def restore(self, views, max_tiles=None):
    """(H, W, 2C) L then R views (integer pixels or float in [0, 1]) -> (H, W, C) in [0, 1]."""
    fn = self._deblur
    if views.shape[-1] == 2:  # single-channel: the mean of the RGB net's three outputs
      fn = lambda tiles: jnp.mean(self._deblur(tiles), axis=-1, keepdims=True)
    restored = self._run_net(fn, views, "deblur", max_tiles)
    return np.clip(restored, 0.0, 1.0, out=restored)  # in place: a full frame is large

  def estimate_coc(self, views):
    """The signed COC map (H, W, K) of (H, W, 2C) views, or None when the source is "none"."""
    channels = views.shape[-1] // 2
    if self.coc_source == "none":
      return None
    if self.coc_source == "network":
      return self._run_net(self._coc_net, views, "COC net")

    def search(tiles):
      # The search's memory grows with its input (49 signed radii per pixel): tiles bound it.
      return np.stack([coc_search.estimate_coc(t[..., :channels], t[..., channels:])[0][..., None]
                       for t in tiles])

    tile = DEFAULT_TILE if self.tile is None else self.tile
    overlap = COC_SEARCH_OVERLAP if tile else 0
    return self._tiled(search, views, "COC search", max(tile, 2 * overlap), overlap, 1)

  def __call__(self, left, right):
    """Restores one DP pair of (H, W, C) views, C = 1 or 3, integer pixels or float in [0, 1]."""
    if left.shape != right.shape or left.dtype != right.dtype or left.ndim != 3 or left.shape[-1] not in (1, 3):
      raise ValueError(f"need two (H, W, 1 or 3) views of one shape and dtype, got {left.shape} "
                       f"{left.dtype} and {right.shape} {right.dtype}")
    views = np.concatenate([left, right], axis=-1)
    restored = self.restore(views)
    coc = self.estimate_coc(views)
    branches = None if coc is None else branch_index(coc, self.thresholds)
    return DeblurResult(restored, coc, branches, self.coc_source)
