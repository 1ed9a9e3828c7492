"""Raw DP views as phones give them: black/white levels, per-view vignetting and flat fields, for
`bambnet coc` and `bambnet deblur`."""

import json
import pathlib

import numpy as np
import pytest

from bambnet_jax import cli
from bambnet_jax.io import images
from test_deblur_cli import apply_net
from test_deblur_cli import make_weights

REAL_DP_DIR = pathlib.Path(__file__).parent / "data" / "real_dp" / "canon_r6m2_flat"
BLACK, WHITE = 1024, 16383  # a 14-bit sensor in a 16-bit container
VIGNETTING = 0.15  # how much darker each view is at its dim edge than at its bright one


def vignetting(height, width, side):
  """Complementary DP vignetting: L bright on the left, R on the right, and a shared radial fall-off."""
  x = np.linspace(0.0, 1.0, width)[None, :]
  ramp = 1.0 - VIGNETTING * (x if side == "l" else 1.0 - x)
  yy, xx = np.linspace(-1.0, 1.0, height)[:, None], np.linspace(-1.0, 1.0, width)[None, :]
  return (ramp * (1.0 - 0.05 * (xx**2 + yy**2)))[..., None]


def raw_values(unit):
  """[0, 1] values stored as the sensor would: BLACK + unit * (WHITE - BLACK) in uint16."""
  return np.rint(BLACK + np.clip(unit, 0.0, 1.0) * (WHITE - BLACK)).astype(np.uint16)


def canon_views(scene, top=100, left=200, size=256):
  """A crop of a real Canon pair (8-bit sRGB), float in [0, 1]."""
  folder = REAL_DP_DIR / scene / "f4"
  return [images.to_float(images.read_image(folder / n))[top:top + size, left:left + size] for n in ("l.png", "r.png")]


def write_raw_pair(folder, views, seed=0):
  """The views' green channel as a vignetted raw pair, l.png and r.png, and its flat-field pair
  (beside the folder: in it, a folder run would take them for a capture)."""
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  height, width = views[0].shape[:2]
  flats = []
  for side, view in zip("lr", views):
    shading = vignetting(height, width, side)
    images.write_png(folder / f"{side}.png", raw_values(view[..., 1:2] * shading))
    noisy = 0.8 * shading * (1.0 + 0.01 * rng.standard_normal((height, width, 1)))  # 1% sensor noise
    flats.append(folder.parent / f"{folder.name}_flat_{side}.png")
    images.write_png(flats[-1], raw_values(noisy))
  return folder / "l.png", folder / "r.png", flats


def run_coc(left, right, out, *options):
  assert cli.main(["coc", "--left", str(left), "--right", str(right), "--output-dir", str(out), *map(str, options)]) == 0
  return np.load(out / "coc.npy")


# (a) The level mapping, against NumPy.


def test_levels_map_to_unit_with_clipping_as_numpy_computes_it():
  rng = np.random.default_rng(0)
  raw = rng.integers(0, 2**16, (40, 50, 1), dtype=np.uint16)
  raw[0, :3, 0] = (BLACK - 1, BLACK, WHITE + 1)
  expected = np.clip((raw.astype(np.float64) - BLACK) / (WHITE - BLACK), 0.0, 1.0)
  unit = images.raw_to_unit(raw, BLACK, WHITE)
  assert unit.dtype == np.float32 and unit.shape == raw.shape
  np.testing.assert_allclose(unit, expected, atol=1e-6)
  assert unit[0, 0, 0] == 0.0 and unit[0, 1, 0] == 0.0 and unit[0, 2, 0] == 1.0
  levels = images.RawLevels(BLACK, WHITE)
  np.testing.assert_array_equal(levels.to_unit(raw), unit)
  # Back into the sensor's encoding: the values between the levels survive exactly.
  np.testing.assert_array_equal(levels.from_unit(unit, np.uint16), np.clip(raw, BLACK, WHITE))
  np.testing.assert_array_equal(images.RawLevels.full_range(raw).to_unit(raw), images.to_float(raw))


@pytest.mark.parametrize("black, white, problem", [
    (1024, 1024, "must be above the black level"), (2000, 1000, "must be above the black level"),
    (-1, 100, "black level must be >= 0"), (0, float("nan"), "finite number"), ("64", 1023, "finite number")])
def test_bad_levels_are_refused(black, white, problem):
  with pytest.raises(ValueError, match=problem):
    images.RawLevels(black, white)


