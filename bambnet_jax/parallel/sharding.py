"""Data parallelism: one device mesh with a `data` axis; batches sharded on it, state replicated.

Several processes (hosts, or one per GPU, which a launch-bound step needs: experiments/PERF.md) call
`initialize_distributed` first; each then feeds its own shard of every global batch. For example
(`bambnet train --local-processes 2` starts one process per GPU of this host: parallel/launch.py):

  bambnet train --config configs/dpdd.py --workdir /shared/dir parallel.coordinator=host0:12345 \\
      parallel.num_processes=2 parallel.process_id=I [parallel.local_device_ids=I]
"""

import json
import os
import pathlib

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"  # the mesh axis the batch is sharded over
COMPILATION_CACHE_ENV = "BAMBNET_COMPILATION_CACHE"  # a directory, or "off"
DEFAULT_COMPILATION_CACHE = "~/.cache/bambnet_jax/xla"
COMPILATION_CACHE_BYTES = 4 * 2**30  # a size limit also makes JAX lock the cache for concurrent processes


def initialize_distributed(coordinator=None, num_processes=None, process_id=None, local_device_ids=None):
  """Joins a multi-process run (no-op without a coordinator); `local_device_ids`: this process's GPUs
  as ints or "0,1" (None: all visible)."""
  if not coordinator:
    return
  # CPU processes need a collectives library to talk to each other; GPUs use NCCL regardless.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  ids = local_device_ids
  if isinstance(ids, (str, int)):  # "0,1" or 1
    ids = [i for i in str(ids).split(",") if i.strip()]
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                             process_id=process_id, local_device_ids=None if ids is None else [int(i) for i in ids])


def use_compilation_cache(directory=None):
  """Keeps compiled programs on disk, so a rerun, a resumed run or the next image folder skips
  compiling (a training step takes 25-35 s to compile on a GPU); returns the directory or None.

  directory: None for $BAMBNET_COMPILATION_CACHE or ~/.cache/bambnet_jax/xla; "off" for no cache.
  A cache directory set through JAX itself is left as it is. Raises OSError if it cannot be made.
  """
  if jax.config.jax_compilation_cache_dir:
    return pathlib.Path(jax.config.jax_compilation_cache_dir)
  directory = str(directory or os.environ.get(COMPILATION_CACHE_ENV) or DEFAULT_COMPILATION_CACHE)
  if directory == "off":
    return None
  path = pathlib.Path(directory).expanduser()
  path.mkdir(parents=True, exist_ok=True)  # JAX would only warn, once per program, much later
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_compilation_cache_max_size", COMPILATION_CACHE_BYTES)
  return path


def device_report():
  """A line naming the devices JAX computes on; a second when an NVIDIA GPU is present but unused."""
  devices = jax.devices()
  kinds = sorted({d.device_kind for d in devices})
  line = f"running on {len(devices)} {jax.default_backend().upper()} device(s): {', '.join(kinds)}"
  if jax.default_backend() == "cpu" and os.path.exists("/proc/driver/nvidia/version"):
    line += ("\nan NVIDIA GPU is present but JAX cannot use it: install JAX's CUDA build "
             "(README, 'GPU install') or check that the CUDA plugin matches the driver")
  return line


def make_mesh(devices=None):
  """A 1-D mesh over all devices of all processes (auto axis type, so shardings propagate)."""
  return Mesh(np.asarray(jax.devices() if devices is None else devices), (DATA_AXIS,))


def replicated(mesh):
  return NamedSharding(mesh, P())


def batch_sharded(mesh):
  return NamedSharding(mesh, P(DATA_AXIS))


def _host_copy(leaf):
  """With several processes, a device array as host NumPy (jax cannot move arrays between processes)."""
  if not isinstance(leaf, jax.Array) or jax.process_count() == 1:
    return leaf
  if leaf.is_fully_replicated:  # every process holds the whole value (restored or replicated state)
    return np.asarray(leaf.addressable_data(0))
  return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))


def put_replicated(tree, mesh):
  """Places a pytree (host data, or arrays from an earlier placement or restore) on every device of the mesh."""
  return jax.device_put(jax.tree_util.tree_map(_host_copy, tree), replicated(mesh))


def local_rows(x):
  """This process's rows of a batch-sharded array as NumPy: the rows it fed, so its host-side fields line up."""
  if not isinstance(x, jax.Array) or x.is_fully_addressable:
    return np.asarray(jax.device_get(x))
  by_start = {}
  for shard in x.addressable_shards:
    by_start.setdefault(shard.index[0].start or 0, shard.data)  # devices holding the same rows repeat
  return np.concatenate([np.asarray(by_start[start]) for start in sorted(by_start)])


def gather_from_processes(value):
  """[value of process 0, value of process 1, ...] on every process; `value` must be JSON-able."""
  if jax.process_count() == 1:
    return [value]
  data = np.frombuffer(json.dumps(value).encode(), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(np.asarray([data.size], np.int64))).reshape(-1)
  padded = np.pad(data, (0, int(sizes.max()) - data.size))
  everything = np.asarray(multihost_utils.process_allgather(padded))
  return [json.loads(everything[p, :sizes[p]].tobytes()) for p in range(len(sizes))]
