"""Runs a few training steps of a tiny net on fixed batches; shared by the data-parallel tests.

Also a script: `python tests/step_runner.py PROCESS_ID COORDINATOR OUT.npz MODE` joins a
two-process run on localhost through jax.distributed, feeds this process's half of every global
batch, and (process 0) saves the losses and final parameters.
"""

import sys

import jax
import numpy as np
import optax

from bambnet_jax.models import networks
from bambnet_jax.parallel import sharding
from bambnet_jax.data import pipeline
from bambnet_jax.training import steps

CONFIG = networks.model_config(width=8, branch_capacities=(1, 4))
GLOBAL_BATCH = 4


def global_batch(seed, n=GLOBAL_BATCH, size=32):
  rng = np.random.default_rng(seed)
  sharp = rng.random((n, size, size, 3), np.float32)
  return {"left": sharp * 0.7 + np.roll(sharp, 1, axis=2) * 0.3,
          "right": sharp * 0.7 + np.roll(sharp, -1, axis=2) * 0.3, "sharp": sharp}


def run(mode, mesh, num_steps=2):
  """Losses and final parameters after `num_steps` steps; each process feeds its own rows."""
  optimizer = optax.adam(1e-3)
  net = "coc" if mode == "coc" else "deblur"
  model = networks.build(net, CONFIG)
  params = networks.init_params(net, CONFIG, jax.random.key(0))
  if mode == "coc":
    state = steps.create_state(params, optimizer)
    fn = steps.jit_train_step(steps.coc_train_step, mesh, model=model,
                              optimizer=optimizer, tv_start=0, tv_weight=1e-5)
  else:
    inputs_of_masks = steps.mask_inputs(networks.init_params("coc", CONFIG, jax.random.key(1)), [0.0, 0.05, 25.0])
    state = steps.create_state(params, optimizer, inputs_of_masks)
    fn = steps.jit_train_step(steps.deblur_train_step, mesh, model=model,
                              coc_model=networks.build("coc", CONFIG), optimizer=optimizer, mask_mode=mode,
                              anneal_steps=100)
  state = sharding.put_replicated(state, mesh)
  rows = GLOBAL_BATCH // jax.process_count()
  mine = slice(jax.process_index() * rows, (jax.process_index() + 1) * rows)
  losses = []
  for i in range(num_steps):
    local = {k: v[mine] for k, v in global_batch(i).items()}
    state, metrics = fn(state, pipeline.put_on_mesh(local, mesh))
    losses.append(float(metrics["loss"]))
  return losses, jax.device_get(state.params).tree()


def main(process_id, coordinator, out, mode):
  jax.config.update("jax_num_cpu_devices", 1)
  sharding.initialize_distributed(coordinator, 2, int(process_id))
  losses, params = run(mode, sharding.make_mesh())
  if jax.process_index() == 0:
    leaves = jax.tree_util.tree_leaves(params)
    np.savez(out, losses=np.asarray(losses), **{f"p{i}": leaf for i, leaf in enumerate(leaves)})


if __name__ == "__main__":
  main(*sys.argv[1:])
