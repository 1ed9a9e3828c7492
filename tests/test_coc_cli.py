"""`bambnet coc`: files written, their contents, and errors, on pairs rendered here from SPEC 3."""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from bambnet_jax import cli
from bambnet_jax.commands import coc as coc_command
from bambnet_jax.io import images

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import dp_reference  # pylint: disable=g-import-not-at-top,wrong-import-position

HEIGHT, WIDTH = 64, 80


def write_pair(folder, b, seed=0):
  """16-bit PNGs of a textured plane at signed COC b (L = S * PSF, R = S * mirrored PSF)."""
  rng = np.random.default_rng(seed)
  margin = 30
  noise = rng.random((HEIGHT + 2 * margin, WIDTH + 2 * margin, 3))
  sharp = sum(ndimage.gaussian_filter(noise, (s, s, 0)) * s for s in (1, 3))
  sharp = (sharp - sharp.min()) / (sharp.max() - sharp.min())
  psf = dp_reference.spec_left_psf(b)
  paths = []
  for name, kernel in (("l.png", psf), ("r.png", psf[:, ::-1])):
    view = np.stack([ndimage.convolve(sharp[..., c], kernel, mode="constant") for c in range(3)], -1)
    images.write_png(folder / name, images.from_float(view[margin:-margin, margin:-margin], 16))
    paths.append(folder / name)
  return paths


@pytest.mark.parametrize("b", [2.3, -3.6])
def test_search_writes_the_signed_map_and_a_diverging_png(tmp_path, capsys, b):
  left, right = write_pair(tmp_path, b)
  out = tmp_path / "out"
  assert cli.main(["coc", "--left", str(left), "--right", str(right), "--output-dir", str(out)]) == 0
  assert "coc.npy" in capsys.readouterr().out
  coc = np.load(out / "coc.npy")
  assert coc.shape == (HEIGHT, WIDTH) and coc.dtype == np.float32
  assert np.median(coc[12:-12, 12:-12]) == pytest.approx(b, abs=0.05)
  png = images.read_image(out / "coc.png")
  assert png.shape == (HEIGHT, WIDTH, 3) and png.dtype == np.uint8
  red, blue = png[12:-12, 12:-12, 0].astype(int), png[12:-12, 12:-12, 2].astype(int)
  # Red in front of the focal plane (b > 0), blue behind it.
  assert np.median(red - blue) * np.sign(b) > 50
  # The documented scale: matplotlib's RdBu_r over +-(99th percentile of |COC|, at least 1 px).
  from matplotlib import colormaps
  vmax = max(1.0, np.percentile(np.abs(coc), 99))
  expected = colormaps["RdBu_r"](np.clip((coc + vmax) / (2 * vmax), 0, 1), bytes=True)[..., :3]
  assert np.abs(png.astype(int) - expected).max() <= 1


def test_per_channel_writes_three_maps(tmp_path):
  left, right = write_pair(tmp_path, 1.5)
  out = tmp_path / "out"
  assert cli.main(["coc", "--left", str(left), "--right", str(right), "--output-dir", str(out),
                   "--per-channel"]) == 0
  coc = np.load(out / "coc.npy")
  assert coc.shape == (HEIGHT, WIDTH, 3)
  np.testing.assert_allclose(np.median(coc[12:-12, 12:-12], axis=(0, 1)), 1.5, atol=0.05)


def test_bad_inputs_give_one_line_and_exit_code_2(tmp_path, capsys):
  left, _ = write_pair(tmp_path, 1.0)
  small = tmp_path / "small.png"
  images.write_png(small, np.zeros((HEIGHT, WIDTH // 2, 3), np.uint16))
  args = ["coc", "--left", str(left), "--output-dir", str(tmp_path / "out")]
  assert cli.main(args + ["--right", str(small)]) == 2
  assert "small.png" in capsys.readouterr().err
  assert cli.main(args + ["--right", str(tmp_path / "missing.png")]) == 2
  assert "missing.png" in capsys.readouterr().err
  assert cli.main(args + ["--right", str(left), "--weights", str(tmp_path / "no_weights")]) == 2
  assert not (tmp_path / "out" / "coc.npy").exists()
  with pytest.raises(SystemExit):  # --method and --weights are alternatives
    cli.main(args + ["--right", str(left), "--method", "search", "--weights", "w"])


def test_weights_run_the_coc_network(tmp_path):
  from bambnet_jax.io import weights as weights_io
  from bambnet_jax.models import networks
  config = networks.model_config(width=8, branch_capacities=(1, 4))
  params = networks.init_params("coc", config, jax.random.key(0))
  weights = tmp_path / "weights"
  weights_io.save_weights(weights, params, "coc", config)
  left, right = write_pair(tmp_path, 2.0)
  for per_channel in (False, True):
    out = tmp_path / f"out{per_channel}"
    coc_command.run_coc(left, right, out, weights=weights, per_channel=per_channel)
    coc = np.load(out / "coc.npy")
    views = np.concatenate([images.to_float(images.read_image(p)) for p in (left, right)], -1)
    expected = networks.build("coc", config).apply({"params": params}, jnp.asarray(views)[None])[0]
    expected = np.asarray(expected if per_channel else expected.mean(-1))
    np.testing.assert_allclose(coc, expected, rtol=1e-5, atol=1e-4)  # jit vs eager rounding
