"""Import of the official BaMBNet PyTorch checkpoints (SPEC section 2) into Flax parameters.

Key layout of the released model (`layer{s}.{i}` is stage s = 1..8 of branch i):
  head.0, tail_hard.0                      head and tail convs
  layer{s}.0.0                             branch 0's 1x1 conv
  layer{s}.{i}.0.body.{j}.body.{0,2}       RCAB j's two 3x3 convs (branch i >= 1)
  layer{s}.{i}.0.body.{j}.body.3.conv_du.{0,2}   its channel attention (squeeze, excite)
  layer{s}.{i}.0.body.{n}                  the residual group's closing conv
The deblurring and COC checkpoints share these keys, so the caller says which network a file holds.
The released code works in BGR (OpenCV, never converted); this project works in RGB, so the head's
input channels (within each view) and the tail's output channels are reversed on import.

Only this module needs PyTorch, and only to unpickle the file.
"""

import re

import numpy as np

from bambnet_jax.io import weights as weights_io
from bambnet_jax.models import branches
from bambnet_jax.models import wiring
from bambnet_jax.models import networks

_BGR_TO_RGB = np.array([2, 1, 0])


class CheckpointFormatError(ValueError):
  """A checkpoint whose keys or shapes do not match the published architecture."""


def read_state_dict(path):
  """The `state_dict` of a `.pth` file as NumPy arrays (a bare state dict is accepted too)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("convert-torch needs PyTorch: pip install -e '.[torch]'") from e
  try:
    # weights_only: never execute code from a downloaded pickle.
    blob = torch.load(path, map_location="cpu", weights_only=True)
  except FileNotFoundError:
    raise
  except Exception as e:
    raise CheckpointFormatError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
  state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
  if not isinstance(state, dict) or not state:
    raise CheckpointFormatError(f"{path}: no state_dict inside")
  arrays = {}
  for key, value in state.items():
    if not hasattr(value, "detach"):
      raise CheckpointFormatError(f"{path}: entry {key!r} is not a tensor")
    arrays[key.removeprefix("module.")] = value.detach().cpu().float().numpy()
  return arrays


def infer_model_config(state_dict, source="<state_dict>"):
  """The architecture a state dict holds: width from the head, RCABs per group from layer1's keys."""
  if "head.0.weight" not in state_dict:
    raise CheckpointFormatError(f"{source}: missing key 'head.0.weight'; not a BaMBNet checkpoint")
  width = state_dict["head.0.weight"].shape[0]
  branch_ids = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r"layer1\.(\d+)\.", k))})
  if not branch_ids or branch_ids != list(range(len(branch_ids))):
    raise CheckpointFormatError(f"{source}: branches under 'layer1.' are {branch_ids}; expected 0..M-1")
  capacities = []
  for i in branch_ids:
    rcabs = {int(m.group(1)) for k in state_dict
             if (m := re.match(rf"layer1\.{i}\.0\.body\.(\d+)\.body\.0\.weight$", k))}
    # Capacity k gives floor(k / 3) RCABs; 3n + 1 reproduces the paper's (1, 4, 7, 10).
    capacities.append(3 * len(rcabs) + 1)
  return networks.model_config(width=width, branch_capacities=capacities)


def _conv(state_dict, key):
  """A PyTorch conv (OIHW weight, bias) as this project's (OHWI kernel, bias)."""
  return {"kernel": np.transpose(state_dict[key + ".weight"], (0, 2, 3, 1)), "bias": state_dict[key + ".bias"]}


def _key_plan(config):
  """Every Flax parameter path (tuple) with the PyTorch conv prefix it comes from."""
  plan = {("head",): "head.0", ("tail",): "tail_hard.0"}
  for i, capacity in enumerate(config.branch_capacities):
    n = branches.blocks_per_group(capacity)
    for s in range(1, wiring.NUM_STAGES + 1):
      torch_prefix = f"layer{s}.{i}.0"
      flax_prefix = ("body", f"branch_{i}", f"stage_{s}")
      if n == 0:
        plan[flax_prefix] = torch_prefix
        continue
      for j in range(n):
        rcab = f"{torch_prefix}.body.{j}"
        plan[flax_prefix + (f"rcab_{j}", "conv_0")] = f"{rcab}.body.0"
        plan[flax_prefix + (f"rcab_{j}", "conv_1")] = f"{rcab}.body.2"
        plan[flax_prefix + (f"rcab_{j}", "attention", "squeeze")] = f"{rcab}.body.3.conv_du.0"
        plan[flax_prefix + (f"rcab_{j}", "attention", "excite")] = f"{rcab}.body.3.conv_du.2"
      plan[flax_prefix + ("conv_out",)] = f"{torch_prefix}.body.{n}"
  # The head is "body/head" in the Flax tree.
  plan[("body", "head")] = plan.pop(("head",))
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
  shapes = networks.param_shapes(net, config)
  params = {}
  for path, prefix in plan.items():
    want = shapes
    for name in path:
      want = want[name]
    conv = _conv(state_dict, prefix)
    for leaf, suffix, to_torch in (("kernel", "weight", (0, 3, 1, 2)), ("bias", "bias", (0,))):
      if conv[leaf].shape != want[leaf].shape:
        needed = tuple(int(want[leaf].shape[axis]) for axis in to_torch)
        raise CheckpointFormatError(f"{source}: {prefix}.{suffix} has shape {state_dict[f'{prefix}.{suffix}'].shape}, "
                                    f"the architecture needs {needed}")
    node = params
    for name in path[:-1]:
      node = node.setdefault(name, {})
    node[path[-1]] = conv
  head, tail = params["body"]["head"], params["tail"]  # OHWI: input channels last, outputs first
  views = head["kernel"].shape[-1] // 3
  head["kernel"] = head["kernel"][..., np.concatenate([_BGR_TO_RGB + 3 * v for v in range(views)])]
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
