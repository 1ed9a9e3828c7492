"""`bambnet deblur`: outputs on a real Canon pair and on mixed folders, and bad inputs."""

import errno
import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bambnet_jax.io import weights as weights_io
from bambnet_jax import cli
from bambnet_jax.commands import deblur
from bambnet_jax.io import files
from bambnet_jax.io import images
from bambnet_jax.models import masks
from bambnet_jax.models import networks

REAL_DP_DIR = pathlib.Path(__file__).parent / "data" / "real_dp" / "canon_r6m2_flat"
WORKDIR_THRESHOLDS = [0.0, 3.0, 6.0, 9.0, 25.0]  # r_1..r_5 as the threshold search records them
OUTPUT_KINDS = ("restored.png", "coc.npy", "coc.png", "masks.png")


def make_weights(directory, net, tail_scale):
  """Width-8 weights with a random tail scaled so the outputs spread (a fresh net's tail is zero)."""
  config = networks.model_config(width=8, branch_capacities=(1, 4, 4, 4))
  params = networks.init_params(net, config, jax.random.key(0))
  kernel = tail_scale * jax.random.normal(jax.random.key(1), params["tail"]["kernel"].shape)
  params = dict(params, tail={"kernel": kernel, "bias": jnp.zeros(3)})
  weights_io.save_weights(directory, params, net, config)
  return params, config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A training workdir as `bambnet train` leaves it: both nets' weights and the searched thresholds."""
  root = tmp_path_factory.mktemp("workdir")
  nets = {net: make_weights(root / net / "weights", net, scale) for net, scale in (("deblur", 0.05), ("coc", 0.1))}
  progress = {"finished": {"coc": {}, "search": {"thresholds": WORKDIR_THRESHOLDS, "rounds": 2}, "deblur": {}}}
  (root / "progress.json").write_text(json.dumps(progress))
  return root, nets


def run(*args):
  return cli.main(["deblur", "--no-progress", *map(str, args)])


@functools.cache
def _jitted_apply(net, config_json):
  model = networks.build(net, ml_collections.ConfigDict(json.loads(config_json)))
  return jax.jit(lambda params, views: model.apply({"params": params}, views))


