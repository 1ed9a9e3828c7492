"""The experiment scripts (Tables I/II and III, Figs. 5 and 7) end to end on the smoke config.

One smoke run is trained once and shared by every test, also across pytest-xdist workers (a
file lock; finished stages are never redone). The LPIPS / FID weights for Table I/II are random
files under the published names (see test_lpips, test_fid): the path is the real one, the
numbers are not. Also the benchmark's one-process-per-device mode and the launch wiring it uses.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import filelock
import jax
import numpy as np
import pytest
import torch

from bambnet_jax import cli
from bambnet_jax.io import config_files
from bambnet_jax.evaluation import metric_weights
import runs
from bambnet_jax.models import networks
from bambnet_jax.parallel import sharding
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
    runs.train(config_files.apply_overrides(config_files.load_config(SMOKE), overrides), root / "run")
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
  ungated = runs.evaluate_run(runs.Run(smoke["workdir"]), config_files.apply_overrides(
      config_files.load_config(SMOKE), smoke["overrides"]), None, None)
  assert results["all branches"]["psnr"] == pytest.approx(ungated["psnr"], abs=1e-5)
  assert results["1st"]["psnr"] != pytest.approx(ungated["psnr"], abs=1e-3)
  assert (smoke["workdir"] / "fig7" / "fig7.png").read_bytes().startswith(b"\x89PNG")


def test_benchmark_one_process_per_device():
  """Two CPU processes of one jax.distributed run: one JSON line, rates from the global batch."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  result = subprocess.run(
      [sys.executable, str(REPO / "experiments" / "benchmark.py"), "--processes", "2", "--cases", "deblur_b2_fp32",
       "--size", "32", "--width", "8", "--runs", "2", "--warmup", "1", "--pipeline-steps", "2",
       "--pipeline-repeats", "1", "--timeout", "240"],
      env=env, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-5000:]
  records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
  assert len(records) == 1, result.stdout
  record = records[0]
  assert record["case"] == "deblur_b2_fp32" and record["processes"] == 2 and record["devices"] == 2
  # 2 images per device x 2 devices; median_ms and images_per_s are rounded to 3 and 2 decimals.
  assert record["images_per_s"] == pytest.approx(4 / record["median_ms"] * 1e3, rel=1e-4, abs=0.01)
  assert record["images_per_s_pipelined"] == pytest.approx(4 / record["pipelined_ms"] * 1e3, rel=1e-4, abs=0.01)
  # Each call returns before its result is ready, so the median dispatch is at most the median call.
  assert 0 < record["dispatch_ms"] <= record["median_ms"]


def test_benchmark_times_a_whole_frame_tiled_and_gives_each_case_its_memory(capsys):
  """The tiled case restores the whole frame (160 x 96 px in tiles of 64 overlapping by 16: 3 x 2
  tiles, counted by hand); each case's memory holds at least its parameters and input."""
  benchmark = load_script("benchmark")
  assert benchmark.main(["--cases", "infer_fp32,tiled_bf16", "--infer-size", "64x96", "--width", "8", "--runs", "2",
                         "--warmup", "1", "--pipeline-steps", "2", "--pipeline-repeats", "1", "--frame", "160x96",
                         "--tile", "64", "--overlap", "16", "--tiled-runs", "1"]) == 0
  infer, tiled = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  params = networks.init_params("deblur", networks.model_config(width=8), jax.random.key(0))
  param_bytes = 4 * sum(x.size for x in jax.tree_util.tree_leaves(params))
  assert infer["case"] == "infer_fp32" and infer["memory_gib"] * 2**30 >= param_bytes + 4 * 64 * 96 * 6
  assert tiled["case"] == "tiled_bf16" and tiled["frame"] == [160, 96] and tiled["tiles"] == 6
  assert tiled["tiles_per_call"] == 4 and tiled["memory_gib"] * 2**30 >= param_bytes + 4 * 4 * 64 * 64 * 6
  assert tiled["tile_ms"] == pytest.approx(tiled["median_ms"] / 6, abs=1e-3)
  assert infer["compile_s"] > 0 and tiled["compile_s"] > 0


