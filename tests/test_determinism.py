"""One seed, one result: the COC stage is bitwise reproducible across runs, and the seed matters."""

import pathlib

import jax
import numpy as np
import pytest

from bambnet_jax.io import weights as weights_io
from bambnet_jax.io import config_files
from bambnet_jax.commands import train

SMOKE = pathlib.Path(__file__).parents[1] / "configs" / "smoke.py"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


def coc_params(data_dir, workdir, seed):
  """Trains the smoke COC net for 4 steps in a fresh workdir; returns its exported parameter leaves."""
  config = config_files.apply_overrides(config_files.load_config(SMOKE),
                                         [f"data.data_dir={data_dir}", f"seed={seed}"])
  assert train.train_and_evaluate(config, workdir, stop_after="coc") is None
  params, net, _ = weights_io.load_weights(workdir / "coc" / "weights", expected_net="coc")
  assert net == "coc"
  return jax.tree_util.tree_flatten_with_path(jax.device_get(params))


def test_same_seed_gives_bitwise_identical_coc_params_and_another_seed_does_not(tmp_path, data_dir):
  first = coc_params(data_dir, tmp_path / "a", seed=0)
  second = coc_params(data_dir, tmp_path / "b", seed=0)
  other = coc_params(data_dir, tmp_path / "c", seed=1)

  assert [path for path, _ in first[0]] == [path for path, _ in second[0]] == [path for path, _ in other[0]]
  for (path, a), (_, b) in zip(first[0], second[0]):
    assert a.dtype == b.dtype and a.shape == b.shape, path
    assert a.tobytes() == b.tobytes(), f"{jax.tree_util.keystr(path)} differs between two runs of seed 0"
  differing = [path for (path, a), (_, c) in zip(first[0], other[0]) if a.tobytes() != c.tobytes()]
  # A new seed changes the initialisation and the data order, so nearly every parameter moves.
  assert len(differing) >= len(first[0]) // 2, differing
  assert any(np.abs(a - c).max() > 1e-3 for (_, a), (_, c) in zip(first[0], other[0]))
