"""Pretrained weights of the LPIPS and FID networks: where they are looked for, how they are read.

Nothing is downloaded: the metrics use the files users already have, under their published names.

| file | used by | comes from |
| --- | --- | --- |
| alexnet-owt-7be5be79.pth | LPIPS (alex) | torchvision's AlexNet weights |
| vgg16-397923af.pth | LPIPS (vgg) | torchvision's VGG16 weights |
| squeezenet1_1-b8a52dc0.pth | LPIPS (squeeze) | torchvision's SqueezeNet 1.1 weights |
| lpips/v0.1/{alex,vgg,squeeze}.pth | LPIPS linear layers | inside the `lpips` package (weights/v0.1/) |
| pt_inception-2015-12-05-6726825d.pth | FID | pytorch-fid's FID_WEIGHTS_URL |

Folders searched, in order: the `--metric-weights` folder, $BAMBNET_METRIC_WEIGHTS,
~/.cache/bambnet_jax/metric_weights, then torch's own download cache ($TORCH_HOME/hub/checkpoints,
default ~/.cache/torch/hub/checkpoints, where torchvision and pytorch-fid leave these files); for
the linear layers also an installed `lpips` package's weights/v0.1 folder. Files are read with
torch (the `[torch]` extra) and converted strictly: a missing, extra or misshapen tensor is an
error naming the file. Each file's SHA-256 is recorded with the results.
"""

import hashlib
import importlib.util
import os
import pathlib

import numpy as np

ENV_VAR = "BAMBNET_METRIC_WEIGHTS"
DEFAULT_DIR = pathlib.Path("~/.cache/bambnet_jax/metric_weights")

BACKBONE_FILES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}
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


def search_dirs(weights_dir=None):
  """The folders searched for weight files, in order (see the module docstring)."""
  dirs = [pathlib.Path(weights_dir)] if weights_dir else []
  if os.environ.get(ENV_VAR):
    dirs.append(pathlib.Path(os.environ[ENV_VAR]))
  dirs.append(DEFAULT_DIR)
  torch_home = os.environ.get("TORCH_HOME", os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch"))
  dirs.append(pathlib.Path(torch_home) / "hub" / "checkpoints")
  return [d.expanduser() for d in dirs]


def _lpips_package_dir():
  """The installed lpips package's folder, found without importing it (that would import torch)."""
  spec = importlib.util.find_spec("lpips")
  if spec is None or not spec.submodule_search_locations:
    return None
  return pathlib.Path(next(iter(spec.submodule_search_locations)))


def find_file(name, metric, weights_dir=None):
  """The path of weights file `name` (e.g. "vgg16-397923af.pth") needed by `metric`."""
  candidates = [d / name for d in search_dirs(weights_dir)]
  if name.startswith("lpips/"):
    package = _lpips_package_dir()
    if package is not None:
      candidates.append(package / "weights" / name.removeprefix("lpips/"))
  for path in candidates:
    if path.is_file():
      return path
  first = search_dirs(weights_dir)[0]
  raise MissingMetricWeightsError(
      f"{metric} needs the pretrained weights file {name}, from {_SOURCES.get(name, 'its publisher')}; "
      f"put it at {first / name} (or in the folder named by --metric-weights or ${ENV_VAR}). "
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


def check_tree(converted, expected, source):
  """Raises MetricWeightsError unless `converted` has exactly `expected`'s leaves and shapes."""
  flat_got = _flatten(converted)
  flat_want = _flatten(expected)
  missing = sorted(set(flat_want) - set(flat_got))
  extra = sorted(set(flat_got) - set(flat_want))
  if missing or extra:
    raise MetricWeightsError(f"{source}: does not fit the network: missing {missing[:5]}, "
                             f"unexpected {extra[:5]}")
  for key, want in flat_want.items():
    if tuple(flat_got[key].shape) != tuple(want.shape):
      raise MetricWeightsError(f"{source}: {key} has shape {tuple(flat_got[key].shape)}, "
                               f"the network needs {tuple(want.shape)}")


def _flatten(tree, prefix=""):
  flat = {}
  for key, value in tree.items():
    path = f"{prefix}/{key}" if prefix else key
    if isinstance(value, dict) or hasattr(value, "items"):
      flat.update(_flatten(value, path))
    else:
      flat[path] = value
  return flat


def nest(flat):
  """{"a/b/c": x} -> {"a": {"b": {"c": x}}}."""
  tree = {}
  for path, value in flat.items():
    node = tree
    *parents, leaf = path.split("/")
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return tree
