"""The whole pipeline on the smoke config: stages in order, resume without redoing, identical resume."""

import json
import pathlib
import sys

import jax
import numpy as np
import pytest

from bambnet_jax.io import weights as weights_io
from bambnet_jax.io import config_files
from bambnet_jax.training import stage_checkpoints
from bambnet_jax.training import stages
from bambnet_jax.commands import train

SMOKE = pathlib.Path(__file__).parents[1] / "configs" / "smoke.py"


def smoke_config(data_dir, *overrides):
  config = config_files.load_config(SMOKE)
  return config_files.apply_overrides(config, [f"data.data_dir={data_dir}", *overrides])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


def test_all_stages_then_resume_skips_finished_stages(tmp_path, data_dir, monkeypatch):
  workdir = tmp_path / "run"
  summary = train.train_and_evaluate(smoke_config(data_dir), workdir)
  progress = json.loads((workdir / "progress.json").read_text())
  assert list(progress["finished"]) == list(stage_checkpoints.STAGES)
  assert summary["num_images"] == 2 and np.isfinite(summary["psnr"]) and "coc_mae" in summary
  thresholds = progress["finished"]["search"]["thresholds"]
  assert thresholds[0] == 0.0 and thresholds[-1] == 25.0 and np.all(np.diff(thresholds) > 0)
  rounds = json.loads((workdir / "search" / "rounds.json").read_text())
  assert len(rounds) == progress["finished"]["search"]["rounds"] and rounds[-1]["thresholds"] == thresholds
  assert (workdir / "search" / "rounds.png").stat().st_size > 1000
  assert (workdir / "eval" / "metrics.md").exists() and (workdir / "tensorboard").is_dir()
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert {r["stage"] for r in records} == {"coc", "search", "deblur"}
  for stage, net in (("coc", "coc"), ("deblur", "deblur")):
    assert weights_io.load_weights(workdir / stage / "weights", expected_net=net)[1] == net

  def must_not_run(*args, **kwargs):
    raise AssertionError("a finished stage ran again")

  for name in ("train_coc", "search_thresholds", "train_deblur"):
    monkeypatch.setattr(stages, name, must_not_run)
  monkeypatch.setattr(train.evaluate, "evaluate", must_not_run)
  assert train.train_and_evaluate(smoke_config(data_dir), workdir) == summary


class _Killed(BaseException):
  """Stands for SIGKILL: nothing after it runs, only what reached the disk survives."""


def _kill_after_checkpoint(monkeypatch, stage, step):
  original = stage_checkpoints.StageCheckpoints.save

  def save_then_die(self, saved_step, state, extra):
    original(self, saved_step, state, extra)
    if self._manager.directory.parent.name == stage and saved_step == step:
      raise _Killed()

  monkeypatch.setattr(stage_checkpoints.StageCheckpoints, "save", save_then_die)


def _params(workdir, stage, net):
  return jax.tree_util.tree_leaves(weights_io.load_weights(workdir / stage / "weights", expected_net=net)[0])


@pytest.mark.parametrize("stage,kill_step", [("coc", 2), ("search", 2)])
def test_killed_run_resumes_to_the_same_result(tmp_path, data_dir, monkeypatch, stage, kill_step):
  overrides = ["coc.num_steps=6", "search.steps_per_round=4"]
  straight = tmp_path / "straight"
  train.train_and_evaluate(smoke_config(data_dir, *overrides), straight, stop_after="search")

  killed = tmp_path / "killed"
  with monkeypatch.context() as patch:
    _kill_after_checkpoint(patch, stage, kill_step)
    with pytest.raises(_Killed):
      train.train_and_evaluate(smoke_config(data_dir, *overrides), killed, stop_after="search")
  train.train_and_evaluate(smoke_config(data_dir, *overrides), killed, stop_after="search")

  for a, b in zip(_params(straight, "coc", "coc"), _params(killed, "coc", "coc")):
    np.testing.assert_array_equal(a, b)
  straight_progress = json.loads((straight / "progress.json").read_text())["finished"]["search"]
  killed_progress = json.loads((killed / "progress.json").read_text())["finished"]["search"]
  assert straight_progress == killed_progress
  rounds = [json.loads((w / "search" / "rounds.json").read_text()) for w in (straight, killed)]
  np.testing.assert_array_equal(np.asarray(rounds[0][-1]["errors"]), np.asarray(rounds[1][-1]["errors"]))


def test_nonfinite_loss_stops_with_stage_and_step_named(tmp_path, data_dir):
  # An infinite TV weight makes the loss infinite from the step the TV term switches on (2).
  config = smoke_config(data_dir, "coc.tv_weight=1e400", "coc.num_steps=6")
  with pytest.raises(FloatingPointError, match=r"stage 'coc' by step 4"):
    train.train_and_evaluate(config, tmp_path / "nan", stop_after="coc")
  assert not (tmp_path / "nan" / "progress.json").exists()
  # The last good checkpoint (step 2, before the TV term) is kept; nothing at or after step 4.
  ckpts = stage_checkpoints.StageCheckpoints(tmp_path / "nan", "coc")
  assert ckpts.latest_step() == 2
  ckpts.close()


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))


def test_ablation_without_search_or_masks_skips_the_coc_stage(tmp_path):
  """Table III's no-masks run reads no COC map: no COC net is trained, none is evaluated."""
  from bambnet_jax.io import config_files  # pylint: disable=g-import-not-at-top
  from bambnet_jax.commands import train  # pylint: disable=g-import-not-at-top
  config = config_files.apply_overrides(
      config_files.load_config(str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "smoke.py")),
      ["search.enabled=False", "deblur.use_masks=False", f"data.data_dir={tmp_path / 'tfds'}"])
  summary = train.train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run" / "coc").exists()
  assert (tmp_path / "run" / "deblur" / "weights").is_dir()
  assert "coc_mae" not in summary and summary["num_images"] == 2
  assert summary["thresholds"] == [0.0, 1.9, 4.2, 6.2, 25.0]
