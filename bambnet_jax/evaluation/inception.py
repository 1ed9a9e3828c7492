"""The InceptionV3 of FID (pytorch-fid's `InceptionV3`, TensorFlow's 2015-12-05 graph), in Flax.

    features = FIDInceptionV3().apply(load_variables()[0], images)  # (N, H, W, 3) -> (N, 2048)

Images in [0, 1] are resized to 299x299 as PyTorch's bilinear `F.interpolate`; the features of output
block 3 (pool3, FID's 2048) or 0 / 1 / 2 (pytorch-fid's --dims 64 / 192 / 768) are spatially averaged.
"""

import functools
import re
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bambnet_jax.evaluation import metric_weights

INPUT_SIZE = 299
BLOCK_BY_DIMS = {64: 0, 192: 1, 768: 2, 2048: 3}
HIGHEST = jax.lax.Precision.HIGHEST
_BN_EPS = 1e-3


class BasicConv(nn.Module):
  """Conv without bias, batch norm (running statistics), ReLU: torchvision's BasicConv2d."""
  features: int
  kernel: Sequence[int] = (1, 1)
  stride: int = 1
  padding: Sequence[int] = (0, 0)
  precision: Any = HIGHEST

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(self.features, tuple(self.kernel), strides=(self.stride, self.stride), use_bias=False,
                padding=tuple((p, p) for p in self.padding), precision=self.precision, name="conv")(x)
    return nn.relu(nn.BatchNorm(use_running_average=True, epsilon=_BN_EPS, name="bn")(x))


def _avg_pool_3x3_without_padding(x):
  """TensorFlow's 3x3 stride-1 SAME average: padded zeros are not counted (the FID patch)."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


class InceptionA(nn.Module):
  conv: Any  # BasicConv at the network's precision, as the Flax examples pass a ModuleDef
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = self.conv(64, name="branch1x1")(x)
    b5 = self.conv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(self.conv(48, name="branch5x5_1")(x))
    b3 = self.conv(64, name="branch3x3dbl_1")(x)
    b3 = self.conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = self.conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
    pool = self.conv(self.pool_features, name="branch_pool")(_avg_pool_3x3_without_padding(x))
    return jnp.concatenate([b1, b5, b3, pool], axis=-1)


class InceptionB(nn.Module):
  conv: Any

  @nn.compact
  def __call__(self, x):
    b3 = self.conv(384, (3, 3), stride=2, name="branch3x3")(x)
    dbl = self.conv(64, name="branch3x3dbl_1")(x)
    dbl = self.conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(dbl)
    dbl = self.conv(96, (3, 3), stride=2, name="branch3x3dbl_3")(dbl)
    return jnp.concatenate([b3, dbl, nn.max_pool(x, (3, 3), strides=(2, 2))], axis=-1)


class InceptionC(nn.Module):
  conv: Any
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
    b1 = self.conv(192, name="branch1x1")(x)
    b7 = self.conv(c7, name="branch7x7_1")(x)
    b7 = self.conv(c7, **row, name="branch7x7_2")(b7)
    b7 = self.conv(192, **col, name="branch7x7_3")(b7)
    dbl = self.conv(c7, name="branch7x7dbl_1")(x)
    dbl = self.conv(c7, **col, name="branch7x7dbl_2")(dbl)
    dbl = self.conv(c7, **row, name="branch7x7dbl_3")(dbl)
    dbl = self.conv(c7, **col, name="branch7x7dbl_4")(dbl)
    dbl = self.conv(192, **row, name="branch7x7dbl_5")(dbl)
    pool = self.conv(192, name="branch_pool")(_avg_pool_3x3_without_padding(x))
    return jnp.concatenate([b1, b7, dbl, pool], axis=-1)


class InceptionD(nn.Module):
  conv: Any

  @nn.compact
  def __call__(self, x):
    b3 = self.conv(320, (3, 3), stride=2, name="branch3x3_2")(self.conv(192, name="branch3x3_1")(x))
    b7 = self.conv(192, name="branch7x7x3_1")(x)
    b7 = self.conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = self.conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = self.conv(192, (3, 3), stride=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, nn.max_pool(x, (3, 3), strides=(2, 2))], axis=-1)


class InceptionE(nn.Module):
  """`max_pool`: pytorch-fid's second E block max-pools its pool branch (TF graph quirk)."""
  conv: Any
  max_pool: bool = False

  @nn.compact
  def __call__(self, x):
    row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
    b1 = self.conv(320, name="branch1x1")(x)
    b3 = self.conv(384, name="branch3x3_1")(x)
    b3 = jnp.concatenate([self.conv(384, **row, name="branch3x3_2a")(b3),
                          self.conv(384, **col, name="branch3x3_2b")(b3)], axis=-1)
    dbl = self.conv(448, name="branch3x3dbl_1")(x)
    dbl = self.conv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(dbl)
    dbl = jnp.concatenate([self.conv(384, **row, name="branch3x3dbl_3a")(dbl),
                           self.conv(384, **col, name="branch3x3dbl_3b")(dbl)], axis=-1)
    pooled = (nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1))) if self.max_pool
              else _avg_pool_3x3_without_padding(x))
    pool = self.conv(192, name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, dbl, pool], axis=-1)


