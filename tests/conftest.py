"""Test set-up: two CPU devices so multi-device code runs without a GPU."""

import pathlib

import jax
import pytest

# Must happen before any JAX backend is initialised.
jax.config.update("jax_num_cpu_devices", 2)

DATA_DIR = pathlib.Path(__file__).parent / "data"
REAL_DP_DIR = DATA_DIR / "real_dp" / "canon_r6m2_flat"


@pytest.fixture
def real_dp_dir():
  return REAL_DP_DIR
