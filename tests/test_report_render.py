"""The quickstart report renders in headless Chromium as a reader sees it.

Training is not what is tested here (tests/test_report.py runs the whole quickstart), so the
workdir is made directly: random width-8 networks, a few logged curve points, one search round
and a metrics summary. The report itself is the real one: `report.write_report` restores real
test scenes (COC net) and a Canon DP crop (classical search, so both estimators are labelled)
with `bambnet deblur`. Chromium renders it twice: a screenshot, and the DOM after a script added
to a copy of the page has measured where every image and legend landed.
"""

import base64
import html
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
WINDOW = (1280, 6000)  # width, height: the whole page (~4,500 px) with room to spare
SCENE_SIZE = 64  # as configs/quickstart.py's scenes
CANON_CROP = (slice(100, 244), slice(200, 392))  # 144 x 192
THRESHOLDS = [0.0, 1.0, 2.0, 3.0, 25.0]  # r_1..r_5 as the threshold search records them
# Measures the laid-out page; --dump-dom then serialises the DOM with the measurements in it.
MEASURE = """<script>addEventListener('load', () => {
  const box = e => { const r = e.getBoundingClientRect();
                     return {x: r.x + scrollX, y: r.y + scrollY, w: r.width, h: r.height}; };
  const image = i => ({...box(i), alt: i.alt, natural: [i.naturalWidth, i.naturalHeight], src: i.src});
  const all = (c, selector, f) => [...c.querySelectorAll(selector)].map(f);
  const captures = all(document, '.capture', c => ({
    name: c.dataset.name, text: c.innerText,
    views: all(c, '.views img', image), boxes: all(c, '.views .roi', box), crops: all(c, '.crops img', image),
    maps: all(c, '.maps img', image),
    legends: all(c, '.legend', l => ({...box(l), text: l.innerText, images: l.querySelectorAll('img').length,
        swatches: all(l, '.swatch', s => getComputedStyle(s).backgroundColor),
        scale: all(l, '.scale', s => getComputedStyle(s).backgroundImage)}))}));
  const out = document.createElement('pre');
  out.id = 'layout';
  out.textContent = JSON.stringify({height: document.documentElement.scrollHeight, captures});
  document.body.append(out);
});</script>"""


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
  """What `bambnet train` leaves behind, as far as the report reads it, without the training;
  and deblur's results for the Canon crop."""
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
  canon = deblur.run_deblur(workdir / "canon", input_dir=crops, weights=workdir, coc="search", show_progress=False)
  return workdir, canon


def _chromium(root, page, *flags):
  # A fresh profile and no network services: nothing but the file itself is loaded.
  command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={root / 'profile'}", "--hide-scrollbars", "--force-device-scale-factor=1",
             f"--window-size={WINDOW[0]},{WINDOW[1]}", *flags, page.as_uri()]
  done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode == 0, f"chromium failed ({done.returncode}):\n{done.stderr[-3000:]}"
  return done.stdout


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
  """The report's text, a screenshot of it as (H, W, 3) BGR pixels, and its measured layout."""
  if not CHROMIUM.exists():
    pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium), as .ci/run does")
  root = tmp_path_factory.mktemp("render")
  config = config_files.load_config(str(SMOKE_CONFIG))
  config.data.data_dir = str(root / "data")
  config.data.synthetic.height = config.data.synthetic.width = config.data.crop_size = SCENE_SIZE
  workdir, canon = _trained_workdir(root)
  path = report.write_report(workdir, config, canon, num_examples=2)
  page = path.read_text()
  screenshot = root / "report.png"
  _chromium(root, path, f"--screenshot={screenshot}")
  measured = root / "measured.html"
  measured.write_text(page.replace("</body>", MEASURE + "</body>"))
  dom = _chromium(root, measured, "--dump-dom")
  layout = re.search(r"<pre id=\"layout\">(.*?)</pre>", dom, re.S)
  assert layout, "the measuring script left no layout in the DOM"
  return page, cv2.imread(str(screenshot), cv2.IMREAD_COLOR), json.loads(html.unescape(layout.group(1)))


def _decode(source):
  """The (H, W, 3) RGB pixels of a data-URI image source."""
  return images.decode_image(base64.b64decode(source.split(",", 1)[1]))[..., :3]


