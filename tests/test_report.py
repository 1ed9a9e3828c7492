"""`bambnet quickstart` and its HTML report, on a smoke-config training run; the report's
choice of the zoomed window."""

import base64
import json
import os
import pathlib
import re
import shutil

import filelock
import numpy as np
import pytest

from bambnet_jax import cli
from bambnet_jax.commands import quickstart
from bambnet_jax.commands import report
from bambnet_jax.commands import report_figures
from bambnet_jax.io import images

SMOKE_CONFIG = pathlib.Path(__file__).parent.parent / "configs" / "smoke.py"
CANON_SUBSET = pathlib.Path(__file__).parent / "data" / "real_dp" / "canon_r6m2_flat" / "1500"
DATA_URI = re.compile(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'")


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
  """The whole quickstart on the smoke config: training, two Canon pairs, the report.

  Run once, also across pytest-xdist workers (a file lock): the report is written last, so its
  presence marks a finished run.
  """
  if "PYTEST_XDIST_WORKER" in os.environ:
    root = tmp_path_factory.getbasetemp().parent / "quickstart"  # the same folder for every worker
  else:
    root = tmp_path_factory.mktemp("quickstart")
  workdir = root / "run"
  with filelock.FileLock(f"{root}.lock"):
    path = workdir / "report.html"
    if not path.exists():
      path = quickstart.run_quickstart(workdir, [f"data.data_dir={root / 'data'}"], canon_dir=CANON_SUBSET,
                                       config_path=SMOKE_CONFIG)
  return root, workdir, path


def _decoded_images(page):
  return [images.decode_image(base64.b64decode(data)) for data in DATA_URI.findall(page)]


def test_report_is_one_self_contained_file(quickstart_run):
  _, workdir, path = quickstart_run
  assert path == workdir / "report.html"
  page = path.read_text()
  assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
  # Every image is inline: nothing refers to a file beside the page.
  assert not re.search(r"src='(?!data:)", page)
  assert not list(workdir.glob(".tmp-*"))  # the atomic write left no temporary file


def test_metrics_table_shows_restored_and_input_of_the_evaluation(quickstart_run):
  _, workdir, path = quickstart_run
  page = path.read_text()
  combined = json.loads((workdir / "eval" / "metrics.json").read_text())["groups"]["combined"]
  table = re.search(r"<table id='metrics'>.*?</table>", page, re.S).group(0)
  row = re.search(r"<tr><td>combined</td>(.*?)</tr>", table).group(1)
  cells = re.findall(r"<td>([^<]*)</td>", row)
  assert cells[0] == str(combined["num_images"])
  assert float(cells[1]) == pytest.approx(combined["input_psnr"], abs=0.006)
  assert float(cells[2]) == pytest.approx(combined["psnr"], abs=0.006)
  assert float(cells[3]) == pytest.approx(combined["psnr"] - combined["input_psnr"], abs=0.006)


def test_every_image_decodes_and_each_section_has_its_images(quickstart_run):
  _, workdir, path = quickstart_run
  page = path.read_text()
  decoded = _decoded_images(page)
  stages = list(report.read_curves(workdir / "metrics.jsonl"))
  assert stages == ["coc", "search", "deblur"]
  # curves per stage + rounds, then per capture its views and their zoomed crops, COC map, masks:
  # 2 test scenes (input, restored, ground truth), 2 Canon pairs (input, restored).
  assert len(decoded) == len(stages) + 1 + 2 * (2 * 3 + 2) + 2 * (2 * 2 + 2)
  for pixels in decoded:
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4) and pixels.shape[0] > 8 and pixels.shape[1] > 8
  captures = decoded[len(stages) + 1:]
  for start, columns in ((0, 3), (8, 3), (16, 2), (22, 2)):
    views, crops, maps = (captures[start:start + columns], captures[start + columns:start + 2 * columns],
                          captures[start + 2 * columns:start + 2 * columns + 2])
    # Views, COC map and masks share the capture's size (no legend band under the masks).
    assert {v.shape[:2] for v in views + maps} == {views[0].shape[:2]}
    assert {c.shape for c in crops} == {crops[0].shape} and crops[0].shape[0] == crops[0].shape[1]