def bilinear_matrix(in_size, out_size):
  """(out, in) matrix of PyTorch's bilinear resize (align_corners=False, no antialiasing)."""
  # Coordinates in float32, as PyTorch computes them: upscaling weights then agree to ~1e-7.
  f32 = np.float32
  scale = f32(in_size) / f32(out_size)
  source = np.maximum(scale * (np.arange(out_size, dtype=f32) + f32(0.5)) - f32(0.5), f32(0))
  low = np.minimum(source.astype(np.int64), in_size - 1)
  high = np.minimum(low + 1, in_size - 1)
  frac = source - low.astype(f32)
  matrix = np.zeros((out_size, in_size), np.float32)
  np.add.at(matrix, (np.arange(out_size), low), 1.0 - frac)
  np.add.at(matrix, (np.arange(out_size), high), frac)
  return matrix


def resize_bilinear(x, size, precision=HIGHEST):
  """(N, H, W, C) -> (N, size, size, C), as F.interpolate(mode='bilinear', align_corners=False)."""
  rows = jnp.asarray(bilinear_matrix(x.shape[1], size))
  cols = jnp.asarray(bilinear_matrix(x.shape[2], size))
  x = jnp.einsum("oh,nhwc->nowc", rows, x, precision=precision)
  return jnp.einsum("pw,nowc->nopc", cols, x, precision=precision)


class FIDInceptionV3(nn.Module):
  """Features of `output_block` (see the module docstring), spatially averaged: (N, dims)."""
  output_block: int = 3
  precision: Any = HIGHEST

  @nn.compact
  def __call__(self, images):
    conv = functools.partial(BasicConv, precision=self.precision)
    x = 2.0 * resize_bilinear(images.astype(jnp.float32), INPUT_SIZE, self.precision) - 1.0
    x = conv(32, (3, 3), stride=2, name="Conv2d_1a_3x3")(x)
    x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = conv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2))
    if self.output_block >= 1:
      x = conv(80, name="Conv2d_3b_1x1")(x)
      x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x)
      x = nn.max_pool(x, (3, 3), strides=(2, 2))
    if self.output_block >= 2:
      for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
        x = InceptionA(conv, pool_features, name=name)(x)
      x = InceptionB(conv, name="Mixed_6a")(x)
      for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        x = InceptionC(conv, c7, name=name)(x)
    if self.output_block >= 3:
      x = InceptionD(conv, name="Mixed_7a")(x)
      x = InceptionE(conv, False, name="Mixed_7b")(x)
      x = InceptionE(conv, True, name="Mixed_7c")(x)
    return jnp.mean(x, axis=(1, 2))


_BN_LEAVES = {"weight": ("params", "scale"), "bias": ("params", "bias"),
              "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def convert_weights(state, source="FID Inception weights"):
  """FIDInceptionV3's {"params", "batch_stats"} from pytorch-fid's state dict ({key: array}); the
  1008-class `fc` layer is ignored, any other mismatch raises MetricWeightsError."""
  flat = {}
  for key, value in state.items():
    if key.startswith("fc.") or key.endswith("num_batches_tracked"):
      continue
    match = re.fullmatch(r"(.+)\.(conv|bn)\.(\w+)", key)
    module, layer, leaf = match.groups() if match else ("", "", "")
    module = module.replace(".", "/")
    if layer == "conv" and leaf == "weight":
      flat[f"params/{module}/conv/kernel"] = metric_weights.conv_kernel(value)
    elif layer == "bn" and leaf in _BN_LEAVES:
      collection, name = _BN_LEAVES[leaf]
      flat[f"{collection}/{module}/bn/{name}"] = np.asarray(value, np.float32)
    else:
      flat[f"params/unexpected {key}"] = np.asarray(value)
  image = jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
  shapes = jax.eval_shape(lambda: FIDInceptionV3().init(jax.random.key(0), image))
  return metric_weights.checked_tree(flat, shapes, source)


def load_variables(weights_dir=None):
  """(variables, {file: sha256}) from pytorch-fid's published weights file."""
  path = metric_weights.find_file(metric_weights.INCEPTION_FILE, "FID", weights_dir)
  variables = convert_weights(metric_weights.read_torch_file(path), source=str(path))
  return variables, {str(path): metric_weights.sha256(path)}
