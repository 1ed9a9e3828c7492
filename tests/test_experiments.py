"""The experiment scripts (Tables I/II and III, Figs. 5 and 7) end to end on the smoke config.

One smoke run is trained once and shared by every test, also across pytest-xdist workers (a
file lock; finished stages are never redone). The LPIPS / FID weights for Table I/II are random
files under the published names (see test_lpips, test_fid): the path is the real one, the
numbers are not.
"""

import importlib.util
import json
import pathlib

import filelock
import numpy as np
import pytest
import torch

from bambnet_jax import config_loader
from bambnet_jax.evaluation import metric_weights
from bambnet_jax.evaluation import runs
import test_fid
import test_lpips

REPO = pathlib.Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "configs" / "smoke.py")


def load_script(name):
  spec = importlib.util.spec_from_file_location(f"experiment_{name}", REPO / "experiments" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  """{"workdir", "overrides"}: a trained smoke run (all stages but the evaluation)."""
  shared = tmp_path_factory.getbasetemp().parent  # the same folder for every xdist worker
  root = shared / "smoke_experiments"
  overrides = [f"data.data_dir={root / 'tfds'}"]
  with filelock.FileLock(str(shared / "smoke_experiments.lock")):
    runs.train(config_loader.apply_overrides(config_loader.load_config(SMOKE), overrides), root / "run")
  return {"workdir": root / "run", "overrides": overrides, "root": root}


def common_args(smoke, workdir=None, metrics="psnr,ssim,mae"):
  return ["--config", SMOKE, "--workdir", str(workdir or smoke["workdir"]), "--metrics", metrics]


def test_table1_2_with_every_metric(smoke, tmp_path):
  weights = tmp_path / "metric_weights"
  weights.mkdir()
  test_lpips.random_backbone_file("squeeze", weights)
  torch.save(test_fid.random_fid_inception_state(), weights / metric_weights.INCEPTION_FILE)
  summary = load_script("table1_2").main(
      common_args(smoke, metrics=runs.PAPER_METRICS) + ["--metric-weights", str(weights), "--fid-dims", "64"]
      + smoke["overrides"])
  combined = summary["groups"]["combined"]
  assert combined["num_images"] == 2
  for metric in ("psnr", "ssim", "mae", "lpips_squeeze", "fid"):
    assert np.isfinite(combined[metric])
  out = smoke["workdir"] / "table1_2"
  text = (out / "table1_2.md").read_text()
  assert "BaMBNet (paper)" in text and "this run" in text and "26.40" in text
  assert len(list((out / "restored").glob("*.png"))) == 2
  assert json.loads((out / "metrics.json").read_text())["groups"]["combined"]["psnr"] == combined["psnr"]


def test_table3_trains_without_masks_and_without_a_coc_stage(smoke, tmp_path):
  results = load_script("table3_masks").main(
      common_args(smoke, tmp_path / "table3") + ["--with-masks-workdir", str(smoke["workdir"])] + smoke["overrides"])
  assert set(results) == {"without masks", "with masks"}
  assert results["with masks"]["psnr"] != results["without masks"]["psnr"]
  unmasked = tmp_path / "table3" / "without_masks"
  config = json.loads((unmasked / "config.json").read_text())
  assert config["deblur"]["use_masks"] is False and config["search"]["enabled"] is False
  progress = json.loads((unmasked / "progress.json").read_text())["finished"]
  assert "coc" not in progress and not (unmasked / "coc").exists()
  assert "26.22" in (tmp_path / "table3" / "table3.md").read_text()


def test_bf16_accuracy_scores_both_dtypes(smoke):
  result = load_script("bf16_accuracy").main(common_args(smoke) + smoke["overrides"])
  assert result["num_images"] == 2
  for dtype in ("float32", "bfloat16"):
    assert np.isfinite(result[dtype]["psnr"])
  assert result["psnr_bf16_minus_fp32_db"] == result["bfloat16"]["psnr"] - result["float32"]["psnr"]
  # bfloat16 compute changes the output, but not by much even for an untrained smoke net.
  assert 0 < result["max_abs_pixel_difference"] < 0.2
  assert json.loads((smoke["workdir"] / "bf16_accuracy.json").read_text())["num_images"] == 2


def test_fig5_masks_of_every_search_round(smoke):
  record = load_script("fig5_threshold_rounds").main(common_args(smoke) + smoke["overrides"])
  history = runs.Run(smoke["workdir"]).search_history
  assert len(record) == 1 + len(history)
  assert record[0]["thresholds"] == pytest.approx(history[0]["thresholds_before"])
  assert record[-1]["thresholds"] == pytest.approx(history[-1]["thresholds"])
  for entry in record:
    assert sum(entry["pixel_share"]) == pytest.approx(1.0)
  assert (smoke["workdir"] / "fig5" / "fig5.png").read_bytes().startswith(b"\x89PNG")


def test_fig7_drops_branches(smoke):
  results = load_script("fig7_drop_branches").main(common_args(smoke) + smoke["overrides"])
  num_branches = len(runs.Run(smoke["workdir"]).model_config.branch_capacities)
  assert len(results) == 2 * num_branches - 1
  assert results["1st"]["kept"] == [0] and results["last"]["kept"] == [num_branches - 1]
  # All gates at 1 is the net as trained: the same numbers as the ungated evaluation.
  ungated = runs.evaluate_run(runs.Run(smoke["workdir"]), config_loader.apply_overrides(
      config_loader.load_config(SMOKE), smoke["overrides"]), None, None)
  assert results["all branches"]["psnr"] == pytest.approx(ungated["psnr"], abs=1e-5)
  assert results["1st"]["psnr"] != pytest.approx(ungated["psnr"], abs=1e-3)
  assert (smoke["workdir"] / "fig7" / "fig7.png").read_bytes().startswith(b"\x89PNG")
