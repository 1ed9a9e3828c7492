"""`bambnet eval`: tables and 16-bit outputs, checked against scikit-image, lpips and pytorch-fid.

The networks are randomly initialised (no training needed to test the evaluation), on the smoke
config's synthetic test scenes. The metric weight files are random too, made by torchvision and
saved under their published names (see test_lpips / test_fid), so nothing is downloaded.
"""

import csv
import json

import jax
import numpy as np
import pytest
import torch
from pytorch_fid import fid_score
from skimage import metrics as skm

from bambnet_jax.io import weights as weights_io
from bambnet_jax import cli
from bambnet_jax.io import config_files
from bambnet_jax.evaluation import evaluate as evaluate_lib
from bambnet_jax.evaluation import inception
from bambnet_jax.evaluation import metric_weights
from bambnet_jax.evaluation import suite as suite_lib
from bambnet_jax.io import images
from bambnet_jax.models import networks
from bambnet_jax.data import datasets
import test_fid
import test_lpips

SMOKE = "configs/smoke.py"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A workdir holding random deblurring and COC nets, and a TFDS data dir for the scenes."""
  root = tmp_path_factory.mktemp("eval_cli")
  config = config_files.load_config(SMOKE)
  for key, net in enumerate(("deblur", "coc")):
    params = networks.init_params(net, config.model, jax.random.key(key))
    weights_io.save_weights(root / "run" / net / "weights", params, net, config.model)
  return {"workdir": root / "run", "data_dir": root / "tfds", "root": root}


@pytest.fixture
def no_user_weights(tmp_path, monkeypatch):
  """Hides any weight files of this machine's user folders from the test."""
  monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
  monkeypatch.delenv(metric_weights.ENV_VAR, raising=False)
  monkeypatch.setattr(metric_weights, "DEFAULT_DIR", tmp_path / "default")


def sharp_targets(run):
  config = config_files.apply_overrides(config_files.load_config(SMOKE), [f"data.data_dir={run['data_dir']}"])
  source = datasets.DataSources(config.data, None).source("dp_synthetic", "test", ("sharp", "name"))
  return {bytes(r["name"]).decode() if isinstance(r["name"], bytes) else str(r["name"]): images.to_float(r["sharp"])
          for r in (source[i] for i in range(len(source)))}


def read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def eval_args(run, *extra):
  return ["eval", "--config", SMOKE, *extra, f"data.data_dir={run['data_dir']}"]


def test_pixel_metrics_and_16_bit_outputs(run, capsys):
  out = run["root"] / "pixel"
  assert cli.main(eval_args(run, "--workdir", str(run["workdir"]), "--output-dir", str(out),
                            "--metrics", "psnr,ssim,mae")) == 0
  assert "| combined | 2 |" in capsys.readouterr().out
  per_image = read_csv(out / "per_image.csv")
  targets = sharp_targets(run)
  assert sorted(r["name"] for r in per_image) == sorted(targets)
  for row in per_image:
    restored = images.read_image(out / "restored" / f"{row['name']}.png")
    assert restored.dtype == np.uint16
    x, y = images.to_float(restored).astype(np.float64), targets[row["name"]].astype(np.float64)
    # The PNG is the float output quantised to 16 bits: off by at most 1/131070 per pixel.
    assert float(row["psnr"]) == pytest.approx(skm.peak_signal_noise_ratio(y, x, data_range=1), abs=1e-3)
    assert float(row["ssim"]) == pytest.approx(skm.structural_similarity(x, y, data_range=1, channel_axis=-1), abs=1e-4)
    assert float(row["mae"]) == pytest.approx(np.mean(np.abs(x - y)), abs=1e-5)
  summary = json.loads((out / "metrics.json").read_text())
  combined = read_csv(out / "metrics.csv")[0]
  assert combined["group"] == "combined" and int(combined["num_images"]) == 2
  assert float(combined["psnr"]) == pytest.approx(np.mean([float(r["psnr"]) for r in per_image]))
  assert summary["groups"]["combined"]["coc_mae"] > 0  # synthetic scenes have a true COC map

  # The same deblurring net given as a weights directory (how a converted official checkpoint
  # is evaluated): the same numbers, no COC net.
  official = run["root"] / "weights_only"
  assert cli.main(eval_args(run, "--weights", str(run["workdir"] / "deblur" / "weights"),
                            "--output-dir", str(official), "--metrics", "psnr,ssim,mae", "--save-images", "0")) == 0
  again = json.loads((official / "metrics.json").read_text())["groups"]["combined"]
  assert again["psnr"] == pytest.approx(summary["groups"]["combined"]["psnr"], abs=1e-6)
  assert "coc_mae" not in again and not (official / "restored").exists()


