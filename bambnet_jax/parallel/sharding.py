"""Data parallelism: one device mesh with a `data` axis; batches sharded on it, state replicated.

Several processes: call `initialize_distributed` first in every process (the same command, with
its process id), then each process feeds only its own shard of every global batch
(`jax.make_array_from_process_local_data`); the jitted step sees one global array.

  # two hosts, one process each driving all its GPUs; I = 0 on host0, 1 on host1:
  bambnet train --config configs/dpdd.py --workdir gs-or-shared/dir \\
      parallel.coordinator=host0:12345 parallel.num_processes=2 parallel.process_id=I

One host, one process per GPU: each GPU gets its own launching thread, which a launch-bound step
needs to scale (experiments/PERF.md).
Process i owns only GPU i through `local_device_ids`; `bambnet train --local-processes 2`
(parallel/launch.py) starts them, which is the same as:

  for i in 0 1; do
    bambnet train --config configs/dpdd.py --workdir /shared/dir parallel.coordinator=localhost:12345 \\
        parallel.num_processes=2 parallel.process_id=$i parallel.local_device_ids=$i &
  done; wait
"""

import json
import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"  # the mesh axis the batch is sharded over


def initialize_distributed(coordinator=None, num_processes=None, process_id=None, local_device_ids=None):
  """Joins a multi-process run. No-op when no coordinator is given (one process).

  `local_device_ids`: the local GPUs this process owns, as ints or "0,1" (None: all visible);
  one id per process runs one process per GPU.
  """
  if not coordinator:
    return
  # CPU processes need a collectives library to talk to each other; GPUs use NCCL regardless.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                             process_id=process_id, local_device_ids=device_id_list(local_device_ids))


def device_id_list(ids):
  """None, an int, "0,1" or a sequence of ints -> a list of ints (or None)."""
  if ids is None or isinstance(ids, list):
    return ids
  if isinstance(ids, int):
    return [ids]
  if isinstance(ids, str):
    return [int(i) for i in ids.split(",") if i.strip()]
  return [int(i) for i in ids]


def device_report():
  """One line naming the devices JAX computes on; a second, plainly, when an NVIDIA GPU is present
  but JAX cannot use it (a CPU-only jax installed)."""
  devices = jax.devices()
  kinds = sorted({d.device_kind for d in devices})
  line = f"running on {len(devices)} {jax.default_backend().upper()} device(s): {', '.join(kinds)}"
  if jax.default_backend() == "cpu" and os.path.exists("/proc/driver/nvidia/version"):
    line += ("\nan NVIDIA GPU is present but JAX cannot use it: install JAX's CUDA build "
             "(README, 'GPU install') or check that the CUDA plugin matches the driver")
  return line


def make_mesh(devices=None):
  """A 1-D mesh over all devices of all processes (auto axis type, so shardings propagate)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh):
  return NamedSharding(mesh, P())


def batch_sharded(mesh):
  return NamedSharding(mesh, P(DATA_AXIS))


def _host_copy(leaf):
  """With several processes, a device array as host NumPy: jax cannot move arrays between processes."""
  if not isinstance(leaf, jax.Array) or jax.process_count() == 1:
    return leaf
  if leaf.is_fully_replicated:  # every process holds the whole value (restored or replicated state)
    return np.asarray(leaf.addressable_data(0))
  return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))


def put_replicated(tree, mesh):
  """Places a pytree (host data, or arrays from an earlier placement or restore) on every device of the mesh."""
  return jax.device_put(jax.tree_util.tree_map(_host_copy, tree), replicated(mesh))


def local_rows(x):
  """This process's rows of a batch-sharded array, as NumPy (all rows when one process runs).

  Process p fed rows [p * n, (p + 1) * n) (`data.pipeline.put_on_mesh`), so its host-side fields (names) line up.
  """
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
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[:data.size] = data
  everything = np.asarray(multihost_utils.process_allgather(padded))
  return [json.loads(everything[p, :sizes[p]].tobytes()) for p in range(len(sizes))]
