"""LPIPS v0.1 (Zhang et al., CVPR 2018) in Flax, as the `lpips` package's `LPIPS(net)(x, y, normalize=True)`.

    LPIPS("squeeze").apply({"params": load_params("squeeze")[0]}, restored, target)  # NHWC -> (N,)

BaMBNet reports the SqueezeNet variant, most other deblurring papers AlexNet. Convolutions run at
full float32 precision (no TF32), so a number does not depend on the card.
"""

import functools
import re
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bambnet_jax.evaluation import metric_weights

NETS = ("alex", "vgg", "squeeze")
# v0.1's ScalingLayer: (x - shift) / scale, per RGB channel, after mapping [0, 1] to [-1, 1].
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10  # lpips.normalize_tensor's guard
HIGHEST = jax.lax.Precision.HIGHEST

def _conv(features, kernel, name, stride=1, padding=0, precision=HIGHEST):
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((padding, padding), (padding, padding)), precision=precision, name=name)


def max_pool_ceil(x, window=3, stride=2):
  """PyTorch's MaxPool2d(window, stride, ceil_mode=True): a last, partial window on each side."""
  pads = []
  for size in x.shape[1:3]:
    out = -(-(size - window) // stride) + 1
    pads.append((0, max(0, (out - 1) * stride + window - size)))
  return nn.max_pool(x, (window, window), strides=(stride, stride), padding=pads)


# Torchvision's `features`: (features, kernel, stride, padding) for a conv and its ReLU, ("fire",
# squeeze, expand) or "M" for the max pool; named features_<index> so weights convert by index.
_ALEX = ((64, 11, 4, 2), "M", (192, 5, 1, 2), "M", (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1))
_VGG16 = tuple(n if n == "M" else (n, 3, 1, 1)
               for n in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512))
_SQUEEZE = ((64, 3, 2, 0), "M", ("fire", 16, 64), ("fire", 16, 64), "M", ("fire", 32, 128), ("fire", 32, 128), "M",
            ("fire", 48, 192), ("fire", 48, 192), ("fire", 64, 256), ("fire", 64, 256))
BACKBONES = {  # (layers, indices of the outputs lpips taps, max pool)
    "alex": (_ALEX, (1, 4, 7, 9, 11), functools.partial(nn.max_pool, window_shape=(3, 3), strides=(2, 2))),
    "vgg": (_VGG16, (3, 8, 15, 22, 29), functools.partial(nn.max_pool, window_shape=(2, 2), strides=(2, 2))),
    "squeeze": (_SQUEEZE, (1, 4, 7, 9, 10, 11, 12), max_pool_ceil),  # SqueezeNet 1.1
}


class Fire(nn.Module):
  """SqueezeNet's Fire module: 1x1 squeeze, then 1x1 and 3x3 expands concatenated."""
  squeeze: int
  expand: int
  precision: Any = HIGHEST

  @nn.compact
  def __call__(self, x):
    x = nn.relu(_conv(self.squeeze, 1, "squeeze", precision=self.precision)(x))
    return jnp.concatenate([nn.relu(_conv(self.expand, 1, "expand1x1", precision=self.precision)(x)),
                            nn.relu(_conv(self.expand, 3, "expand3x3", padding=1, precision=self.precision)(x))],
                           axis=-1)


class TorchvisionFeatures(nn.Module):
  """A torchvision backbone's `features` (one of BACKBONES), returning the tapped outputs."""
  layers: tuple
  taps: tuple
  pool: Callable
  precision: Any = HIGHEST

  @nn.compact
  def __call__(self, x):
    taps, index = [], 0
    for layer in self.layers:
      if layer == "M":
        x = self.pool(x)
      elif layer[0] == "fire":
        x = Fire(*layer[1:], self.precision, name=f"features_{index}")(x)
      else:
        features, kernel, stride, padding = layer
        x = nn.relu(_conv(features, kernel, f"features_{index}", stride, padding, self.precision)(x))
        index += 1  # the ReLU
      index += 1
      if index - 1 in self.taps:
        taps.append(x)
    return taps


class LPIPS(nn.Module):
  """Per-image LPIPS v0.1 distance between two batches of images in [0, 1] (N, H, W, 3)."""
  net: str = "alex"
  precision: Any = HIGHEST

  @nn.compact
  def __call__(self, x, y):
    if self.net not in BACKBONES:
      raise ValueError(f"unknown LPIPS backbone {self.net!r}; expected one of {NETS}")
    both = jnp.concatenate([x, y], axis=0).astype(jnp.float32) * 2.0 - 1.0
    both = (both - jnp.asarray(_SHIFT)) / jnp.asarray(_SCALE)
    # One backbone pass over both batches: half the kernel launches of two passes.
    taps = TorchvisionFeatures(*BACKBONES[self.net], self.precision, name="backbone")(both)
    total = 0.0
    for k, features in enumerate(taps):
      norm = jnp.sqrt(jnp.sum(jnp.square(features), axis=-1, keepdims=True))
      features = features / (norm + _EPS)
      fx, fy = jnp.split(features, 2, axis=0)
      weighted = nn.Conv(1, (1, 1), use_bias=False, precision=self.precision, name=f"lin{k}")(jnp.square(fx - fy))
      total = total + jnp.mean(weighted, axis=(1, 2, 3))
    return total


def convert_weights(backbone_state, linear_state, net, source="LPIPS weights"):
  """Params of `LPIPS(net)` from torchvision's backbone state dict (only `features.*`) and lpips'
  linear layers (`lin<k>.model.1.weight`), both {key: array}; MetricWeightsError on any mismatch."""
  flat = {}
  for key, value in backbone_state.items():
    if not key.startswith("features."):
      continue
    index, *inner, leaf = key.split(".")[1:]
    module = "/".join([f"backbone/features_{index}"] + inner)
    flat[f"{module}/{'kernel' if leaf == 'weight' else leaf}"] = (
        metric_weights.conv_kernel(value) if leaf == "weight" else np.asarray(value, np.float32))
  for key, value in linear_state.items():
    match = re.fullmatch(r"lin(\d+)\.model\.1\.weight", key)
    flat[f"lin{match.group(1)}/kernel" if match else f"unexpected {key}"] = metric_weights.conv_kernel(value)
  image = jnp.zeros((1, 64, 64, 3), jnp.float32)
  shapes = jax.eval_shape(lambda: LPIPS(net).init(jax.random.key(0), image, image))["params"]
  return metric_weights.checked_tree(flat, shapes, source)


def load_params(net, weights_dir=None):
  """(params, {file: sha256}) of LPIPS(net) from the published files (see metric_weights)."""
  paths = [metric_weights.find_file(files[net], f"LPIPS ({net})", weights_dir)
           for files in (metric_weights.BACKBONE_FILES, metric_weights.LPIPS_LINEAR_FILES)]
  params = convert_weights(*map(metric_weights.read_torch_file, paths), net, source=" + ".join(map(str, paths)))
  return params, {str(p): metric_weights.sha256(p) for p in paths}
