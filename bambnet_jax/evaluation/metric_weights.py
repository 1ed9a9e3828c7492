"""Pretrained weights of the LPIPS and FID networks (`_SOURCES`), found under their published names.

Nothing is downloaded. Searched in order: --metric-weights, $BAMBNET_METRIC_WEIGHTS, DEFAULT_DIR,
torch's download cache and, for LPIPS' linear layers, an installed `lpips` package. Files are read
with torch (the `[torch]` extra) and converted strictly; their SHA-256 go with the results.
"""

import hashlib
import importlib.util
import os
import pathlib

from flax import traverse_util
import numpy as np

ENV_VAR = "BAMBNET_METRIC_WEIGHTS"
DEFAULT_DIR = pathlib.Path("~/.cache/bambnet_jax/metric_weights")

BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth",
                  "squeeze": "squeezenet1_1-b8a52dc0.pth"}
LPIPS_LINEAR_FILES = {net: f"lpips/v0.1/{net}.pth" for net in BACKBONE_FILES}
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"

_SOURCES = {
    **{name: f"torchvision's pretrained {net} weights (torchvision.models.{model}(weights='DEFAULT') "
             "saves it to ~/.cache/torch/hub/checkpoints/)"
       for (net, name), model in zip(BACKBONE_FILES.items(), ("alexnet", "vgg16", "squeezenet1_1"))},
    **{name: f"the lpips package (pip download lpips==0.1.4; the file is lpips/weights/v0.1/{net}.pth "
             "inside its wheel)" for net, name in LPIPS_LINEAR_FILES.items()},
    INCEPTION_FILE: "pytorch-fid's release (pytorch_fid.inception.FID_WEIGHTS_URL)",
}


class MissingMetricWeightsError(FileNotFoundError):
  """A metric's pretrained weights file is not in any searched folder; says where to put it."""


class MetricWeightsError(ValueError):
  """A weights file that cannot be used: unreadable, or tensors missing, extra or misshapen."""


def find_file(name, metric, weights_dir=None):
  """The path of weights file `name` (e.g. "vgg16-397923af.pth") needed by `metric`, searched in the
  folders of the module docstring, in order."""
  torch_home = os.environ.get("TORCH_HOME", os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch"))
  dirs = [weights_dir, os.environ.get(ENV_VAR), DEFAULT_DIR, pathlib.Path(torch_home) / "hub" / "checkpoints"]
  candidates = [pathlib.Path(d).expanduser() / name for d in dirs if d]
  if name.startswith("lpips/"):
    spec = importlib.util.find_spec("lpips")  # found, not imported: that would import torch
    if spec is not None and spec.submodule_search_locations:
      package = pathlib.Path(next(iter(spec.submodule_search_locations)))
      candidates.append(package / "weights" / name.removeprefix("lpips/"))
  for path in candidates:
    if path.is_file():
      return path
  raise MissingMetricWeightsError(
      f"{metric} needs the pretrained weights file {name}, from {_SOURCES.get(name, 'its publisher')}; "
      f"put it at {candidates[0]} (or in the folder named by --metric-weights or ${ENV_VAR}). "
      f"Looked in: {', '.join(str(c.parent) for c in candidates)}. Nothing is downloaded; to run "
      "without this metric, choose the metrics explicitly, e.g. --metrics psnr,ssim,mae")


def sha256(path):
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      digest.update(block)
  return digest.hexdigest()


def read_torch_file(path):
  """{key: float32 NumPy array} of a PyTorch state-dict file (tensors only; loaded without code)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise MetricWeightsError(f"{path}: reading PyTorch weight files needs torch: "
                             "pip install -e '.[torch]'") from e
  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many kinds for a truncated or foreign file
    raise MetricWeightsError(f"{path}: not a readable PyTorch weights file ({e})") from e
  if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
    state = state["state_dict"]
  if not isinstance(state, dict):
    raise MetricWeightsError(f"{path}: holds a {type(state).__name__}, not a state dict")
  return {k: v.detach().cpu().numpy() for k, v in state.items() if hasattr(v, "detach")}


def conv_kernel(weight):
  """A PyTorch OIHW convolution weight as a Flax HWIO kernel."""
  return np.ascontiguousarray(np.transpose(np.asarray(weight, np.float32), (2, 3, 1, 0)))


def checked_tree(flat, expected, source):
  """{"a/b": x} as a tree; MetricWeightsError unless it has exactly `expected`'s leaves and shapes."""
  want = traverse_util.flatten_dict(expected, sep="/")
  missing, extra = sorted(set(want) - set(flat)), sorted(set(flat) - set(want))
  if missing or extra:
    raise MetricWeightsError(f"{source}: does not fit the network: missing {missing[:5]}, "
                             f"unexpected {extra[:5]}")
  for key, leaf in want.items():
    if tuple(flat[key].shape) != tuple(leaf.shape):
      raise MetricWeightsError(f"{source}: {key} has shape {tuple(flat[key].shape)}, "
                               f"the network needs {tuple(leaf.shape)}")
  return traverse_util.unflatten_dict(flat, sep="/")