def test_benchmark_refuses_single_device_cases_with_processes():
  result = subprocess.run(
      [sys.executable, str(REPO / "experiments" / "benchmark.py"), "--processes", "2", "--cases", "infer_fp32"],
      env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 2 and "train cases only" in result.stderr and not result.stdout


class _Joined(Exception):
  """Stops `train_and_evaluate` right after it joined the distributed run."""


def _record_distributed(monkeypatch, then_stop=False):
  """The keyword arguments of every jax.distributed.initialize call, which joins nothing."""
  calls = []

  def initialize(**kwargs):
    calls.append(kwargs)
    if then_stop:
      raise _Joined

  monkeypatch.setattr(sharding.jax.distributed, "initialize", initialize)
  monkeypatch.setattr(sharding.jax.config, "update", lambda *args: None)  # leave this process's CPU backend be
  return calls


def test_initialize_distributed_passes_local_device_ids(monkeypatch):
  calls = _record_distributed(monkeypatch)
  sharding.initialize_distributed("localhost:1234", 2, 1, local_device_ids=[1])
  sharding.initialize_distributed("localhost:1234", 2, 0, local_device_ids="0,1")
  sharding.initialize_distributed("localhost:1234", 2, 0)
  sharding.initialize_distributed(None, local_device_ids=[0])  # one process: nothing to join
  assert calls == [
      {"coordinator_address": "localhost:1234", "num_processes": 2, "process_id": 1, "local_device_ids": [1]},
      {"coordinator_address": "localhost:1234", "num_processes": 2, "process_id": 0, "local_device_ids": [0, 1]},
      {"coordinator_address": "localhost:1234", "num_processes": 2, "process_id": 0, "local_device_ids": None}]


@pytest.mark.parametrize("override,expected", [("parallel.local_device_ids=1", [1]),
                                               ("parallel.local_device_ids=0,1", [0, 1]),
                                               ("parallel.local_device_ids='2,3'", [2, 3]), (None, None)])
def test_train_command_passes_local_device_ids(monkeypatch, tmp_path, override, expected):
  """`bambnet train ... parallel.local_device_ids=I` reaches jax.distributed.initialize."""
  calls = _record_distributed(monkeypatch, then_stop=True)
  overrides = ["parallel.coordinator=localhost:1234", "parallel.num_processes=2", "parallel.process_id=1"]
  with pytest.raises(_Joined):
    cli.main(["train", "--config", SMOKE, "--workdir", str(tmp_path)] + overrides + [override] * bool(override))
  assert calls == [{"coordinator_address": "localhost:1234", "num_processes": 2, "process_id": 1,
                    "local_device_ids": expected}]


def test_coc_real_camera_scores_the_canon_pairs(smoke, capsys):
  status = load_script("coc_real_camera").main([str(smoke["workdir"]), "--classical"])
  rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  by_estimator = {}
  for row in rows:
    by_estimator.setdefault(row["estimator"], []).append(row)
  classical = {r["pair"]: r["median_coc_textured"] for r in by_estimator["classical"] if "pair" in r}
  # The classical estimate reads the pairs as RESULTS.md says: in front, behind, in focus.
  assert classical["0600/f4"] > 1.5 and classical["1500/f4"] < -1.0
  assert abs(classical["0600/f20"]) < 0.5 and abs(classical["1500/f20"]) < 0.5
  assert by_estimator["classical"][-1] == {"estimator": "classical", "all_pass": True}
  net = by_estimator[str(smoke["workdir"])]
  assert len(net) == 5 and all(np.isfinite(r["median_coc_textured"]) for r in net[:4])
  assert status == (0 if net[-1]["all_pass"] else 1)
  with pytest.raises(SystemExit):
    load_script("coc_real_camera").main([str(smoke["root"] / "missing")])

