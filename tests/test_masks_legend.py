"""The masks' and COC map's legends: the report's HTML ones, and the band under `bambnet deblur`'s
masks image, which stays whole on small images.

64 x 64 scenes (configs/quickstart.py) used to show "bran" of every label: the text was drawn
on one line whatever the image's width. The report shows the masks without that band and writes
its legends as HTML text beside the images.
"""

import re

import numpy as np
import pytest

from bambnet_jax.commands import coc as coc_command
from bambnet_jax.commands import deblur
from bambnet_jax.commands import inference
from bambnet_jax.commands import report_figures

BACKGROUND = 32
SHARES = [0.1, 0.2, 0.3, 0.35, 0.05]  # per branch, then untinted
THRESHOLDS = {"from zero": [0.0, 1.0, 2.0, 3.0], "untinted below r_1": [0.5, 1.25, 12.5, 24.0]}


def _text_ink(band):
  """Summed brightness of the grey (text) pixels over the background; swatches are coloured."""
  band = band.astype(np.int64)
  grey = (band[..., 0] == band[..., 1]) & (band[..., 1] == band[..., 2])
  return np.where(grey, band[..., 0] - BACKGROUND, 0).clip(0).sum()


@pytest.mark.parametrize("thresholds", THRESHOLDS.values(), ids=THRESHOLDS.keys())
@pytest.mark.parametrize("width", [24, 32, 48, 64, 100, 200, 768, 3000])
def test_every_label_and_swatch_is_inside_the_band(width, thresholds):
  band = deblur.legend_band(width, thresholds, SHARES)
  assert band.dtype == np.uint8 and band.shape[1] == width and band.shape[2] == 3
  # Text cut off at an edge would leave glyph pixels in the outermost rows or columns.
  for edge in (band[:, :2], band[:, -2:], band[:1], band[-1:]):
    assert (edge == BACKGROUND).all()
  for colour in deblur.BRANCH_COLOURS[:len(thresholds)]:
    assert (band == colour).all(-1).sum() >= 9  # at least a 3 x 3 swatch per branch


@pytest.mark.parametrize("thresholds", THRESHOLDS.values(), ids=THRESHOLDS.keys())
@pytest.mark.parametrize("width", [64, 100])
def test_narrow_bands_wrap_the_same_text_at_the_same_size(width, thresholds):
  # Up to 480 px the font size is the same (rows of 12 px), and 480 px holds each label on one
  # line: wrapping must move glyphs, never drop or shrink them.
  wide = deblur.legend_band(480, thresholds, SHARES)
  narrow = deblur.legend_band(width, thresholds, SHARES)
  assert narrow.shape[0] > wide.shape[0]
  assert _text_ink(narrow) == pytest.approx(_text_ink(wide), rel=0.01)


def test_wide_images_keep_one_line_per_label():
  band = deblur.legend_band(768, THRESHOLDS["untinted below r_1"], SHARES)
  line = band.shape[0] / 5  # four branches and the untinted share, one line each
  assert 19 <= line <= 24  # about width / 40 px, as before the wrapping


def test_masks_overlay_of_a_64_pixel_scene_keeps_its_width_and_puts_the_legend_below():
  rng = np.random.default_rng(0)
  base = rng.uniform(size=(64, 64, 3)).astype(np.float32)
  branches = rng.integers(-1, 4, size=(64, 64))
  thresholds = THRESHOLDS["untinted below r_1"]
  out = deblur.masks_overlay(base, branches, thresholds)
  shares = [np.mean(branches == i) for i in range(4)] + [np.mean(branches == -1)]
  # The scene keeps its pixels' places (the report shows it beside the input), the band is below.
  assert out.shape[1] == 64
  np.testing.assert_array_equal(out[64:], deblur.legend_band(64, thresholds, shares))


@pytest.mark.parametrize("thresholds", THRESHOLDS.values(), ids=THRESHOLDS.keys())
def test_html_masks_legend_names_each_branch_range_in_its_colour(thresholds):
  legend = report_figures.masks_legend_html(thresholds, SHARES)
  assert "<img" not in legend
  rows = re.findall(r"<li><span class='swatch' style='background:([^']*)'></span>([^<]*)</li>", legend)
  r = thresholds
  expected = [f"branch {i + 1}: {r[i]:g} &le; blur &lt; {r[i + 1]:g} px ({100 * SHARES[i]:.0f}%)" for i in range(3)]
  expected.append(f"branch 4: blur &ge; {r[3]:g} px (35%)")  # the last branch is open above
  if r[0] > 0:  # pixels below r_1 belong to no branch
    expected.append(f"untinted: blur &lt; {r[0]:g} px (5%)")
  assert [text for _, text in rows] == expected
  assert [colour for colour, _ in rows[:4]] == [f"rgb({r},{g},{b})" for r, g, b in deblur.BRANCH_COLOURS[:4]]


def test_branch_shares_match_the_masks_image():
  rng = np.random.default_rng(1)
  coc = rng.uniform(-4.0, 4.0, size=(48, 64, 3)).astype(np.float32)
  thresholds = THRESHOLDS["untinted below r_1"]
  branches = inference.branch_index(coc, thresholds)
  shares = deblur.pixel_shares(branches, len(thresholds))
  # The masks image's own band is drawn from the same shares.
  overlay = deblur.masks_overlay(np.zeros((48, 64, 3), np.float32), branches, thresholds)
  np.testing.assert_array_equal(overlay[48:], deblur.legend_band(64, thresholds, shares))
  assert shares.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("vmax", [1.0, 3.25, 24.0])
def test_html_coc_scale_is_the_colour_map_from_minus_to_plus_vmax(vmax):
  legend = report_figures.coc_legend_html(vmax)
  assert "<img" not in legend
  stops = [tuple(map(int, s)) for s in re.findall(r"rgb\((\d+),(\d+),(\d+)\)", legend)]
  ends = coc_command.colour_map(np.array([[-vmax, 0.0, vmax]]), vmax)[0]
  assert stops[0] == tuple(ends[0]) and stops[len(stops) // 2] == tuple(ends[1]) and stops[-1] == tuple(ends[2])
  assert f"&minus;{vmax:.2f} px" in legend and f"+{vmax:.2f} px" in legend
