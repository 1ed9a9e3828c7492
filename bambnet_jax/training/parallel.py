"""Data parallelism: one device mesh with a `data` axis; batches sharded on it, state replicated.

Several hosts: call `initialize_distributed` first in every process (the same command on each
host, with its process id), then each process feeds only its own shard of every global batch
(`jax.make_array_from_process_local_data`); the jitted step sees one global array.

  # host 0 and host 1 of a two-host run:
  bambnet train --config configs/dpdd.py --workdir gs-or-shared/dir \\
      --coordinator host0:12345 --num-processes 2 --process-id {0,1}
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from bambnet_jax.data import pipeline

DATA_AXIS = pipeline.DATA_AXIS


def initialize_distributed(coordinator=None, num_processes=None, process_id=None):
  """Joins a multi-process run. No-op when no coordinator is given (one process)."""
  if not coordinator:
    return
  # CPU processes need a collectives library to talk to each other; GPUs use NCCL regardless.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                             process_id=process_id)


def make_mesh(devices=None):
  """A 1-D mesh over all devices of all processes (auto axis type, so shardings propagate)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh):
  return NamedSharding(mesh, P())


def batch_sharded(mesh):
  return NamedSharding(mesh, P(DATA_AXIS))


def put_replicated(tree, mesh):
  """Places a host pytree on every device of the mesh."""
  return jax.device_put(tree, replicated(mesh))


def put_batch(local_batch, mesh):
  """Assembles each process's local NumPy batch into global arrays sharded on the batch axis."""
  return pipeline.put_on_mesh(local_batch, mesh, DATA_AXIS)
