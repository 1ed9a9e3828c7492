"""The COC stage's own settings (crop size, compute dtype) and its scoring against the true COC."""

import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from bambnet_jax.io import weights as weights_io
from bambnet_jax.io import config_files
from bambnet_jax.data import pipeline
from bambnet_jax.evaluation import evaluate
from bambnet_jax.losses import coc_search
from bambnet_jax.models import networks
from bambnet_jax.data import datasets
from bambnet_jax.parallel import sharding
from bambnet_jax.training import stages
from bambnet_jax.training import steps

REPO = pathlib.Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "configs" / "smoke.py")


def _variants_script():
  spec = importlib.util.spec_from_file_location("coc_stage_variants", REPO / "experiments" / "coc_stage_variants.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _smoke_config(tmp_path, *overrides):
  return config_files.apply_overrides(config_files.load_config(SMOKE),
                                       [f"data.data_dir={tmp_path / 'tfds'}", *overrides])


def test_coc_stage_dtype_overrides_only_the_compute_dtype(tmp_path):
  config = _smoke_config(tmp_path, "coc.dtype=bfloat16")
  model_config = stages.coc_stage_model_config(config)
  assert model_config.dtype == "bfloat16" and config.model.dtype == "float32"
  assert model_config.width == config.model.width
  assert stages.coc_stage_model_config(_smoke_config(tmp_path)).dtype == "float32"


def test_train_batches_take_a_stage_crop_size(tmp_path):
  config = _smoke_config(tmp_path)
  sources = datasets.DataSources(config.data, sharding.make_mesh(jax.devices()[:1]))
  batch = next(iter(sources.train_batches(pipeline.COC_STAGE_KEYS, 2, seed=0, crop_size=16)))
  assert batch["left"].shape == (2, 16, 16, 3)
  batch = next(iter(sources.train_batches(pipeline.COC_STAGE_KEYS, 2, seed=0)))
  assert batch["left"].shape == (2, config.data.crop_size, config.data.crop_size, 3)


def _reference_coc_mae(params, model_config, records):
  """The mean over images of |mean over colour of the net's map - true COC|, straight from the records."""
  net = networks.build("coc", model_config)
  all_pixels, textured = [], []
  for record in records:
    left, right = (np.asarray(record[k], np.float64) / np.iinfo(record[k].dtype).max for k in ("left", "right"))
    views = jnp.asarray(np.concatenate([left, right], -1)[None], jnp.float32)
    predicted = np.asarray(net.apply({"params": params}, views))[0].mean(-1)
    error = np.abs(predicted - np.asarray(record["coc"]).reshape(predicted.shape))
    combined = (left + right) / 2
    all_pixels.append(error.mean())
    textured.append(error[coc_search.textured_mask(combined.astype(np.float32))].mean())
  return float(np.mean(all_pixels)), float(np.mean(textured))


def test_variants_train_the_coc_stage_and_score_it_against_the_true_coc(tmp_path, monkeypatch):
  script = _variants_script()
  compiled_with, jit_train_step = [], steps.jit_train_step

  def recording_jit_train_step(step_fn, mesh, compiler_options=None, **static):
    compiled_with.append(compiler_options)
    return jit_train_step(step_fn, mesh, compiler_options, **static)

  monkeypatch.setattr(steps, "jit_train_step", recording_jit_train_step)
  shared = [f"data.data_dir={tmp_path / 'tfds'}"]
  interior = "interior:coc.crop_size=16,coc.loss_border=4,coc.dtype=bfloat16,model.conv_fusion=on"
  results = script.main(["--config", SMOKE, "--workdir", str(tmp_path / "v"), "--variant", "paper:",
                         "--variant", interior, *shared])
  assert [r["variant"] for r in results] == ["paper", "interior"]
  # Each variant's stage compiles with its own model options: conv fusion for the one that asks.
  assert compiled_with == [{}, {"xla_gpu_experimental_enable_conv_fusion": True}]
  assert json.loads((tmp_path / "v" / "variants.json").read_text()) == results
  config = _smoke_config(tmp_path)
  records = datasets.DataSources(config.data, None)._builder("dp_synthetic").as_data_source(split="test")
  for result in results:
    assert not (tmp_path / "v" / result["variant"] / "search").exists(), "only the COC stage runs"
    params, _, _ = weights_io.load_weights(tmp_path / "v" / result["variant"] / "coc" / "weights")
    model_config = stages.coc_stage_model_config(_smoke_config(tmp_path, *result["overrides"]))
    mae, mae_textured = _reference_coc_mae(params, model_config, [records[i] for i in range(len(records))])
    assert result["images"] == len(records) == config.data.synthetic.num_test
    np.testing.assert_allclose(result["coc_mae"], mae, rtol=2e-2)
    np.testing.assert_allclose(result["coc_mae_textured"], mae_textured, rtol=2e-2)
  # A finished variant is found, not retrained.
  again = script.main(["--config", SMOKE, "--workdir", str(tmp_path / "v"), "--variant", "paper:", *shared])
  assert again[0]["coc_mae"] == results[0]["coc_mae"]


def test_parse_variant_rejects_a_missing_name():
  script = _variants_script()
  assert script.parse_variant("a:x=1,y=2") == ("a", ["x=1", "y=2"])
  assert script.parse_variant("a:") == ("a", [])
  for bad in ("nocolon", ":x=1"):
    try:
      script.parse_variant(bad)
    except ValueError as e:
      assert bad in str(e)
    else:
      raise AssertionError(f"{bad!r} accepted")
