"""The quickstart report renders in headless Chromium: a screenshot shows its images (issue 7).

Training is not what is tested here (tests/test_report.py runs the whole quickstart), so the
workdir is made directly: random width-8 networks, a few logged curve points, one search round
and a metrics summary. The report itself is the real one: `report.write_report` restores real
test scenes and a Canon DP crop with `bambnet deblur` and embeds every picture as a data URI.
"""

import base64
import json
import pathlib
import re
import subprocess

import cv2
import jax
import numpy as np
import pytest

from bambnet_jax.io import weights as weights_io
from bambnet_jax.io import config_files
from bambnet_jax.commands import deblur
from bambnet_jax.commands import report
from bambnet_jax.io import images
from bambnet_jax.models import networks
from bambnet_jax.training import search_plots

CHROMIUM = pathlib.Path("/usr/bin/chromium")  # Debian's package; .ci/run installs it
SMOKE_CONFIG = pathlib.Path(__file__).parent.parent / "configs" / "smoke.py"
CANON_PAIR = pathlib.Path(__file__).parent / "data" / "real_dp" / "canon_r6m2_flat" / "1500" / "f4"
WINDOW = (1280, 5000)  # width, height: the whole page (~4,000 px) with room to spare
SCENE_SIZE = 64  # as configs/quickstart.py's scenes
CANON_CROP = (slice(100, 244), slice(200, 392))  # 144 x 192: shown at its own size (max-width 380 px)
THRESHOLDS = [0.0, 1.0, 2.0, 3.0, 25.0]  # r_1..r_5 as the threshold search records them


def _image_sources(page, css_class):
  """The decoded (H, W, 3) RGB pixels of every <img> of `css_class`, in page order."""
  found = re.findall(rf"<img class='{css_class}' alt='[^']*' src='data:image/png;base64,([A-Za-z0-9+/=]+)'>", page)
  return [images.decode_image(base64.b64decode(data))[..., :3] for data in found]


def _random_weights(directory, net, seed):
  """Width-8 weights drawn from the parameter shapes: `init_params` would compile every layer."""
  config = networks.model_config(width=8, branch_capacities=(1, 4, 4, 4))
  rng = np.random.default_rng(seed)

  def draw(leaf):
    if len(leaf.shape) == 1:
      return np.zeros(leaf.shape, np.float32)
    # Unit gain per layer keeps the outputs (and so the panels) varied but finite.
    return (rng.standard_normal(leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))).astype(np.float32)

  weights_io.save_weights(directory, jax.tree.map(draw, networks.param_shapes(net, config)), net, config)


def _trained_workdir(root):
  """What `bambnet train` leaves behind, as far as the report reads it, without the training."""
  workdir = root / "run"
  for seed, net in enumerate(("deblur", "coc")):
    _random_weights(workdir / net / "weights", net, seed)
  (workdir / "progress.json").write_text(json.dumps({"finished": {"search": {"thresholds": THRESHOLDS}}}))
  records = [{"stage": stage, "step": step, "loss": offset + 1.0 / step, "grad_norm": offset + 0.1 * step}
             for offset, stage in enumerate(("coc", "search", "deblur")) for step in (1, 2, 3, 4)]
  (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  errors = [[1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 2.0], [4.0, 3.0, 2.0, 1.0]]
  search_plots.write_search_report([{"round": 1, "bin_edges": [0, 1, 2, 3, 4], "counts": [5, 5, 5, 5],
                                     "errors": errors, "thresholds": THRESHOLDS}], workdir / "search")
  group = {"num_images": 2, "input_psnr": 20.5, "psnr": 21.25, "input_ssim": 0.5, "ssim": 0.6,
           "input_mae": 0.1, "mae": 0.09}
  (workdir / "eval").mkdir()
  (workdir / "eval" / "metrics.json").write_text(json.dumps({"groups": {"combined": group}}))
  crops = root / "canon_inputs"
  for side in ("l", "r"):
    images.write_png(crops / f"f4_{side.upper()}.png", images.read_image(CANON_PAIR / f"{side}.png")[CANON_CROP])
  deblur.run_deblur(workdir / "canon", input_dir=crops, weights=workdir, show_progress=False)
  return workdir


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
  """The report's path, its text and a screenshot of it as (H, W, 3) BGR pixels."""
  if not CHROMIUM.exists():
    pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium), as .ci/run does")
  root = tmp_path_factory.mktemp("render")
  config = config_files.load_config(str(SMOKE_CONFIG))
  config.data.data_dir = str(root / "data")
  config.data.synthetic.height = config.data.synthetic.width = config.data.crop_size = SCENE_SIZE
  path = report.write_report(_trained_workdir(root), config, num_examples=2)
  screenshot = root / "report.png"
  # A fresh profile and no network services: nothing but the file itself is loaded.
  command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={root / 'profile'}", "--hide-scrollbars", "--force-device-scale-factor=1",
             f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--screenshot={screenshot}", path.as_uri()]
  done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode == 0 and screenshot.exists(), f"chromium failed ({done.returncode}):\n{done.stderr[-3000:]}"
  return path, path.read_text(), cv2.imread(str(screenshot), cv2.IMREAD_COLOR)


