"""Inference on images of any size: tiled, blended application of a network, and the `Deblurrer`
that turns one DP pair into a restored image, a signed COC map and branch masks.

Tiling keeps device memory bounded whatever the frame size: fixed-shape tiles (so nothing
recompiles), edge tiles shifted inward rather than shrunk, and a short raised-cosine hand-over in
the middle of each overlap, where both tiles are farthest from their own borders. A tile's zero
padding disturbs its output up to 64-80 px inside its border (measured on both widths of the net:
the disturbance falls ~100-fold over those px), so the default overlap of 160 px blends only pixels
at least 64 px inside both tiles and discards the rest: no seam shows. The channel attention pools over its whole input, so a tile's output also depends on
the tile's content as a whole: tiled and untiled results agree closely, not exactly. Training used
512 x 512 patches, so 512 x 512 tiles show the nets inputs of the size they were trained on.
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
# Working memory of either net's forward pass per pixel, with headroom: XLA's memory analysis of
# the float32 forward at 256 x 256 gives 3.2 KB (bfloat16 2.7 KB).
BYTES_PER_PIXEL = 4096
DEFAULT_OVERLAP = 160  # px; see the module docstring
DEFAULT_RAMP = 32  # px over which one tile hands over to the next (at most the overlap)
# The classical COC search looks max_radius + window // 2 + shift (24 + 10 + 10) px around a pixel
# (plus the 3x3 smoothing); with this overlap its hand-over lies beyond that reach from both tiles'
# borders (64 - 16 = 48 px), so the tiled search reproduces the untiled one up to rounding.
COC_SEARCH_OVERLAP = 128
COC_SOURCES = ("network", "search", "none")


def device_memory(device=None):
  """Bytes a computation may use on `device` (default: JAX's first): its memory limit, or the
  host's physical memory for a CPU."""
  device = device or jax.devices()[0]
  stats = device.memory_stats() or {}
  if stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def fits_whole(height, width, device=None, share=0.5):
  """Whether a net's forward pass over a whole H x W image fits in `share` of the device memory."""
  return height * width * BYTES_PER_PIXEL <= share * device_memory(device)


def tile_starts(size, tile, overlap):
  """Tile origins along one axis: stride tile - overlap, the last tile shifted inward to end at size."""
  if tile >= size:
    return [0]
  return list(range(0, size - tile, tile - overlap)) + [size - tile]


def blend_weights(starts, tile, ramp):
  """Per tile, its blending weight along one axis, (len(starts), tile) float32.

  Between neighbouring tiles a raised-cosine ramp `ramp` px long, centred in their actual
  overlap (larger than the nominal one for a tile shifted inward), hands over from one to the
  next; ramp 0 is a hard cut. The weights are normalised to sum to 1 at every position, so the
  2-D weights (outer products) form a partition of unity without a per-pixel weight image.
  """
  pixel_centres = np.arange(tile) + 0.5
  weights = np.ones((len(starts), tile))
  for k in range(len(starts) - 1):
    centre = (starts[k + 1] + starts[k] + tile) / 2.0

    def rising(position):
      if ramp == 0:
        return (position >= centre).astype(np.float64)
      t = np.clip((position - (centre - ramp / 2.0)) / ramp, 0.0, 1.0)
      return np.sin(0.5 * np.pi * t) ** 2

    weights[k] *= 1.0 - rising(starts[k] + pixel_centres)
    weights[k + 1] *= rising(starts[k + 1] + pixel_centres)
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
  return TileLayout(padded, shape, tile_starts(padded[0], shape[0], overlap),
                    tile_starts(padded[1], shape[1], overlap))


def tiled_apply(fn, image, tile=DEFAULT_TILE, overlap=DEFAULT_OVERLAP, align=1, batch_size=1,
                progress=None, max_tiles=None, ramp=DEFAULT_RAMP):
  """Applies `fn` to overlapping tiles of `image` and blends the results seamlessly.

  Args:
    fn: maps a (B, h, w, C) batch of tiles (a NumPy array, the image's dtype) to (B, h, w, C') at
      the same size, e.g. a jitted network; called with one fixed shape (the last batch is filled
      up by repeating a tile), so it compiles once.
    image: (H, W, C) NumPy array, any dtype.
    tile: tile side in px (tiles are min(tile, size) along each axis); 0: the whole image at once.
    overlap: px shared by neighbouring tiles (more for a tile shifted inward).
    align: tile origins are multiples of this (16 for the nets, whose pooling grid then matches the
      untiled image's); the image is reflect-padded at the bottom and right to a multiple of it,
      as the nets pad an untiled image.
    batch_size: tiles per call of `fn`. At most two batches are in flight: the next is computed
      while the previous one is blended on the host, so device memory stays bounded.
    progress: optional callable, given the number of tiles finished after each batch.
    max_tiles: process only the first this many tiles (benchmarks time part of a frame).
    ramp: px over which one tile hands over to the next, centred in their overlap (capped at the
      overlap); 0 is a hard cut. Pixels of a tile outside its hand-overs, nearer its border, are
      discarded: the neighbour covers them from farther inside.

  Returns:
    (H, W, C') float32 NumPy array.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be at least 1, got {batch_size}")
  height, width = image.shape[:2]
  layout = tile_layout(height, width, tile, overlap, align)
  if layout.padded_shape != (height, width):
    pad = ((0, layout.padded_shape[0] - height), (0, layout.padded_shape[1] - width), (0, 0))
    image = np.pad(image, pad, mode="reflect")
  (tile_h, tile_w) = layout.tile_shape
  ramp = min(ramp, overlap)
  weights_y = blend_weights(layout.starts_y, tile_h, ramp)
  weights_x = blend_weights(layout.starts_x, tile_w, ramp)
  origins = [(iy, ix) for iy in range(len(layout.starts_y)) for ix in range(len(layout.starts_x))]
  if max_tiles is not None:
    origins = origins[:max_tiles]
  output = None

  def blend(batch_origins, result):
    nonlocal output
    result = np.asarray(result, np.float32)
    if output is None:
      output = np.zeros((*layout.padded_shape, result.shape[-1]), np.float32)
    for (iy, ix), tile_out in zip(batch_origins, result):
      y, x = layout.starts_y[iy], layout.starts_x[ix]
      weight = weights_y[iy][:, None, None] * weights_x[ix][None, :, None]
      output[y:y + tile_h, x:x + tile_w] += weight * tile_out
    if progress is not None:
      progress(len(batch_origins))

  pending = None
  for first in range(0, len(origins), batch_size):
    batch_origins = origins[first:first + batch_size]
    filled = batch_origins + [batch_origins[-1]] * (batch_size - len(batch_origins))
    tiles = np.stack([image[layout.starts_y[iy]:layout.starts_y[iy] + tile_h,
                            layout.starts_x[ix]:layout.starts_x[ix] + tile_w] for iy, ix in filled])
    result = fn(tiles)  # dispatched asynchronously for JAX functions
    if pending is not None:
      blend(*pending)
    pending = (batch_origins, result[:len(batch_origins)])
  blend(*pending)
  return output[:height, :width]


def branch_index(coc, thresholds):
  """Per pixel, the branch whose defocus mask holds it (masks.defocus_masks' rule), (H, W) int8.

  blur = max over channels of |COC|; branch i holds r_i <= blur < r_(i+1), the last one is open;
  -1 where blur < r_1. An index rather than M one-hot planes keeps full frames small.
  """
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


def _net_input(tiles):
  """Integer or float tiles (B, h, w, 2C) of L then R to the nets' float (B, h, w, 6) RGB in [0, 1].

  Converted on the host, tile by tile: the image stays in its compact integer form, and every
  input type shares one compiled network. Single-channel views (phone DP data is often one green
  channel) are replicated to RGB.
  """
  views = images.to_float(tiles)
  return np.repeat(views, 3, axis=-1) if views.shape[-1] == 2 else views


class Deblurrer:
  """Loads the networks once and applies them, tiled, to DP pairs of any size.

  The deblurring net runs with all gates at 1, as at the end of training (no COC map needed);
  the COC map (from the COC net, else the classical search) and the branch masks from the
  thresholds r_1..r_M show how the method would route each pixel.

  Single-channel pairs go through the RGB nets with the channel replicated; the three restored
  channels are averaged back into one.
  """

  def __init__(self, deblur_params, deblur_config, coc_params=None, coc_config=None, coc_source=None,
               thresholds=None, compute_dtype=None, tile=None, overlap=DEFAULT_OVERLAP, batch_size=1,
               progress=None):
    """compute_dtype: None keeps the configs' dtype, else "float32"/"bfloat16" (params stay float32).
    tile: None restores an image whole when it fits in device memory (`fits_whole`), as the nets
      were evaluated, and in DEFAULT_TILE tiles beyond; 0 always whole; else tiles of that side.
    coc_source: "network" (needs coc_params), "search", "none", or None (network if given, else search).
    progress: optional factory(total=, desc=) of tile progress bars (with update(n) and close()),
      e.g. functools.partial(tqdm.tqdm, leave=False)."""
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
      # Parameters are an argument, not a constant baked into the program; one compilation per
      # tile shape.
      apply = jax.jit(lambda params, views: model.apply({"params": params}, views))
      return lambda tiles: apply(params, _net_input(tiles))

    self._deblur = compiled("deblur", deblur_params, deblur_config)
    self._coc_net = compiled("coc", coc_params, coc_config) if self.coc_source == "network" else None

  def net_tile(self, height, width):
    """The tile side the nets run with on an H x W image (0: the whole image)."""
    if self.tile is not None:
      return self.tile
    return 0 if fits_whole(height, width) else DEFAULT_TILE

  def _tiled(self, fn, views, description, tile, overlap, align, max_tiles=None):
    layout = tile_layout(*views.shape[:2], tile, overlap, align)
    bar = self._progress(total=layout.num_tiles, desc=description) if self._progress else None
    try:
      return tiled_apply(fn, views, tile, overlap, align, self.batch_size, bar and bar.update, max_tiles)
    finally:
      if bar is not None:
        bar.close()

  def restore(self, views, max_tiles=None):
    """(H, W, 2C) L then R views (uint8/uint16 pixels or float in [0, 1]) -> (H, W, C) in [0, 1].

    max_tiles: restore only the first this many tiles (benchmarks time part of a frame).
    """
    fn = self._deblur
    if views.shape[-1] == 2:  # single-channel: the mean of the RGB net's three outputs
      fn = lambda tiles: jnp.mean(self._deblur(tiles), axis=-1, keepdims=True)
    tile = self.net_tile(*views.shape[:2])
    restored = self._tiled(fn, views, "deblur", tile, self.overlap if tile else 0, NET_MULTIPLE, max_tiles)
    return np.clip(restored, 0.0, 1.0, out=restored)  # in place: a full frame is large

  def estimate_coc(self, views):
    """The signed COC map (H, W, K) of (H, W, 2C) views, or None when the source is "none"."""
    channels = views.shape[-1] // 2
    if self.coc_source == "none":
      return None
    if self.coc_source == "network":
      tile = self.net_tile(*views.shape[:2])
      return self._tiled(self._coc_net, views, "COC net", tile, self.overlap if tile else 0, NET_MULTIPLE)

    def search(tiles):
      # The search's memory grows with its input (49 signed radii per pixel): tiles bound it.
      return np.stack([coc_search.estimate_coc(t[..., :channels], t[..., channels:])[0][..., None]
                       for t in tiles])

    search_tile = DEFAULT_TILE if self.tile is None else self.tile
    overlap = COC_SEARCH_OVERLAP if search_tile else 0
    tile = max(search_tile, 2 * overlap) if search_tile else 0
    return self._tiled(search, views, "COC search", tile, overlap, 1)

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


def count_tiles(height, width, tile, overlap, align=NET_MULTIPLE):
  """How many tiles `tiled_apply` runs on an H x W image (for reports and benchmarks)."""
  return tile_layout(height, width, tile, overlap, align).num_tiles