def test_canon_pairs_are_restored_at_full_size_and_shown_beside_their_input(quickstart_run):
  _, workdir, path = quickstart_run
  restored = sorted((workdir / "canon").glob("*_restored.png"))
  assert len(restored) == 2
  for file in restored:
    assert images.read_image(file).shape[:2] == (512, 768)
  page = path.read_text()
  section = page[page.index("<h2>Real Canon DP captures</h2>"):]
  captures = {re.match(r"data-name='([^']*)'", c).group(1): c for c in section.split("<div class='capture' ")[1:]}
  assert sorted(captures) == sorted(file.name[:-len("_restored.png")] for file in restored)
  for capture in captures.values():
    assert re.findall(r"<img class='[^']*' alt='([^']*)'", capture)[:2] == ["input (L+R)/2", "restored"]
    # A 128-px window of the 768 x 512 frame at 4x: the full views are shrunk to fit side by side.
    assert "the 128 x 128 px window with the most detail in the input, shown below 4x" in capture
    # The quickstart's COC net misreads real cameras: the classical search draws these maps, and
    # the page says so.
    assert "COC map, drawn by the <b class='estimator'>classical search</b>" in capture


def test_detail_window_finds_the_textured_patch():
  image = np.full((120, 200, 3), 0.5, np.float32)
  image[70:90, 30:50] = np.random.default_rng(0).uniform(size=(20, 20, 3))
  assert report_figures.detail_window(image, 20) == (70, 30)
  # A window larger than the patch holds all of it.
  top, left = report_figures.detail_window(image, 32)
  assert top <= 70 and top + 32 >= 90 and left <= 30 and left + 32 >= 50


@pytest.mark.parametrize("size, columns, side, zoom, shown", [
    ((32, 32), 3, 16, 8, 256), ((64, 64), 3, 32, 8, 320), ((144, 192), 2, 72, 5, 384), ((512, 768), 2, 128, 4, 512),
    ((40, 3000), 2, 20, 8, 512)])
def test_crop_is_half_the_short_side_at_a_whole_zoom(size, columns, side, zoom, shown):
  image = np.zeros(size + (3,), np.float32)
  crop = report_figures.choose_crop(image, columns)
  # Three 64-px scene views (input, restored, ground truth) enlarged 5x fit one row of the page.
  assert (crop.side, crop.zoom, report_figures.display_width(size[1], columns)) == (side, zoom, shown)
  pixels = np.arange(np.prod(size)).reshape(size + (1,))
  zoomed = crop.of(pixels)
  assert zoomed.shape == (side * zoom, side * zoom, 1)
  # Nearest neighbour: every image pixel becomes a zoom x zoom block of itself.
  np.testing.assert_array_equal(zoomed[::zoom, ::zoom], pixels[crop.top:crop.top + side, crop.left:crop.left + side])


def test_missing_canon_data_is_skipped_with_a_message(quickstart_run, capsys):
  root, workdir, _ = quickstart_run
  copy = root / "no_canon"
  # A finished run resumes without training; only the Canon outputs and the report are redone.
  shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("canon"))
  path = quickstart.run_quickstart(copy, [f"data.data_dir={root / 'data'}"], canon_dir=root / "absent",
                               config_path=SMOKE_CONFIG)
  assert "no Canon DP pairs" in capsys.readouterr().out
  page = path.read_text()
  assert "No Canon DP captures were restored" in page
  assert "<table id='metrics'>" in page
  assert not (copy / "canon").exists()


def test_cli_parses_quickstart_with_overrides():
  args = cli.build_parser().parse_args(["quickstart", "--workdir", "w", "deblur.num_steps=10"])
  assert args.workdir == "w" and args.overrides == ["deblur.num_steps=10"]
  assert args.run.__name__ == "_quickstart"


def test_rounds_table_shows_each_rounds_branch_shares(quickstart_run):
  _, workdir, path = quickstart_run
  history = json.loads((workdir / "search" / "rounds.json").read_text())
  table = re.search(r"<table id='rounds'>.*?</table>", path.read_text(), re.S).group(0)
  rows = re.findall(r"<tr><td>\d+</td>.*?</tr>", table)
  assert len(rows) == len(history)
  for row, record in zip(rows, history):
    shown = [float(v) for v in re.findall(r"<td>([^<]*)</td>", row)[-1].split(" / ")]
    assert shown == pytest.approx([100 * s for s in record["branch_shares"]], abs=0.051)
    assert min(shown) >= 100 * record["min_branch_share"] - 0.051  # no branch starved