def _best_match(screenshot, rgb):
  """(score, (x, y)) of `rgb` shown at its own size in the BGR screenshot (1 = identical)."""
  # In grey: a third of the time of matching in colour on a 1280 x 5000 page, as discriminating.
  page = cv2.cvtColor(screenshot, cv2.COLOR_BGR2GRAY)
  template = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
  result = cv2.matchTemplate(page, template, cv2.TM_CCOEFF_NORMED)
  _, score, _, location = cv2.minMaxLoc(result)
  return score, location


def test_screenshot_has_the_window_size_and_shows_a_page(rendered):
  _, _, shot = rendered
  assert shot is not None and shot.shape == (WINDOW[1], WINDOW[0], 3)
  assert shot.std() > 30  # a blank or error page is nearly one colour
  # Photos, plots and anti-aliased text give thousands of colours; an error page a few hundred.
  packed = shot.astype(np.int32) @ np.array([1 << 16, 1 << 8, 1], np.int32)
  assert np.count_nonzero(np.bincount(packed.ravel(), minlength=1 << 24)) > 5000
  # The page's white background with dark text around the images.
  assert (shot == 255).all(-1).mean() > 0.3 and (shot.max(-1) < 64).mean() > 0.001
  assert (shot[-100:] == 255).all(), "the page is longer than the window: raise WINDOW's height"


def test_plots_and_photos_render_where_the_page_puts_them(rendered):
  _, page, shot = rendered
  curves, photos = _image_sources(page, "curve"), _image_sources(page, "big")
  assert len(curves) == 3 and len(photos) == 4  # rounds, then the Canon crop's restored, COC, masks
  # Curves and Canon panels are shown at their own size: each must appear pixel for pixel. A
  # broken or missing image (an icon and alt text instead) scores far lower.
  places = []
  for pixels in curves + photos[1:]:
    score, place = _best_match(shot, pixels)
    assert score > 0.97, f"a {pixels.shape} image is not in the screenshot (best match {score:.3f})"
    places.append(place)
  assert photos[1].shape[:2] == (CANON_CROP[0].stop - CANON_CROP[0].start, CANON_CROP[1].stop - CANON_CROP[1].start)
  # The curves are stacked one per stage, then the Canon panels sit side by side below them.
  ys = [y for _, y in places]
  assert ys[0] < ys[1] < ys[2] < ys[3] and ys[3] == ys[4] and places[3][0] < places[4][0] < places[5][0]


def test_test_scene_panels_render_enlarged_with_the_whole_legend(rendered):
  _, page, shot = rendered
  panels = _image_sources(page, "px")
  assert len(panels) == 2 * 5
  width = 160  # report.py's img.px: small scenes are enlarged with pixelated (nearest) scaling
  for pixels in (panels[0], panels[2]):  # a plain panel and the masks with their legend
    height = round(pixels.shape[0] * width / pixels.shape[1])
    enlarged = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_NEAREST)
    score, _ = _best_match(shot, enlarged)
    assert score > 0.9, f"a {pixels.shape} scene panel is not in the screenshot (best match {score:.3f})"
  masks = panels[2]
  assert masks.shape[1] == SCENE_SIZE and masks.shape[0] > SCENE_SIZE
  band = masks[SCENE_SIZE:]
  # Every label of the legend stays inside the panel: nothing is drawn in its last columns.
  assert (band[:, -2:] == 32).all() and (band[-1] == 32).all()
  for colour in deblur.BRANCH_COLOURS[:len(THRESHOLDS) - 1]:  # r_5 is only an upper bound
    assert (band == colour).all(-1).sum() >= 9  # each branch's swatch
