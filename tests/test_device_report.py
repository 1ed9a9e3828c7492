"""`bambnet` names the devices it computes on, and says plainly when a GPU sits unused."""

import os

import jax

from bambnet_jax import cli
from bambnet_jax.parallel import sharding


def test_the_report_names_the_backend_and_device_count():
  line = sharding.device_report()
  assert line.startswith(f"running on {len(jax.devices())} {jax.default_backend().upper()} device(s)")


def test_an_unused_nvidia_gpu_is_reported(monkeypatch):
  real_exists = os.path.exists
  monkeypatch.setattr(os.path, "exists", lambda p: p == "/proc/driver/nvidia/version" or real_exists(p))
  assert jax.default_backend() == "cpu"  # CI and this machine have no GPU
  assert "an NVIDIA GPU is present but JAX cannot use it" in sharding.device_report()


def test_the_command_prints_the_report_first(capsys, tmp_path):
  assert cli.main(["coc", "--left", str(tmp_path / "missing_L.png"), "--right", str(tmp_path / "missing_R.png"),
                   "--output-dir", str(tmp_path / "out")]) == 2
  assert capsys.readouterr().err.splitlines()[0] == f"bambnet coc: {sharding.device_report()}"
