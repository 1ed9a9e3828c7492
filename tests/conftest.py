"""Test set-up: two CPU devices so multi-device code runs without a GPU."""

import os
import pathlib
import sys
import tempfile

import jax
import pytest

# Must happen before any JAX backend is initialised.
jax.config.update("jax_num_cpu_devices", 2)
# The commands' compiled programs go to a cache of the tests' own (shared by the xdist workers), not
# the user's: tests that run the same small configs then compile each program once.
os.environ.setdefault("BAMBNET_COMPILATION_CACHE", str(pathlib.Path(tempfile.gettempdir()) / f"bambnet_tests_xla_{os.getuid()}"))
# The experiment scripts import their shared module as `runs`, as when run from experiments/.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "experiments"))

DATA_DIR = pathlib.Path(__file__).parent / "data"
REAL_DP_DIR = DATA_DIR / "real_dp" / "canon_r6m2_flat"


@pytest.fixture
def real_dp_dir():
  return REAL_DP_DIR
