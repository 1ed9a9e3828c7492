"""Network weights on disk: an orbax checkpoint of the parameters plus JSON metadata.

`--weights DIR` everywhere takes such a directory, written by `bambnet convert-torch` or a training
run. Orbax renames a checkpoint into place when complete: a killed process never leaves one that looks whole.
"""

import os
import pathlib

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

WEIGHTS_FORMAT = "bambnet-jax-weights-1"
KERNEL_LAYOUT = "OHWI"  # conv kernels as cuDNN reads them (out, height, width, in)
_STEP = 0


class WeightsError(ValueError):
  """Weights that cannot be used: the message names the directory and the problem."""


def _manager(directory):
  return ocp.CheckpointManager(os.path.abspath(directory), item_names=("params", "meta"))


def save_weights(directory, params, net, model_config, source=""):
  """Writes `params` of network `net` ("deblur"/"coc") with its architecture to `directory`."""
  directory = pathlib.Path(directory)
  if directory.exists() and any(directory.iterdir()):
    raise WeightsError(f"{directory}: already exists and is not empty; choose a new output directory")
  model = model_config.to_dict() | {"kernel_layout": KERNEL_LAYOUT,
                                    "branch_capacities": list(model_config.branch_capacities)}
  meta = {"format": WEIGHTS_FORMAT, "net": net, "model": model, "source": str(source)}
  params = jax.tree_util.tree_map(np.asarray, params)
  with _manager(directory) as manager:
    manager.save(_STEP, args=ocp.args.Composite(params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)))
    manager.wait_until_finished()


def load_weights(directory, expected_net=None):
  """Reads weights written by `save_weights`: (params, net, the `networks.model_config` they were written with)."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    raise WeightsError(f"{directory}: weights directory not found")
  with _manager(directory) as manager:
    step = manager.latest_step()
    if step is None:
      raise WeightsError(f"{directory}: no complete checkpoint inside (interrupted write or wrong path?)")
    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    if not isinstance(meta, dict) or meta.get("format") != WEIGHTS_FORMAT:
      raise WeightsError(f"{directory}: not a bambnet-jax weights checkpoint")
    net = meta["net"]
    if expected_net is not None and net != expected_net:
      raise WeightsError(f"{directory}: holds the {net!r} network, but the {expected_net!r} network is needed")
    if meta["model"].get("kernel_layout") != KERNEL_LAYOUT or "conv_gradients" not in meta["model"]:
      raise WeightsError(f"{directory}: written by an older bambnet-jax (HWIO kernels or old model "
                         "fields); convert the source checkpoint again (bambnet convert-torch) or retrain")
    params = manager.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore()))["params"]
  config = ml_collections.ConfigDict(meta["model"] | {"branch_capacities": tuple(meta["model"]["branch_capacities"])})
  return params, net, config