def apply_net(params_config, net, left, right):
  """The network on the whole pair at once (untiled), RGB replicated from single-channel views."""
  params, config = params_config
  views = [np.repeat(images.to_float(v), 3 // v.shape[-1], -1) for v in (left, right)]
  out = _jitted_apply(net, config.to_json())(params, jnp.asarray(np.concatenate(views, -1))[None])
  return np.asarray(out[0])


def expected_overlay(left, right, coc, thresholds):
  """The tinted input, computed here independently of the command's integer blending."""
  base = images.to_float(images.from_float((images.to_float(left) + images.to_float(right)) / 2, 8))
  base = np.repeat(base, 3 // base.shape[-1], -1)
  blur = np.abs(coc).max(-1)
  out = base.copy()
  for i, r in enumerate(thresholds):
    upper = thresholds[i + 1] if i + 1 < len(thresholds) else np.inf
    inside = (blur >= r) & (blur < upper)
    out[inside] = 0.55 * base[inside] + 0.45 * deblur.BRANCH_COLOURS[i] / 255.0
  return out


def test_real_canon_pair_with_a_training_workdir(workdir, tmp_path, capsys):
  root, nets = workdir
  folder = REAL_DP_DIR / "1500" / "f4"
  left, right = images.read_dp_pair(folder / "l.png", folder / "r.png")
  out = tmp_path / "out"
  assert run("--left", folder / "l.png", "--right", folder / "r.png", "--output-dir", out, "--weights", root) == 0
  assert "restored 1 pair" in capsys.readouterr().out
  assert sorted(p.name for p in out.iterdir()) == sorted(f"f4_{kind}" for kind in OUTPUT_KINDS)

  restored = images.read_image(out / "f4_restored.png")
  assert restored.shape == (512, 768, 3) and restored.dtype == np.uint8  # the input's size and depth
  expected = images.from_float(apply_net(nets["deblur"], "deblur", left, right), 8).astype(int)
  assert np.abs(restored.astype(int) - expected).max() <= 1  # tiled vs untiled, within one level

  coc = np.load(out / "f4_coc.npy")  # the workdir's COC net: one radius per colour channel
  assert coc.shape == (512, 768, 3) and coc.dtype == np.float32
  np.testing.assert_allclose(coc, apply_net(nets["coc"], "coc", left, right), atol=1e-3)
  coc_png = images.read_image(out / "f4_coc.png")
  assert coc_png.shape == (512, 768, 3) and coc_png.dtype == np.uint8

  # Masks from the workdir's searched thresholds (r_1..r_4 of its r_1..r_5), tinted over the input.
  overlay = images.read_image(out / "f4_masks.png")
  assert overlay.shape[1] == 768 and overlay.shape[0] > 512 and overlay.dtype == np.uint8  # legend below
  thresholds = WORKDIR_THRESHOLDS[:-1]
  assert len(np.unique(np.searchsorted(thresholds, np.abs(coc).max(-1), side="right"))) >= 3
  want = expected_overlay(left, right, coc, thresholds)
  assert np.abs(images.to_float(overlay[:512]) - want).max() <= 1.5 / 255


def write_pair(folder, name, pixels_left, pixels_right, layout):
  paths = ((folder / name / "l.png", folder / name / "r.png") if layout == "folder"
           else (folder / f"{name}_L.png", folder / f"{name}_R.png"))
  for path, pixels in zip(paths, (pixels_left, pixels_right)):
    images.write_png(path, pixels)
  return paths


def canon_crop(depth, channels, size=(48, 64)):
  folder = REAL_DP_DIR / "0600" / "f4"
  views = [images.to_float(images.read_image(folder / n)[100:100 + size[0], 200:200 + size[1]]) for n in ("l.png", "r.png")]
  if channels == 1:
    views = [v[..., 1:2] for v in views]  # the green channel, as phone DP data gives
  return [images.from_float(v, depth) for v in views]


def test_a_folder_of_mixed_8_16_bit_rgb_and_single_channel_pairs(workdir, tmp_path):
  root, nets = workdir
  pairs = tmp_path / "captures"
  cases = {"a": (8, 3, "dpdd"), "b": (16, 3, "folder"), "c": (8, 1, "dpdd"), "nested/d": (16, 1, "folder"),
           "": (8, 3, "folder")}  # l.png and r.png in the input folder itself
  inputs = {}
  for name, (depth, channels, layout) in cases.items():
    inputs[name] = canon_crop(depth, channels)
    write_pair(pairs, name, *inputs[name], layout)
  out = tmp_path / "out"
  # Only the deblurring weights: the COC map comes from the classical search.
  assert run("--input-dir", pairs, "--output-dir", out, "--weights", root / "deblur" / "weights") == 0
  names = {"a": "a", "b": "b", "c": "c", "nested/d": "nested_d", "": "captures"}
  assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}_{k}" for n in names.values() for k in OUTPUT_KINDS)
  for name, (depth, channels, _) in cases.items():
    stem = out / names[name]
    restored = images.read_image(f"{stem}_restored.png")
    assert restored.shape == (48, 64, channels) and images.bit_depth_of(restored) == depth
    expected = apply_net(nets["deblur"], "deblur", *inputs[name])
    if channels == 1:
      expected = expected.mean(-1, keepdims=True)  # the documented rule for single-channel pairs
    assert np.abs(restored.astype(int) - images.from_float(expected, depth).astype(int)).max() <= 1
    coc = np.load(f"{stem}_coc.npy")
    assert coc.shape == (48, 64, 1) and np.all(np.isfinite(coc))
    overlay = images.read_image(f"{stem}_masks.png")
    want = expected_overlay(*inputs[name], coc, masks.RELEASED_THRESHOLDS)  # no thresholds known
    assert overlay.shape[1] == 64 and np.abs(images.to_float(overlay[:48]) - want).max() <= 1.5 / 255


def test_bad_inputs_in_a_folder_are_listed_and_the_good_pairs_still_restored(workdir, tmp_path, capsys):
  root, _ = workdir
  pairs = tmp_path / "captures"
  good = canon_crop(8, 3)
  write_pair(pairs, "good", *good, "dpdd")
  write_pair(pairs, "size", good[0], good[1][:, :60], "dpdd")
  write_pair(pairs, "depth", good[0], canon_crop(16, 3)[1], "dpdd")
  left, _ = write_pair(pairs, "trunc", *good, "dpdd")
  left.write_bytes(left.read_bytes()[:-300])
  (pairs / "text_L.png").write_text("not pixels")
  images.write_png(pairs / "text_R.png", good[1])
  (pairs / "empty_L.png").write_bytes(b"")
  images.write_png(pairs / "empty_R.png", good[1])
  images.write_png(pairs / "lonely_L.png", good[0])
  float_view = images.to_float(good[0])
  np.save(pairs / "nan_L.npy", np.where(np.arange(64) == 5, np.nan, float_view[..., 0])[..., None])
  np.save(pairs / "nan_R.npy", float_view[..., :1])
  out = tmp_path / "out"

  assert run("--input-dir", pairs, "--output-dir", out, "--weights", root, "--coc", "search") == 2
  err = capsys.readouterr().err
  reasons = {"size_R.png": "size", "depth_R.png": "bit depth", "trunc_L.png": "truncated",
             "text_L.png": "not an image", "empty_L.png": "empty file", "lonely_L.png": "missing partner",
             "nan_L.npy": "NaN or Inf"}
  assert "7 bad input(s); 1 pair(s) restored" in err
  lines = err.splitlines()
  for file_name, reason in reasons.items():
    assert any(file_name in line and reason in line for line in lines), (file_name, err)
  # The good pair's outputs are complete; the bad ones wrote nothing, not even temporary files.
  assert sorted(p.name for p in out.iterdir()) == sorted(f"good_{kind}" for kind in OUTPUT_KINDS)


def test_single_pair_errors_name_the_file_exit_non_zero_and_write_nothing(workdir, tmp_path, capsys):
  root, _ = workdir
  good = canon_crop(16, 3)
  left, right = write_pair(tmp_path, "x", *good, "dpdd")
  out = tmp_path / "out"
  pair = ("--left", left, "--right", right, "--output-dir", out)

  assert run(*pair) == 2  # no --weights: no deblurring net, no pretend restore
  assert "--weights" in capsys.readouterr().err
  assert run("--left", left, "--right", tmp_path / "gone_R.png", "--output-dir", out, "--weights", root) == 2
  assert "gone_R.png: file not found" in capsys.readouterr().err
  small = tmp_path / "small_R.png"
  images.write_png(small, good[1][:40])
  assert run("--left", left, "--right", small, "--output-dir", out, "--weights", root) == 2
  assert "small_R.png" in capsys.readouterr().err
  inf_left, inf_right = tmp_path / "f_L.npy", tmp_path / "f_R.npy"
  np.save(inf_left, np.full((48, 64, 3), np.inf, np.float32))
  np.save(inf_right, np.zeros((48, 64, 3), np.float32))
  assert run("--left", inf_left, "--right", inf_right, "--output-dir", out, "--weights", root) == 2
  assert "f_L.npy: contains NaN or Inf" in capsys.readouterr().err
  assert run(*pair, "--weights", root, "--thresholds", "0,1,2") == 2
  assert "4 increasing thresholds" in capsys.readouterr().err
  assert run("--left", left, "--output-dir", out, "--weights", root) == 2
  assert "--left and --right" in capsys.readouterr().err
  assert run(*pair, "--weights", tmp_path / "no_such_weights") == 2
  assert "no_such_weights" in capsys.readouterr().err
  assert not out.exists()


def test_float_pairs_are_restored_as_float_arrays(workdir, tmp_path):
  root, nets = workdir
  views = [images.to_float(v) for v in canon_crop(16, 3)]
  paths = [tmp_path / "cap_L.npy", tmp_path / "cap_R.npy"]
  for path, view in zip(paths, views):
    np.save(path, view)
  out = tmp_path / "out"
  assert run("--left", paths[0], "--right", paths[1], "--output-dir", out, "--weights", root, "--coc", "none") == 0
  assert sorted(p.name for p in out.iterdir()) == ["cap_restored.npy"]
  restored = np.load(out / "cap_restored.npy")
  assert restored.dtype == np.float32
  np.testing.assert_allclose(restored, apply_net(nets["deblur"], "deblur", *views), atol=1e-5)


def test_a_failed_write_removes_the_pairs_files_already_written(workdir, tmp_path, monkeypatch, capsys):
  root, _ = workdir
  left, right = write_pair(tmp_path, "x", *canon_crop(8, 3), "dpdd")
  real_write = files.atomic_write_bytes

  def disk_full_at_the_masks(path, data):
    if str(path).endswith("_masks.png"):
      raise files.OutputWriteError(errno.ENOSPC, f"{path}: no space left on device; nothing was written")
    real_write(path, data)

  monkeypatch.setattr(files, "atomic_write_bytes", disk_full_at_the_masks)
  out = tmp_path / "out"
  assert run("--left", left, "--right", right, "--output-dir", out, "--weights", root, "--coc", "search") == 2
  assert "no space left" in capsys.readouterr().err
  assert list(out.iterdir()) == []  # restored and COC files were written first, then removed


def test_output_names_are_flat_safe_and_unique():
  assert deblur.pair_name("/data/shots/IMG_0001_L.png") == "IMG_0001"
  assert deblur.pair_name("/data/shots/garden/l.png") == "garden"
  assert deblur.safe_name("2024 trip/day 1/shot:3") == "2024_trip_day_1_shot_3"
  assert deblur.unique_names(["a_b", "a_b", "c", "a_b"]) == ["a_b", "a_b-2", "c", "a_b-3"]


def test_a_pair_that_fits_is_restored_whole_as_the_network_computes_it(workdir, tmp_path):
  """768 x 512: no tiles by default, so the output is the whole-image forward up to 16-bit rounding."""
  root, nets = workdir
  rng = np.random.default_rng(3)
  left, right = (rng.integers(0, 65536, (512, 768, 3), dtype=np.uint16) for _ in range(2))
  images.write_png(tmp_path / "pair_L.png", left)
  images.write_png(tmp_path / "pair_R.png", right)
  assert run("--left", tmp_path / "pair_L.png", "--right", tmp_path / "pair_R.png", "--weights", root,
             "--coc", "none", "--output-dir", tmp_path / "out") == 0
  restored = images.to_float(images.read_image(tmp_path / "out" / "pair_restored.png"))
  np.testing.assert_allclose(restored, apply_net(nets["deblur"], "deblur", left, right), atol=2e-5)
  assert run("--left", tmp_path / "pair_L.png", "--right", tmp_path / "pair_R.png", "--weights", root,
             "--coc", "none", "--tile", "256", "--output-dir", tmp_path / "tiled") == 0
  tiled = images.to_float(images.read_image(tmp_path / "tiled" / "pair_restored.png"))
  assert np.max(np.abs(tiled - restored)) > 2e-5  # --tile still forces tiles, which differ slightly