def test_flat_field_gains_flatten_a_vignetted_flat_field():
  height, width = 120, 160
  rng = np.random.default_rng(1)
  shading = {side: vignetting(height, width, side) for side in "lr"}
  flats = [raw_values(0.7 * shading[s] * (1.0 + 0.01 * rng.standard_normal((height, width, 1)))) for s in "lr"]
  gains = images.flat_field_gains(*flats, BLACK, WHITE)
  # The product of gain and shading is one constant for both views: the pair's mean brightness.
  corrected = [g * 0.7 * shading[s] for g, s in zip(gains, "lr")]
  mean = np.mean([c.mean() for c in corrected])
  assert abs(mean - 0.7 * np.mean([shading[s].mean() for s in "lr"])) < 2e-3
  for c in corrected:
    assert np.abs(c[16:-16, 16:-16] / mean - 1.0).max() < 5e-3  # noise averaged out, shape kept
    assert np.abs(c / mean - 1.0).max() < 0.015  # the reflected borders bend the steep corners a little

  with pytest.raises(ValueError, match="over-exposed"):
    images.flat_field_gains(np.full((20, 20, 1), WHITE, np.uint16), flats[1][:20, :20], BLACK, WHITE)
  with pytest.raises(ValueError, match="too dark"):
    images.flat_field_gains(np.full((20, 20, 1), BLACK + 10, np.uint16), flats[1][:20, :20], BLACK, WHITE)
  half_dark = raw_values(np.where(np.arange(width) < width // 2, 0.8, 0.0)[None, :, None] * np.ones((height, 1, 1)))
  with pytest.raises(ValueError, match="not uniform"):
    images.flat_field_gains(half_dark, flats[1], BLACK, WHITE)


# (b) Acceptance: the real Canon pairs' COC survives raw encoding and vignetting.


@pytest.mark.parametrize("scene, sign", [("0600", 1.0), ("1500", -1.0)])  # in front of focus, behind it
def test_raw_vignetted_pair_with_flat_field_gives_the_original_coc(tmp_path, scene, sign):
  views = canon_views(scene)
  paths = []
  for side, view in zip("lr", views):  # the full-range 16-bit RGB original
    paths.append(tmp_path / "rgb" / f"{side}.png")
    images.write_png(paths[-1], images.from_float(view, 16))
  original = np.median(run_coc(*paths, tmp_path / "out_rgb"))

  left, right, flats = write_raw_pair(tmp_path / "raw", views)
  levels = ("--black-level", BLACK, "--white-level", WHITE)
  raw = np.median(run_coc(left, right, tmp_path / "out_raw", *levels,
                          "--flat-field-left", flats[0], "--flat-field-right", flats[1]))
  assert np.sign(original) == np.sign(raw) == sign and abs(original) > 1.0
  assert abs(raw - original) < 0.5, (original, raw)
  # Without the flat field, the views' opposite vignetting swamps the defocus cue.
  uncorrected = np.median(run_coc(left, right, tmp_path / "out_vignetted", *levels))
  assert abs(uncorrected - original) > 2.0, (original, uncorrected)


# (c) `bambnet deblur` on raw views.


def test_deblur_restores_raw_views_in_their_own_levels(tmp_path):
  weights = tmp_path / "weights"
  params_config = make_weights(weights, "deblur", 0.05)
  views = canon_views("0600", size=128)
  captures = tmp_path / "captures"
  left, right, flats = write_raw_pair(captures / "shot", views)
  flats = [f.rename(tmp_path / f.name) for f in flats]
  (captures / images.SIDECAR_NAME).write_text(json.dumps({"black_level": BLACK, "white_level": WHITE}))
  out = tmp_path / "out"
  flat_args = ["--flat-field-left", str(flats[0]), "--flat-field-right", str(flats[1])]
  # A folder run: the sidecar at the folder's top applies to the capture folder below it.
  assert cli.main(["deblur", "--no-progress", "--input-dir", str(captures), "--output-dir", str(out),
                   "--weights", str(weights), *flat_args]) == 0
  restored = images.read_image(out / "shot_restored.png")
  assert restored.shape == (128, 128, 1) and restored.dtype == np.uint16
  assert restored.min() >= BLACK and restored.max() <= WHITE and restored.std() > 100
  assert np.isfinite(np.load(out / "shot_coc.npy")).all()

  # Levels alone: the restored image is the net on the NumPy-mapped views, back in raw levels.
  assert cli.main(["deblur", "--no-progress", "--left", str(left), "--right", str(right), "--output-dir",
                   str(tmp_path / "single"), "--weights", str(weights), "--coc", "none",
                   "--black-level", str(BLACK), "--white-level", str(WHITE)]) == 0
  raw = [images.read_image(p) for p in (left, right)]
  unit = [np.clip((r.astype(np.float64) - BLACK) / (WHITE - BLACK), 0, 1).astype(np.float32) for r in raw]
  expected = raw_values(apply_net(params_config, "deblur", *unit).mean(-1, keepdims=True))
  single = images.read_image(tmp_path / "single" / "shot_restored.png")
  assert np.abs(single.astype(int) - expected.astype(int)).max() <= 2  # float32 vs 14-bit rounding


# (d) Sidecar and flags, and the errors that name the file.


def test_sidecar_levels_are_read_and_flags_override_them(tmp_path):
  folder = tmp_path / "pair"
  folder.mkdir()
  sidecar = folder / images.SIDECAR_NAME
  assert images.raw_levels(folder) is None and images.raw_levels(folder, 64, 1023) == images.RawLevels(64, 1023)
  sidecar.write_text(json.dumps({"black_level": BLACK, "white_level": WHITE}))
  assert images.raw_levels(folder) == images.RawLevels(BLACK, WHITE)
  assert images.raw_levels(folder, black=512) == images.RawLevels(512, WHITE)
  assert images.raw_levels(folder, 64, 1023) == images.RawLevels(64, 1023)
  nested = folder / "a" / "b"
  nested.mkdir(parents=True)
  assert images.raw_levels(nested) is None  # only the pair's folder, unless a root is given
  assert images.raw_levels(nested, root=folder) == images.RawLevels(BLACK, WHITE)

  for record, problem in (({"black_level": BLACK}, "white_level missing"),
                          ({"black": BLACK, "white_level": WHITE}, "unknown key"),
                          ({"black_level": 2 * WHITE, "white_level": WHITE}, "must be above the black level"),
                          ([BLACK, WHITE], "JSON object")):
    sidecar.write_text(json.dumps(record))
    with pytest.raises(images.ImageError, match=problem) as error:
      images.raw_levels(folder)
    assert error.value.path == str(sidecar)
  sidecar.write_text("{black_level: 1024")
  with pytest.raises(images.ImageError, match="unreadable"):
    images.raw_levels(folder)
  with pytest.raises(images.ImageError, match="--black-level/--white-level: .*above the black level"):
    images.raw_levels(tmp_path, 100, 50)

  # Through the command: the sidecar's levels, and a flag over a wrong sidecar value, give the
  # map that flags alone give.
  views = canon_views("1500", size=64)
  left, right, _ = write_raw_pair(tmp_path / "flags", views)
  with_flags = run_coc(left, right, tmp_path / "out_flags", "--black-level", BLACK, "--white-level", WHITE)
  left, right, _ = write_raw_pair(folder, views)
  sidecar.write_text(json.dumps({"black_level": BLACK, "white_level": WHITE}))
  np.testing.assert_array_equal(run_coc(left, right, tmp_path / "out_sidecar"), with_flags)
  sidecar.write_text(json.dumps({"black_level": BLACK, "white_level": 65535}))
  np.testing.assert_array_equal(run_coc(left, right, tmp_path / "out_override", "--white-level", WHITE), with_flags)
  assert not np.array_equal(run_coc(left, right, tmp_path / "out_wrong"), with_flags)


def test_bad_raw_inputs_exit_2_naming_the_file(tmp_path, capsys):
  left, right, flats = write_raw_pair(tmp_path / "pair", canon_views("0600", size=48))
  pair = ["coc", "--left", str(left), "--right", str(right), "--output-dir", str(tmp_path / "out")]
  levels = ["--black-level", str(BLACK), "--white-level", str(WHITE)]
  cases = [
      (["--black-level", "2000", "--white-level", "1000"], "--black-level/--white-level: the white level"),
      (["--black-level", str(BLACK)], "white_level missing"),
      (["--black-level", str(WHITE), "--white-level", "20000"], "l.png: every pixel is at or below the black level"),
      (["--black-level", "0", "--white-level", "70000"], "l.png: white level 70000 above the largest 16-bit value"),
      (levels + ["--flat-field-left", str(flats[0])], "give both --flat-field-left and --flat-field-right"),
      (levels + ["--flat-field-left", str(flats[0]), "--flat-field-right", str(tmp_path / "none.png")],
       "none.png: file not found"),
  ]
  small = tmp_path / "small.png"
  images.write_png(small, images.read_image(flats[1])[:40])
  cases.append((levels + ["--flat-field-left", str(flats[0]), "--flat-field-right", str(small)],
                "small.png: flat field of shape (40, 48, 1) does not fit views of shape (48, 48, 1)"))
  saturated = tmp_path / "saturated.png"
  images.write_png(saturated, np.full((48, 48, 1), WHITE, np.uint16))
  cases.append((levels + ["--flat-field-left", str(saturated), "--flat-field-right", str(flats[1])],
                "saturated.png: over-exposed flat field"))
  floats = [tmp_path / "f_L.npy", tmp_path / "f_R.npy"]
  for path in floats:
    np.save(path, np.full((8, 8, 1), 0.5, np.float32))
  cases.append((levels, "f_L.npy: raw levels apply to integer pixels"))
  for options, message in cases:
    argv = pair if "f_L.npy" not in message else ["coc", "--left", str(floats[0]), "--right", str(floats[1]),
                                                  "--output-dir", str(tmp_path / "out")]
    assert cli.main(argv + options) == 2, message
    assert message in capsys.readouterr().err
  assert not (tmp_path / "out").exists()


def test_the_coc_network_takes_single_channel_raw_views(tmp_path):
  params_config = make_weights(tmp_path / "weights", "coc", 0.1)
  left, right, _ = write_raw_pair(tmp_path / "pair", canon_views("0600", size=64))
  coc = run_coc(left, right, tmp_path / "out", "--weights", tmp_path / "weights",
                "--black-level", BLACK, "--white-level", WHITE)
  unit = [np.clip((images.read_image(p) - float(BLACK)) / (WHITE - BLACK), 0, 1).astype(np.float32) for p in (left, right)]
  np.testing.assert_allclose(coc, apply_net(params_config, "coc", *unit).mean(-1), atol=1e-4)  # replicated to RGB
