"""`bambnet train --local-processes N`: one process per device of this host, one jax.distributed run.

On CPU each process owns one CPU device; the run must go through every stage, write each file
once, and leave a workdir that a plain single-process run recognises as finished.
"""

import json
import pathlib
import sys

import numpy as np
import pytest

from bambnet_jax.io import weights as weights_io
from bambnet_jax import cli
from bambnet_jax.evaluation import evaluate
from bambnet_jax.training import stage_checkpoints
from bambnet_jax.parallel import launch
from bambnet_jax.training import stages
from bambnet_jax.commands import train

SMOKE = str(pathlib.Path(__file__).parents[1] / "configs" / "smoke.py")


def test_train_commands_give_each_process_its_id_and_device():
  commands = launch.train_commands("configs/x.py", "/w", ["a.b=1"], 3, stop_after="coc", python="py")
  assert len(commands) == 3
  coordinators = set()
  for i, command in enumerate(commands):
    assert command[:10] == ["py", "-m", "bambnet_jax.cli", "train", "--config", "configs/x.py", "--workdir", "/w",
                            "--stop-after", "coc"]
    assert command[10] == "a.b=1"
    tail = dict(token.split("=", 1) for token in command[11:])
    assert tail["parallel.process_id"] == str(i) and tail["parallel.local_device_ids"] == str(i)
    assert tail["parallel.num_processes"] == "3"
    coordinators.add(tail["parallel.coordinator"])
  assert len(coordinators) == 1 and coordinators.pop().startswith("localhost:")


def test_a_failing_process_stops_the_others_and_shows_its_log(capfd):
  sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
  failing = [sys.executable, "-c", "import sys; print('bad input'); sys.exit(3)"]
  assert launch.run_processes([sleeper, failing], name="test") == 1
  err = capfd.readouterr().err
  assert "process 1 exited with code 3" in err and "bad input" in err


def test_two_local_processes_train_every_stage_once(tmp_path, monkeypatch):
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  workdir = tmp_path / "run"
  overrides = [f"data.data_dir={tmp_path / 'tfds'}"]
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["train", "--config", SMOKE, "--workdir", str(workdir), "--local-processes", "2", *overrides])
  assert exit_info.value.code == 0
  progress = json.loads((workdir / "progress.json").read_text())
  assert list(progress["finished"]) == list(stage_checkpoints.STAGES)
  summary = progress["finished"]["eval"]
  assert summary["num_images"] == 2 and np.isfinite(summary["psnr"]) and np.isfinite(summary["coc_mae"])
  for stage, net in (("coc", "coc"), ("deblur", "deblur")):
    assert weights_io.load_weights(workdir / stage / "weights", expected_net=net)[1] == net
  # Only process 0 logs: one record per logged step, not two.
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  keys = [(r["stage"], r["step"], tuple(sorted(r))) for r in records]  # the search logs 2 kinds per round
  assert len(keys) == len(set(keys))

  # The processes' gathered evaluation equals one process scoring the same weights on its own.
  alone = evaluate.evaluate_checkpoint(cli_config(overrides), workdir=workdir, output_dir=tmp_path / "alone",
                                       metric_names=["psnr", "ssim", "mae"])
  assert alone["num_images"] == summary["num_images"]
  for key in ("psnr", "ssim", "mae", "input_psnr", "coc_mae"):
    np.testing.assert_allclose(summary[key], alone[key], rtol=1e-5, err_msg=key)

  # A single-process run over the same workdir finds every stage finished.
  def must_not_run(*args, **kwargs):
    raise AssertionError("a finished stage ran again")

  for name in ("train_coc", "search_thresholds", "train_deblur"):
    monkeypatch.setattr(stages, name, must_not_run)
  monkeypatch.setattr(train.evaluate, "evaluate", must_not_run)
  config = cli_config(overrides)
  assert train.train_and_evaluate(config, workdir)["psnr"] == summary["psnr"]


def cli_config(overrides):
  from bambnet_jax.io import config_files  # pylint: disable=g-import-not-at-top
  return config_files.apply_overrides(config_files.load_config(SMOKE), overrides)
