"""Tiled inference: layout, blending, agreement with untiled inference on a real Canon pair, no seams."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from bambnet_jax.commands import inference
from bambnet_jax.io import images
from bambnet_jax.losses import coc_search
from bambnet_jax.models import masks
from bambnet_jax.models import networks

# Focused at 1.5 m, f/4: strong defocus across the frame.
CANON_PAIR = pathlib.Path(__file__).parent / "data" / "real_dp" / "canon_r6m2_flat" / "1500" / "f4"


@pytest.fixture(scope="module")
def canon_views():
  folder = CANON_PAIR
  left, right = images.read_dp_pair(folder / "l.png", folder / "r.png")
  return left, right


@pytest.fixture(scope="module")
def tiny_net(canon_views):
  """A width-8 deblurring net with random weights and a random tail rescaled so its logits have
  zero mean and unit spread on the Canon image: the output then spans (0, 1) without saturating
  (a saturated sigmoid, or the zero tail of a fresh net, would hide tiling errors)."""
  config = networks.model_config(width=8, branch_capacities=(1, 4, 4, 4))
  model = networks.build("deblur", config)
  params = networks.init_params("deblur", config, jax.random.key(0))
  kernel = jax.random.normal(jax.random.key(1), params["tail"]["kernel"].shape)
  params = dict(params, tail={"kernel": kernel, "bias": jnp.zeros(3)})
  views = jnp.asarray(images.to_float(np.concatenate(canon_views, -1)))[None]
  capture = jax.jit(lambda p, v: model.apply({"params": p}, v, capture_intermediates=True, mutable=["intermediates"]))
  logits = capture(params, views)[1]["intermediates"]["tail"]["__call__"][0]
  mean, spread = float(logits.mean()), float(logits.std())
  params["tail"] = {"kernel": kernel / spread, "bias": jnp.full(3, -mean / spread)}
  return params, config


def test_tile_starts_step_by_tile_minus_overlap_and_shift_the_last_inward():
  assert inference.tile_starts(768, 256, 64) == [0, 192, 384, 512]
  assert inference.tile_starts(512, 256, 64) == [0, 192, 256]
  assert inference.tile_starts(256, 256, 64) == [0]
  assert inference.tile_starts(100, 256, 64) == [0]


@pytest.mark.parametrize("size, tile, overlap, ramp", [(768, 256, 64, 32), (520, 256, 160, 32), (300, 64, 16, 16),
                                                       (100, 40, 0, 0)])
def test_blend_weights_are_a_partition_of_unity_that_hands_over_inside_the_overlap(size, tile, overlap, ramp):
  starts = inference.tile_starts(size, tile, overlap)
  weights = inference.blend_weights(starts, tile, ramp)
  total = np.zeros(size)
  for start, weight in zip(starts, weights):
    total[start:start + tile] += weight
  np.testing.assert_allclose(total, 1.0, atol=1e-6)
  previous_end = -np.inf
  for k in range(len(starts) - 1):
    # Tile k hands over to tile k + 1 within `ramp` px of the middle of their overlap.
    middle = (starts[k + 1] + starts[k] + tile) / 2
    position = starts[k] + np.arange(tile) + 0.5
    assert np.all(weights[k][(position > previous_end) & (position < middle - ramp / 2)] > 0.999)
    assert np.all(weights[k][position > middle + ramp / 2] == 0.0)
    assert np.all(np.diff(weights[k][position >= middle - ramp / 2]) <= 1e-7)  # falls monotonically
    previous_end = middle + ramp / 2


@pytest.mark.parametrize("shape, tile, overlap, align, batch_size", [((37, 53, 2), 16, 8, 1, 3),
                                                                     ((50, 70, 3), 32, 16, 16, 2),
                                                                     ((20, 24, 1), 64, 16, 16, 1)])
def test_a_pixelwise_function_is_reproduced_exactly_with_one_tile_shape(shape, tile, overlap, align, batch_size):
  image = np.random.default_rng(0).random(shape).astype(np.float32)
  seen = set()

  def fn(tiles):
    seen.add(tiles.shape)
    return np.concatenate([2 * tiles + 1, tiles ** 2], axis=-1)

  out = inference.tiled_apply(fn, image, tile, overlap, align=align, batch_size=batch_size)
  np.testing.assert_allclose(out, np.concatenate([2 * image + 1, image ** 2], -1), rtol=1e-6, atol=1e-6)
  assert len(seen) == 1


def test_a_local_filter_is_reproduced_where_tiles_hand_over_beyond_its_reach():
  image = np.random.default_rng(1).random((90, 130, 1)).astype(np.float32)
  box = lambda x: ndimage.uniform_filter(x, (5, 5), mode="constant")  # reach 2 px, zeros outside
  fn = lambda tiles: np.stack([box(t[..., 0])[..., None] for t in tiles])
  # Overlap 32 with an 8 px hand-over: blended pixels lie >= 12 px inside both tiles.
  out = inference.tiled_apply(fn, image, tile=48, overlap=32, ramp=8)
  np.testing.assert_allclose(out[..., 0], box(image[..., 0]), atol=1e-6)
  # A hard cut at the tile border instead shows the tiles' zero padding as seams.
  cut = inference.tiled_apply(fn, image, tile=48, overlap=0, ramp=0)
  assert np.abs(cut[..., 0] - box(image[..., 0])).max() > 0.1


def test_progress_and_max_tiles():
  image = np.ones((64, 96, 1), np.float32)
  counts = []
  inference.tiled_apply(lambda t: t, image, tile=32, overlap=16, batch_size=2, progress=counts.append)
  layout = inference.tile_layout(64, 96, 32, 16)
  assert sum(counts) == layout.num_tiles == 3 * 5
  part = inference.tiled_apply(lambda t: t, image, tile=32, overlap=16, max_tiles=1)
  assert part[:8, :8].min() == 1.0 and part[40:].max() == 0.0


@pytest.mark.parametrize("tile, overlap, align", [(32, 32, 1), (-16, 0, 1), (40, 16, 16), (48, 8, 16)])
def test_bad_tilings_are_refused(tile, overlap, align):
  with pytest.raises(ValueError, match="tile"):
    inference.tile_layout(100, 100, tile, overlap, align)


def seam_bands(layout, height, width, ramp, half_width=8):
  """Masks of the bands along the tile borders inside the image and along the hand-overs."""
  borders = np.zeros((height, width), bool)
  handovers = np.zeros((height, width), bool)
  for starts, size, axis, extent in ((layout.starts_y, layout.tile_shape[0], 0, height),
                                     (layout.starts_x, layout.tile_shape[1], 1, width)):
    view = lambda m, lo, hi: m[max(lo, 0):hi] if axis == 0 else m[:, max(lo, 0):hi]
    for k, start in enumerate(starts):
      for edge in (start, start + size):
        if 0 < edge < extent:
          view(borders, edge - half_width, edge + half_width)[...] = True
      if k + 1 < len(starts):
        middle = (starts[k + 1] + start + size) // 2
        half = max(ramp // 2, half_width)
        view(handovers, middle - half, middle + half)[...] = True
  return borders, handovers


def test_tiled_deblurring_matches_untiled_on_a_real_canon_image_without_seams(canon_views, tiny_net):
  params, config = tiny_net
  views = np.concatenate(canon_views, -1)
  height, width = views.shape[:2]
  model = networks.build("deblur", config)
  untiled = np.asarray(jax.jit(model.apply)({"params": params}, jnp.asarray(images.to_float(views))[None]))[0]
  deblurrer = inference.Deblurrer(params, config, coc_source="none", tile=384, overlap=160)
  tiled = deblurrer.restore(views)
  assert tiled.shape == untiled.shape and untiled.std() > 0.15  # a spread-out output, not saturated
  psnr = 10 * np.log10(1.0 / np.mean((tiled - untiled) ** 2))
  assert psnr >= 40.0, psnr  # measured: 92.4 dB (62.4 dB with a 64 px overlap)

  layout = inference.tile_layout(height, width, 384, 160, inference.NET_MULTIPLE)
  assert layout.num_tiles == 6
  error = np.abs(tiled - untiled).mean(-1)
  borders, handovers = seam_bands(layout, height, width, inference.DEFAULT_RAMP)
  elsewhere = error[~(borders | handovers)].mean()
  # No seams: along tile borders and hand-overs the error is no worse than elsewhere (measured
  # ratios 1.06 and 0.96; the tolerance allows for the tile-to-tile spread of the error).
  assert error[borders].mean() <= 1.2 * elsewhere
  assert error[handovers].mean() <= 1.2 * elsewhere

  # The check has teeth: pasting tiles with no overlap leaves seams it catches.
  cut = inference.Deblurrer(params, config, coc_source="none", tile=384, overlap=0).restore(views)
  cut_error = np.abs(cut - untiled).mean(-1)
  cut_borders, _ = seam_bands(inference.tile_layout(height, width, 384, 0, 16), height, width, 0)
  assert cut_error[cut_borders].mean() > 3 * cut_error[~cut_borders].mean()


def test_tiled_classical_coc_matches_the_untiled_search(canon_views, tiny_net):
  params, config = tiny_net
  # Two 256-wide tiles overlapping by exactly COC_SEARCH_OVERLAP: the closest case.
  left, right = (v[150:350, 200:200 + 256 + inference.COC_SEARCH_OVERLAP] for v in canon_views)
  deblurrer = inference.Deblurrer(params, config, coc_source="search", tile=256)
  tiled = deblurrer.estimate_coc(np.concatenate([left, right], -1))
  untiled, _ = coc_search.estimate_coc(left, right)
  assert tiled.shape == (*untiled.shape, 1)
  error = np.abs(tiled[..., 0] - untiled)
  # Tile and image use different FFT sizes, so rounding flips a few near-tie pixels anywhere
  # (measured: mean 0.0005 px, 0.1% of pixels off by > 0.1 px); the hand-over adds nothing.
  assert error.mean() < 0.002 and (error > 0.1).mean() < 0.005
  middle = (128 + 256) // 2
  handover = error[:, middle - 16:middle + 16]
  assert handover.mean() <= np.delete(error, np.s_[middle - 16:middle + 16], axis=1).mean()


def test_branch_index_follows_the_defocus_masks():
  coc = np.random.default_rng(2).normal(0.0, 5.0, (1, 40, 50, 3)).astype(np.float32)
  for thresholds in (masks.RELEASED_THRESHOLDS, (0.5, 2.0, 3.0, 9.0)):
    one_hot = np.asarray(masks.defocus_masks(jnp.asarray(coc), thresholds))[0]
    expected = np.where(one_hot.any(-1), one_hot.argmax(-1), -1)
    np.testing.assert_array_equal(inference.branch_index(coc[0], thresholds), expected)


def test_single_channel_and_16_bit_pairs_go_through_the_rgb_net(canon_views, tiny_net):
  params, config = tiny_net
  model = networks.build("deblur", config)
  grey_left, grey_right = (images.from_float(images.to_float(v[:48, :80]).mean(-1, keepdims=True), 16)
                           for v in canon_views)
  result = inference.Deblurrer(params, config, coc_source="search")(grey_left, grey_right)
  rgb = np.concatenate([np.repeat(images.to_float(v), 3, -1) for v in (grey_left, grey_right)], -1)
  expected = np.asarray(jax.jit(model.apply)({"params": params}, rgb[None]))[0].mean(-1, keepdims=True)
  assert result.restored.shape == (48, 80, 1) and result.coc.shape == (48, 80, 1)
  np.testing.assert_allclose(result.restored, expected, atol=2e-5)
  np.testing.assert_array_equal(result.branches, inference.branch_index(result.coc, masks.RELEASED_THRESHOLDS))


def test_bfloat16_compute_stays_close_to_float32(canon_views, tiny_net):
  params, config = tiny_net
  left, right = (v[:64, :96] for v in canon_views)
  runs = [inference.Deblurrer(params, config, coc_source="none", compute_dtype=dtype)(left, right).restored
          for dtype in ("float32", "bfloat16")]
  difference = np.abs(runs[0] - runs[1])
  assert 0 < difference.mean() < 0.02, difference.mean()
