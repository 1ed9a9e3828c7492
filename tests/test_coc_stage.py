"""The COC stage's own settings: its crop size and compute dtype."""

import pathlib

import jax

from bambnet_jax.io import config_files
from bambnet_jax.data import pipeline
from bambnet_jax.data import datasets
from bambnet_jax.parallel import sharding
from bambnet_jax.training import stages

REPO = pathlib.Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "configs" / "smoke.py")


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