def test_lpips_and_fid_match_the_published_packages(run, tmp_path, monkeypatch, no_user_weights):
  weights = tmp_path / "metric_weights"
  weights.mkdir()
  backbone = test_lpips.random_backbone_file("squeeze", weights)
  torch.save(test_fid.random_fid_inception_state(), weights / metric_weights.INCEPTION_FILE)
  out = run["root"] / "perceptual"
  assert cli.main(eval_args(run, "--workdir", str(run["workdir"]), "--output-dir", str(out), "--metrics",
                            "lpips_squeeze,fid", "--metric-weights", str(weights), "--fid-dims", "64")) == 0
  document = json.loads((out / "metrics.json").read_text())
  assert str(weights / metric_weights.INCEPTION_FILE) in document["weight_files"]
  targets = sharp_targets(run)
  names = [r["name"] for r in document["per_image"]]
  to_torch = lambda a: torch.from_numpy(np.ascontiguousarray(np.stack(a).transpose(0, 3, 1, 2))).float()
  restored = to_torch([images.to_float(images.read_image(out / "restored" / f"{n}.png")) for n in names])
  sharp = to_torch([targets[n] for n in names])
  with torch.no_grad():
    want = test_lpips.reference_lpips("squeeze", backbone)(restored, sharp, normalize=True).numpy().reshape(-1)
  got = [r["lpips_squeeze"] for r in document["per_image"]]
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  model = test_fid.reference_model(weights, 64, monkeypatch)
  features = [test_fid.reference_features(model, x.numpy().transpose(0, 2, 3, 1)) for x in (restored, sharp)]
  want_fid = fid_score.calculate_frechet_distance(*[s for f in features for s in (f.mean(0), np.cov(f, rowvar=False))])
  assert document["groups"]["combined"]["fid"] == pytest.approx(want_fid, rel=1e-3)
  assert "64-d" in (out / "metrics.md").read_text()


def test_missing_metric_weights_name_every_file_and_the_way_out(run, tmp_path, capsys, no_user_weights):
  code = cli.main(eval_args(run, "--workdir", str(run["workdir"]), "--metric-weights", str(tmp_path / "none")))
  assert code == 2
  error = capsys.readouterr().err
  for needed in ("alexnet-owt-7be5be79.pth", "squeezenet1_1-b8a52dc0.pth", "pt_inception-2015-12-05-6726825d.pth",
                 str(tmp_path / "none"), "--metrics psnr,ssim,mae"):
    assert needed in error
  assert not (run["workdir"] / "evaluation").exists()  # refused before any inference


def test_indoor_outdoor_and_combined_groups(tmp_path):
  """DPDD's scene_type labels split the table; FID is over each group's own images."""
  config = config_files.load_config(SMOKE)
  params = networks.init_params("deblur", config.model, jax.random.key(0))
  rng = np.random.default_rng(0)
  views = {k: rng.random((4, 24, 40, 3)).astype(np.float32) for k in ("left", "right", "combined", "sharp")}
  scene_types = np.array([1, 2, 1, 0])  # indoor, outdoor, indoor, unknown (tfds_dpd.common.SCENE_TYPES)
  names = np.array([f"scene{i}".encode() for i in range(4)])
  batches = [{**{k: v[i:i + 2] for k, v in views.items()}, "scene_type": scene_types[i:i + 2],
              "name": names[i:i + 2], "mask": np.ones(2, bool)} for i in (0, 2)]
  inception_variables = jax.jit(inception.FIDInceptionV3(0).init)(
      jax.random.key(1), np.zeros((1, 299, 299, 3), np.float32))
  suite = suite_lib.MetricSuite(("psnr", "fid"), inception_variables=inception_variables, fid_dims=64)
  summary = evaluate_lib.evaluate(params, None, config.model, batches, tmp_path, save_images=0, suite=suite)
  groups = summary["groups"]
  assert {g: groups[g]["num_images"] for g in groups} == {"indoor": 2, "outdoor": 1, "combined": 4}
  restored = np.asarray(networks.build("deblur", config.model).apply(
      {"params": params}, np.concatenate([views["left"], views["right"]], -1)), np.float64)
  psnr = [skm.peak_signal_noise_ratio(views["sharp"][i].astype(np.float64), restored[i], data_range=1)
          for i in range(4)]
  assert groups["indoor"]["psnr"] == pytest.approx(np.mean([psnr[0], psnr[2]]), abs=1e-5)
  assert groups["outdoor"]["psnr"] == pytest.approx(psnr[1], abs=1e-5)
  assert groups["combined"]["psnr"] == pytest.approx(np.mean(psnr), abs=1e-5)
  assert groups["outdoor"]["fid"] is None  # one image has no covariance
  assert groups["indoor"]["fid"] != pytest.approx(groups["combined"]["fid"])
  assert [r["group"] for r in read_csv(tmp_path / "metrics.csv")] == ["indoor", "outdoor", "combined"]
  assert "| indoor | 2 |" in (tmp_path / "metrics.md").read_text()
