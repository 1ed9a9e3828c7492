"""Import of the official BaMBNet PyTorch checkpoints (SPEC section 2) into Flax parameters.

The released keys (`layer{s}.{i}` is stage s = 1..8 of branch i) are mapped in `_key_plan`; the
deblurring and COC checkpoints share them, so the caller says which network a file holds. The
released code works in BGR (OpenCV), this project in RGB: the head's input channels (within each
view) and the tail's output channels are reversed on import. PyTorch is needed only to unpickle.
"""

import re

from flax import traverse_util
import numpy as np

from bambnet_jax.io import weights as weights_io
from bambnet_jax.models import branches
from bambnet_jax.models import wiring
from bambnet_jax.models import networks

_BGR_TO_RGB = np.array([2, 1, 0])
# An RCAB's convs: Flax path within `rcab_{j}` -> PyTorch key within `body.{j}.body`.
_RCAB_KEYS = {("conv_0",): "0", ("conv_1",): "2", ("attention", "squeeze"): "3.conv_du.0",
              ("attention", "excite"): "3.conv_du.2"}


class CheckpointFormatError(ValueError):
  """A checkpoint whose keys or shapes do not match the published architecture."""


def read_state_dict(path):
  """The `state_dict` of a `.pth` file as NumPy arrays (a bare state dict is accepted too)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("convert-torch needs PyTorch: pip install -e '.[torch]'") from e
  try:
    blob = torch.load(path, map_location="cpu", weights_only=True)  # never run a downloaded pickle's code
  except FileNotFoundError:
    raise
  except Exception as e:
    raise CheckpointFormatError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
  state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
  if not isinstance(state, dict) or not state:
    raise CheckpointFormatError(f"{path}: no state_dict inside")
  not_tensors = [key for key, value in state.items() if not hasattr(value, "detach")]
  if not_tensors:
    raise CheckpointFormatError(f"{path}: entry {not_tensors[0]!r} is not a tensor")
  return {key.removeprefix("module."): value.detach().cpu().float().numpy() for key, value in state.items()}


def infer_model_config(state_dict, source="<state_dict>"):
  """The architecture a state dict holds: width from the head, n RCABs per group (capacity 3n + 1) from layer1."""
  if "head.0.weight" not in state_dict:
    raise CheckpointFormatError(f"{source}: missing key 'head.0.weight'; not a BaMBNet checkpoint")
  branch_ids = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r"layer1\.(\d+)\.", k))})
  if not branch_ids or branch_ids != list(range(len(branch_ids))):
    raise CheckpointFormatError(f"{source}: branches under 'layer1.' are {branch_ids}; expected 0..M-1")
  capacities = [3 * sum(bool(re.match(rf"layer1\.{i}\.0\.body\.\d+\.body\.0\.weight$", k)) for k in state_dict) + 1
                for i in branch_ids]
  return networks.model_config(width=state_dict["head.0.weight"].shape[0], branch_capacities=capacities)


def _key_plan(config):
  """Every Flax parameter path (tuple) with the PyTorch conv prefix it comes from."""
  plan = {("tail",): "tail_hard.0"}
  for i, capacity in enumerate(config.branch_capacities):
    n = branches.blocks_per_group(capacity)
    for s in range(1, wiring.NUM_STAGES + 1):
      torch_prefix, flax_prefix = f"layer{s}.{i}.0", ("body", f"branch_{i}", f"stage_{s}")
      if n == 0:
        plan[flax_prefix] = torch_prefix
        continue
      for j in range(n):
        for path, suffix in _RCAB_KEYS.items():
          plan[flax_prefix + (f"rcab_{j}",) + path] = f"{torch_prefix}.body.{j}.body.{suffix}"
      plan[flax_prefix + ("conv_out",)] = f"{torch_prefix}.body.{n}"
  plan[("body", "head")] = "head.0"
  return plan


def state_dict_to_params(state_dict, net, config, source="<state_dict>"):
  """Converts a released state dict into the Flax parameter tree of `net` with `config`."""
  plan = _key_plan(config)
  expected = {f"{prefix}.{suffix}" for prefix in plan.values() for suffix in ("weight", "bias")}
  missing, extra = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
  if missing or extra:
    raise CheckpointFormatError(
        f"{source}: keys do not match the architecture (width {config.width}, capacities "
        f"{tuple(config.branch_capacities)}): missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
        f"unexpected {extra[:5]}{' ...' if len(extra) > 5 else ''}")
  shapes = traverse_util.flatten_dict(networks.param_shapes(net, config))
  params = {}
  for path, prefix in plan.items():
    weight, bias = state_dict[f"{prefix}.weight"], state_dict[f"{prefix}.bias"]
    params[path] = {"kernel": np.transpose(weight, (0, 2, 3, 1)), "bias": bias}  # OIHW -> OHWI
    for leaf, suffix, to_torch in (("kernel", "weight", (0, 3, 1, 2)), ("bias", "bias", (0,))):
      want = shapes[path + (leaf,)].shape
      if params[path][leaf].shape != want:
        raise CheckpointFormatError(f"{source}: {prefix}.{suffix} has shape {state_dict[f'{prefix}.{suffix}'].shape}, "
                                    f"the architecture needs {tuple(int(want[axis]) for axis in to_torch)}")
  params = traverse_util.unflatten_dict(params)
  head, tail = params["body"]["head"], params["tail"]  # OHWI: input channels last, outputs first
  head["kernel"] = head["kernel"][..., np.concatenate([_BGR_TO_RGB + v for v in range(0, head["kernel"].shape[-1], 3)])]
  tail["kernel"], tail["bias"] = tail["kernel"][_BGR_TO_RGB], tail["bias"][_BGR_TO_RGB]
  return params


def convert_file(checkpoint_path, output_dir, net):
  """`bambnet convert-torch`: reads a `.pth` file and writes an orbax weights directory."""
  if net not in networks.NET_KINDS:
    raise ValueError(f"--net must be one of {networks.NET_KINDS}, got {net!r}")
  state_dict = read_state_dict(checkpoint_path)
  config = infer_model_config(state_dict, checkpoint_path)
  params = state_dict_to_params(state_dict, net, config, checkpoint_path)
  weights_io.save_weights(output_dir, params, net, config, source=checkpoint_path)
  return params, config