def _match_at(screenshot, rgb, box, margin=4):
  """How well `rgb`, shown at its own size, matches the screenshot at `box` (1 = identical)."""
  x, y = round(box["x"]), round(box["y"])
  region = screenshot[max(0, y - margin):y + rgb.shape[0] + margin, max(0, x - margin):x + rgb.shape[1] + margin]
  # In grey: a third of the time of matching in colour, as discriminating.
  result = cv2.matchTemplate(cv2.cvtColor(region, cv2.COLOR_BGR2GRAY),
                             cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY), cv2.TM_CCOEFF_NORMED)
  return float(result.max())


def test_screenshot_has_the_window_size_and_shows_a_page(rendered):
  _, shot, layout = rendered
  assert shot is not None and shot.shape == (WINDOW[1], WINDOW[0], 3)
  assert layout["height"] < WINDOW[1] - 100, "the page is longer than the window: raise WINDOW's height"
  assert shot.std() > 30  # a blank or error page is nearly one colour
  # Photos, plots and anti-aliased text give thousands of colours; an error page a few hundred.
  packed = shot.astype(np.int32) @ np.array([1 << 16, 1 << 8, 1], np.int32)
  assert np.count_nonzero(np.bincount(packed.ravel(), minlength=1 << 24)) > 5000
  # The page's white background with dark text around the images.
  assert (shot == 255).all(-1).mean() > 0.3 and (shot.max(-1) < 64).mean() > 0.001


def test_training_curves_render_one_per_stage(rendered):
  page, shot, _ = rendered
  curves = re.findall(r"<img class='curve' alt='[^']*' src='(data:image/png;base64,[A-Za-z0-9+/=]+)'>", page)
  assert len(curves) == 3
  places = []
  for source in curves:
    pixels = _decode(source)
    # A broken or missing image (an icon and alt text instead) scores far lower.
    result = cv2.matchTemplate(cv2.cvtColor(shot, cv2.COLOR_BGR2GRAY), cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY),
                               cv2.TM_CCOEFF_NORMED)
    _, score, _, place = cv2.minMaxLoc(result)
    assert score > 0.97, f"a {pixels.shape} curve is not in the screenshot (best match {score:.3f})"
    places.append(place)
  assert places[0][1] < places[1][1] < places[2][1]  # stacked in the order the stages ran


def test_every_capture_shows_the_input_beside_the_restored_image(rendered):
  _, _, layout = rendered
  captures = layout["captures"]
  assert [c["name"] for c in captures] == ["scene0", "scene1", "f4"]
  for capture in captures:
    views = capture["views"]
    expected = ["input (L+R)/2", "restored"] + (["ground truth"] if capture["name"].startswith("scene") else [])
    assert [v["alt"] for v in views] == expected
    first = views[0]
    for left, right in zip(views, views[1:]):
      assert right["x"] >= left["x"] + left["w"], f"{capture['name']}: {right['alt']} is not right of {left['alt']}"
    for view in views:
      assert view["natural"] == first["natural"] and view["natural"][0] > 0  # decoded, one size
      assert abs(view["y"] - first["y"]) < 1 and (view["w"], view["h"]) == (first["w"], first["h"])
      # Small images are enlarged to be seen: a 64-px scene at 5x, the 192-px Canon crop at 2x.
      assert view["w"] >= 2 * view["natural"][0]
      assert view["w"] / view["natural"][0] == pytest.approx(view["h"] / view["natural"][1])


