"""The persistent compilation cache the `bambnet` commands use."""

import subprocess
import sys

from bambnet_jax.parallel import sharding

PROGRAM = """
import sys, jax, jax.numpy as jnp
from bambnet_jax.parallel import sharding
hits = []
jax.monitoring.register_event_listener(lambda event, **_: hits.append(event) if "cache_hits" in event else None)
print(sharding.use_compilation_cache(sys.argv[1]))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # cache even this small program
print(float(jax.jit(lambda x: jnp.tanh(x) @ x.T)(jnp.ones((8, 8))).sum()), len(hits))
"""


def run_program(cache):
  return subprocess.run([sys.executable, "-c", PROGRAM, str(cache)], capture_output=True, text=True, check=True,
                        env={"JAX_PLATFORMS": "cpu", "PATH": ""}).stdout.split()


def test_a_second_process_reads_what_the_first_compiled(tmp_path):
  cache = tmp_path / "xla"
  directory, result, hits = run_program(cache)
  assert directory == str(cache) and int(hits) == 0
  assert any(p.name.startswith("jit_") for p in cache.glob("*-cache"))
  _, second_result, second_hits = run_program(cache)
  assert second_result == result and int(second_hits) > 0  # the executables came from the cache


def test_off_leaves_jax_without_a_cache_and_a_cache_set_through_jax_wins(tmp_path):
  # In fresh processes: a test before this one may have switched this process's cache on.
  check = ("import jax; from bambnet_jax.parallel import sharding; "
           "print(sharding.use_compilation_cache(), jax.config.jax_compilation_cache_dir)")
  run = lambda env: subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True,
                                   env={"JAX_PLATFORMS": "cpu", "PATH": "", **env}).stdout.split()
  assert run({sharding.COMPILATION_CACHE_ENV: "off"}) == ["None", "None"]
  own = str(tmp_path / "jax_own")
  assert run({sharding.COMPILATION_CACHE_ENV: str(tmp_path / "ours"), "JAX_COMPILATION_CACHE_DIR": own}) == [own, own]
