"""`bambnet quickstart` and its HTML report, on a smoke-config training run (issue 7)."""

import base64
import json
import pathlib
import re
import shutil

import pytest

from bambnet_jax import cli
from bambnet_jax.commands import quickstart
from bambnet_jax.commands import report
from bambnet_jax.io import images

SMOKE_CONFIG = pathlib.Path(__file__).parent.parent / "configs" / "smoke.py"
CANON_SUBSET = pathlib.Path(__file__).parent / "data" / "real_dp" / "canon_r6m2_flat" / "1500"
DATA_URI = re.compile(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'")


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
  """The whole quickstart on the smoke config: training, two Canon pairs, the report."""
  root = tmp_path_factory.mktemp("quickstart")
  workdir = root / "run"
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
  # curves per stage + rounds + 2 test scenes x 5 columns + 2 Canon pairs x (restored, COC, masks)
  assert len(decoded) == len(stages) + 1 + 2 * 5 + 2 * 3
  for pixels in decoded:
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4) and pixels.shape[0] > 8 and pixels.shape[1] > 8
  # The test scenes' five panels share the scene's size (the masks add a legend band below).
  scene_panels = decoded[len(stages) + 1:len(stages) + 1 + 5]
  height, width = scene_panels[0].shape[:2]
  for index in (1, 3, 4):
    assert scene_panels[index].shape[:2] == (height, width)
  assert scene_panels[2].shape[1] == width and scene_panels[2].shape[0] > height


def test_canon_pairs_are_restored_at_full_size(quickstart_run):
  _, workdir, path = quickstart_run
  restored = sorted((workdir / "canon").glob("*_restored.png"))
  assert len(restored) == 2
  for file in restored:
    assert images.read_image(file).shape[:2] == (512, 768)
  page = path.read_text()
  for file in restored:
    assert file.name[:-len("_restored.png")] in page


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
