"""LPIPS (Zhang et al., CVPR 2018), version 0.1, as the `lpips` package computes it, in Flax.

    params, _ = lpips.load_params("squeeze")            # from the published weight files
    distance = lpips.make_lpips_fn("squeeze", params)   # jitted (x, y) -> (N,)
    distance(restored, target)                          # float images in [0, 1], NHWC

Per image: both images, mapped from [0, 1] to [-1, 1] and then by the v0.1 scaling layer, go
through an ImageNet backbone (AlexNet, VGG16 or SqueezeNet 1.1: torchvision's `features`); at
each tapped ReLU the features are unit-normalised over channels, their squared difference is
weighted by a learned 1x1 linear layer, averaged over space, and the layers summed. This equals
`lpips.LPIPS(net=...)(x, y, normalize=True)`. BaMBNet reports the SqueezeNet variant, most other
deblurring papers AlexNet. Convolutions run at full float32 precision (no TF32 on GPUs), so a
number does not depend on the card.
"""

import functools
import re
from typing import Any

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

# Torchvision's `features` layers are named features_<index> so weights convert by index.
VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
VGG16_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3


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


class AlexNetFeatures(nn.Module):
  """torchvision's AlexNet `features`, tapped after relu1..relu5."""
  precision: Any = HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(_conv, precision=self.precision)
    taps = []
    x = nn.relu(conv(64, 11, "features_0", stride=4, padding=2)(x))
    taps.append(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2))
    x = nn.relu(conv(192, 5, "features_3", padding=2)(x))
    taps.append(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2))
    x = nn.relu(conv(384, 3, "features_6", padding=1)(x))
    taps.append(x)
    x = nn.relu(conv(256, 3, "features_8", padding=1)(x))
    taps.append(x)
    x = nn.relu(conv(256, 3, "features_10", padding=1)(x))
    taps.append(x)
    return taps


class VGG16Features(nn.Module):
  """torchvision's VGG16 `features`, tapped after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3."""
  precision: Any = HIGHEST

  @nn.compact
  def __call__(self, x):
    taps, index = [], 0
    for layer in VGG16_LAYERS:
      if layer == "M":
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        index += 1
        continue
      x = nn.relu(_conv(layer, 3, f"features_{index}", padding=1, precision=self.precision)(x))
      index += 2  # the conv and its ReLU
      if index - 1 in VGG16_TAPS:
        taps.append(x)
    return taps


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


class SqueezeNetFeatures(nn.Module):
  """torchvision's SqueezeNet 1.1 `features`, tapped as lpips does (7 taps)."""
  precision: Any = HIGHEST

  @nn.compact
  def __call__(self, x):
    fire = lambda index, squeeze, expand: Fire(squeeze, expand, self.precision, name=f"features_{index}")
    taps = []
    x = nn.relu(_conv(64, 3, "features_0", stride=2, precision=self.precision)(x))
    taps.append(x)
    x = max_pool_ceil(x)
    x = fire(4, 16, 64)(fire(3, 16, 64)(x))
    taps.append(x)
    x = max_pool_ceil(x)
    x = fire(7, 32, 128)(fire(6, 32, 128)(x))
    taps.append(x)
    x = max_pool_ceil(x)
    for index, squeeze, expand in ((9, 48, 192), (10, 48, 192), (11, 64, 256), (12, 64, 256)):
      x = fire(index, squeeze, expand)(x)
      taps.append(x)
    return taps


BACKBONES = {"alex": AlexNetFeatures, "vgg": VGG16Features, "squeeze": SqueezeNetFeatures}


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
    taps = BACKBONES[self.net](self.precision, name="backbone")(both)
    total = 0.0
    for k, features in enumerate(taps):
      norm = jnp.sqrt(jnp.sum(jnp.square(features), axis=-1, keepdims=True))
      features = features / (norm + _EPS)
      fx, fy = jnp.split(features, 2, axis=0)
      weighted = nn.Conv(1, (1, 1), use_bias=False, precision=self.precision, name=f"lin{k}")(jnp.square(fx - fy))
      total = total + jnp.mean(weighted, axis=(1, 2, 3))
    return total


def param_shapes(net):
  image = jnp.zeros((1, 64, 64, 3), jnp.float32)
  return jax.eval_shape(lambda: LPIPS(net).init(jax.random.key(0), image, image))["params"]


def convert_weights(backbone_state, linear_state, net, source="LPIPS weights"):
  """Flax params of `LPIPS(net)` from torchvision's backbone state dict and lpips' linear layers.

  backbone_state: e.g. the contents of alexnet-owt-7be5be79.pth (only `features.*` is used; the
  classifier is not part of LPIPS). linear_state: lpips' weights/v0.1/<net>.pth
  (`lin<k>.model.1.weight`). Both as {key: array}. Raises MetricWeightsError on any mismatch.
  """
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
  params = metric_weights.nest(flat)
  metric_weights.check_tree(params, param_shapes(net), source)
  return params


def load_params(net, weights_dir=None):
  """(params, {file: sha256}) of LPIPS(net) from the published files (see metric_weights)."""
  metric = f"LPIPS ({net})"
  backbone_path = metric_weights.find_file(metric_weights.BACKBONE_FILES[net], metric, weights_dir)
  linear_path = metric_weights.find_file(metric_weights.LPIPS_LINEAR_FILES[net], metric, weights_dir)
  params = convert_weights(metric_weights.read_torch_file(backbone_path),
                           metric_weights.read_torch_file(linear_path), net,
                           source=f"{backbone_path} + {linear_path}")
  hashes = {str(p): metric_weights.sha256(p) for p in (backbone_path, linear_path)}
  return params, hashes


def make_lpips_fn(net, params, precision=HIGHEST):
  """Jitted (x, y) -> per-image LPIPS (N,), with `params` bound."""
  apply = jax.jit(LPIPS(net, precision).apply)
  params = jax.device_put(params)  # an argument, not a constant baked into the program
  return lambda x, y: apply({"params": params}, x, y)