def test_zoomed_crops_show_the_marked_window_of_every_image(rendered):
  _, shot, layout = rendered
  for capture in layout["captures"]:
    views, boxes, crops = capture["views"], capture["boxes"], capture["crops"]
    assert len(boxes) == len(crops) == len(views)
    width, height = views[0]["natural"]
    scale = views[0]["w"] / width
    # The box marks one window, the same on every view, inside the image.
    left, top, side = (round((boxes[0]["x"] - views[0]["x"]) / scale), round((boxes[0]["y"] - views[0]["y"]) / scale),
                       round(boxes[0]["w"] / scale))
    assert 16 <= side <= min(width, height) and 0 <= left <= width - side and 0 <= top <= height - side
    for view, box, crop in zip(views, boxes, crops):
      assert (box["x"] - view["x"], box["y"] - view["y"], box["w"]) == pytest.approx(
          (boxes[0]["x"] - views[0]["x"], boxes[0]["y"] - views[0]["y"], boxes[0]["w"]), abs=0.5)
      # The crop sits under its view, shown at its own size: whole enlargements, nearest neighbour.
      zoom = crop["natural"][0] // side
      assert crop["natural"] == [side * zoom, side * zoom] and 2 <= zoom <= 8 and (crop["w"], crop["h"]) == (
          side * zoom, side * zoom)
      assert crop["y"] >= view["y"] + view["h"] and view["x"] <= crop["x"] + crop["w"] / 2 <= view["x"] + view["w"]
      window = _decode(view["src"])[top:top + side, left:left + side]
      np.testing.assert_array_equal(_decode(crop["src"]), np.repeat(np.repeat(window, zoom, 0), zoom, 1))
      assert _match_at(shot, _decode(crop["src"]), crop) > 0.97, f"{capture['name']}: {crop['alt']} not on screen"
      # The box's outline is drawn in yellow on the screenshot.
      edge = shot[round(box["y"]) + 1, round(box["x"] + box["w"] / 2)]
      assert edge[2] > 200 and edge[1] > 180 and edge[0] < 80, f"no yellow box outline: {edge}"


def test_legends_are_html_text_under_maps_without_a_baked_legend(rendered):
  _, shot, layout = rendered
  branches = [f"branch {i + 1}: {r:g} \u2264 blur < {THRESHOLDS[i + 1]:g} px" for i, r in enumerate(THRESHOLDS[:3])]
  branches.append(f"branch 4: blur \u2265 {THRESHOLDS[3]:g} px")  # r_5 is only the search's upper bound
  for capture in layout["captures"]:
    (coc_map, masks), (coc_legend, masks_legend) = capture["maps"], capture["legends"]
    assert coc_map["alt"].startswith("COC map") and masks["alt"] == "branch masks"
    # The masks keep the scene's size: the legend is no longer a band drawn under them.
    assert masks["natural"] == capture["views"][0]["natural"] == coc_map["natural"]
    assert _match_at(shot, cv2.resize(_decode(masks["src"]), (round(masks["w"]), round(masks["h"])),
                                      interpolation=cv2.INTER_NEAREST), masks) > 0.9
    for image, legend in ((coc_map, coc_legend), (masks, masks_legend)):
      assert legend["images"] == 0  # text and CSS colours, not a picture of text
      assert legend["y"] >= image["y"] + image["h"]  # beneath its image, in the same column
      assert legend["x"] < image["x"] + image["w"] and image["x"] < legend["x"] + legend["w"]
    lines = masks_legend["text"].splitlines()
    assert [line.rsplit(" (", 1)[0] for line in lines[:4]] == branches
    assert sum(int(re.search(r"\((\d+)%\)", line).group(1)) for line in lines[:4]) in range(98, 103)
    assert masks_legend["swatches"] == [f"rgb({r}, {g}, {b})" for r, g, b in deblur.BRANCH_COLOURS[:4]]
    # The COC scale runs blue (behind the focal plane) to red (in front), ticks at -vmax, 0, +vmax.
    (scale,) = coc_legend["scale"]
    stops = [tuple(map(int, s)) for s in re.findall(r"rgb\((\d+), (\d+), (\d+)\)", scale)]
    assert len(stops) >= 3 and stops[0][2] > stops[0][0] and stops[-1][0] > stops[-1][2]
    vmax = re.match(r"\u2212(\d+\.\d+) px\n0\n\+(\d+\.\d+) px", coc_legend["text"])
    assert vmax and vmax.group(1) == vmax.group(2) and float(vmax.group(1)) >= 1.0


def test_each_coc_map_names_its_estimator(rendered):
  page, _, layout = rendered
  estimators = {"scene0": "COC net", "scene1": "COC net", "f4": "classical search"}
  for capture in layout["captures"]:
    assert f"COC map, drawn by the {estimators[capture['name']]}" in capture["text"]
    assert capture["maps"][0]["alt"] == f"COC map ({estimators[capture['name']]})"
  assert page.count("class='estimator'") == 3
