"""config.data.synthetic -> the dp_synthetic builder config: every realism option reaches the scenes."""

import numpy as np

from bambnet_jax.data import datasets
from bambnet_jax.data import dp_render
from bambnet_jax.data import synthetic
from configs import quickstart
from configs import synthetic as synthetic_config
import tfds_dpd

OFF_DEFAULT = {"psf": "rim", "rim_strength": 0.5, "vignetting": 0.2, "read_noise": 0.01, "shot_noise": 0.02,
               "gamma": True, "min_contrast": 0.3}


def _data(**fields):
  data = synthetic_config.synthetic_data(num_train=1, num_validation=0, num_test=0, size=48, max_coc=3.0)
  data.update(fields)
  return data


def test_every_realism_field_is_in_the_config_and_reaches_the_scene_config():
  data = synthetic_config.synthetic_data()
  for field in datasets.REALISM_FIELDS:
    assert data[field] == getattr(synthetic.SceneConfig, field), field  # defaults: today's scenes
  scene = datasets.synthetic_builder_config(_data(**OFF_DEFAULT)).scene
  assert {f: getattr(scene, f) for f in datasets.REALISM_FIELDS} == OFF_DEFAULT


def test_names_keep_the_defaults_and_tell_every_setting_apart():
  # Data prepared before the realism fields existed keeps its name.
  assert datasets.synthetic_builder_config(quickstart.get_config().data.synthetic).name == "s0_n64-8-8_64x64_c6_l4"
  names = {datasets.synthetic_builder_config(_data()).name}
  for field, value in OFF_DEFAULT.items():
    names.add(datasets.synthetic_builder_config(_data(**{field: value})).name)
  names.add(datasets.synthetic_builder_config(_data(vignetting=0.1)).name)
  names.add(datasets.synthetic_builder_config(_data(**OFF_DEFAULT)).name)
  for close in (0.1234561, 0.1234564):  # equal to 6 digits: still two datasets
    names.add(datasets.synthetic_builder_config(_data(min_contrast=close)).name)
  assert len(names) == len(OFF_DEFAULT) + 5


def _prepared_views(data, data_dir):
  builder = tfds_dpd.dp_synthetic.DpSynthetic(config=datasets.synthetic_builder_config(data), data_dir=data_dir)
  builder.download_and_prepare()
  example = builder.as_data_source()["train"][0]
  return [example[key].astype(np.float64) / 65535 for key in ("left", "right")]


def test_vignetting_reaches_the_prepared_scenes(tmp_path):
  clean = _prepared_views(_data(), tmp_path)
  vignetted = _prepared_views(_data(vignetting=0.2), tmp_path)
  # The same scene (the strength draw is made either way), each view times its column gain.
  usable = (clean[0] > 0.05) & (clean[0] < 0.8) & (clean[1] > 0.05) & (clean[1] < 0.8)
  gains = [np.nanmedian(np.where(usable, v / c, np.nan), axis=(0, 2)) for v, c in zip(vignetted, clean)]
  ratio = gains[0] / gains[1]
  assert ratio[0] < 0.99 and ratio[-1] > 1.01  # L/R: darker on the left, brighter on the right
  strength = (gains[0][-1] - gains[0][0]) * 48 / 47  # 1 + s u with u from -0.5 to 0.5
  assert 0 < strength <= 0.2
  want = dp_render.vignetting_gains(48, strength)
  for got, expected in zip(gains, want):
    np.testing.assert_allclose(got, expected, atol=2e-3)


def test_noise_gamma_psf_and_contrast_reach_the_prepared_scenes(tmp_path):
  clean = _prepared_views(_data(), tmp_path)
  for field, value in OFF_DEFAULT.items():
    if field not in ("vignetting", "rim_strength"):
      changed = _prepared_views(_data(**{field: value}), tmp_path)
      assert np.abs(changed[0] - clean[0]).mean() > 1e-3, field
