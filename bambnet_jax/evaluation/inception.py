"""The InceptionV3 of FID (pytorch-fid's `InceptionV3`, TensorFlow's 2015-12-05 graph), in Flax.

    variables, hashes = inception.load_variables()             # pt_inception-2015-12-05-*.pth
    features = inception.make_feature_fn(variables)            # jitted (N, H, W, 3) -> (N, 2048)

Images in [0, 1] are resized to 299x299 (bilinear, half-pixel centres, no antialiasing: PyTorch's
`F.interpolate(..., align_corners=False)`), mapped to [-1, 1] and run through the network up to
an output block: 3 (pool3, 2048 features, what FID uses), or 0 / 1 / 2 (64 / 192 / 768
features, spatially averaged, as pytorch-fid's `--dims` does). It differs from torchvision's
InceptionV3 where pytorch-fid's FIDInception blocks do: the 3x3 average pools of the A, C and
first E blocks leave padding out of the average, and the last E block max-pools.
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
    x = nn.BatchNorm(use_running_average=True, epsilon=_BN_EPS, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3_without_padding(x):
  """TensorFlow's 3x3 stride-1 SAME average: padded zeros are not counted (the FID patch)."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_stride_2(x):
  return nn.max_pool(x, (3, 3), strides=(2, 2))


class InceptionA(nn.Module):
  pool_features: int
  precision: Any = HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv, precision=self.precision)
    b1 = conv(64, name="branch1x1")(x)
    b5 = conv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(conv(48, name="branch5x5_1")(x))
    b3 = conv(64, name="branch3x3dbl_1")(x)
    b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
    pool = conv(self.pool_features, name="branch_pool")(_avg_pool_3x3_without_padding(x))
    return jnp.concatenate([b1, b5, b3, pool], axis=-1)


class InceptionB(nn.Module):
  precision: Any = HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv, precision=self.precision)
    b3 = conv(384, (3, 3), stride=2, name="branch3x3")(x)
    dbl = conv(64, name="branch3x3dbl_1")(x)
    dbl = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(dbl)
    dbl = conv(96, (3, 3), stride=2, name="branch3x3dbl_3")(dbl)
    return jnp.concatenate([b3, dbl, _max_pool_3x3_stride_2(x)], axis=-1)


class InceptionC(nn.Module):
  channels_7x7: int
  precision: Any = HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv, precision=self.precision)
    c7 = self.channels_7x7
    row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
    b1 = conv(192, name="branch1x1")(x)
    b7 = conv(c7, name="branch7x7_1")(x)
    b7 = conv(c7, **row, name="branch7x7_2")(b7)
    b7 = conv(192, **col, name="branch7x7_3")(b7)
    dbl = conv(c7, name="branch7x7dbl_1")(x)
    dbl = conv(c7, **col, name="branch7x7dbl_2")(dbl)
    dbl = conv(c7, **row, name="branch7x7dbl_3")(dbl)
    dbl = conv(c7, **col, name="branch7x7dbl_4")(dbl)
    dbl = conv(192, **row, name="branch7x7dbl_5")(dbl)
    pool = conv(192, name="branch_pool")(_avg_pool_3x3_without_padding(x))
    return jnp.concatenate([b1, b7, dbl, pool], axis=-1)


class InceptionD(nn.Module):
  precision: Any = HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv, precision=self.precision)
    b3 = conv(320, (3, 3), stride=2, name="branch3x3_2")(conv(192, name="branch3x3_1")(x))
    b7 = conv(192, name="branch7x7x3_1")(x)
    b7 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = conv(192, (3, 3), stride=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_stride_2(x)], axis=-1)


class InceptionE(nn.Module):
  """`max_pool`: pytorch-fid's second E block max-pools its pool branch (TF graph quirk)."""
  max_pool: bool = False
  precision: Any = HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv, precision=self.precision)
    row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
    b1 = conv(320, name="branch1x1")(x)
    b3 = conv(384, name="branch3x3_1")(x)
    b3 = jnp.concatenate([conv(384, **row, name="branch3x3_2a")(b3),
                          conv(384, **col, name="branch3x3_2b")(b3)], axis=-1)
    dbl = conv(448, name="branch3x3dbl_1")(x)
    dbl = conv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(dbl)
    dbl = jnp.concatenate([conv(384, **row, name="branch3x3dbl_3a")(dbl),
                           conv(384, **col, name="branch3x3dbl_3b")(dbl)], axis=-1)
    if self.max_pool:
      pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    else:
      pooled = _avg_pool_3x3_without_padding(x)
    pool = conv(192, name="branch_pool")(pooled)
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
  resize_input: bool = True
  precision: Any = HIGHEST

  @nn.compact
  def __call__(self, images):
    conv = functools.partial(BasicConv, precision=self.precision)
    x = images.astype(jnp.float32)
    if self.resize_input:
      x = resize_bilinear(x, INPUT_SIZE, self.precision)
    x = 2.0 * x - 1.0
    x = conv(32, (3, 3), stride=2, name="Conv2d_1a_3x3")(x)
    x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = conv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = _max_pool_3x3_stride_2(x)
    if self.output_block >= 1:
      x = conv(80, name="Conv2d_3b_1x1")(x)
      x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x)
      x = _max_pool_3x3_stride_2(x)
    if self.output_block >= 2:
      for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
        x = InceptionA(pool_features, self.precision, name=name)(x)
      x = InceptionB(self.precision, name="Mixed_6a")(x)
      for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        x = InceptionC(c7, self.precision, name=name)(x)
    if self.output_block >= 3:
      x = InceptionD(self.precision, name="Mixed_7a")(x)
      x = InceptionE(False, self.precision, name="Mixed_7b")(x)
      x = InceptionE(True, self.precision, name="Mixed_7c")(x)
    return jnp.mean(x, axis=(1, 2))


def variable_shapes():
  image = jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
  return jax.eval_shape(lambda: FIDInceptionV3().init(jax.random.key(0), image))


_BN_LEAVES = {"weight": ("params", "scale"), "bias": ("params", "bias"),
              "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def convert_weights(state, source="FID Inception weights"):
  """Flax variables {"params", "batch_stats"} of FIDInceptionV3 from pytorch-fid's state dict.

  `state` ({key: array}) has the layout of pt_inception-2015-12-05-6726825d.pth: torchvision's
  Inception3 keys (`Mixed_5b.branch1x1.conv.weight`, `....bn.running_var`, ...). The 1008-class
  `fc` layer is not part of the features and is ignored; any other mismatch raises
  MetricWeightsError.
  """
  flat = {}
  for key, value in state.items():
    if key.startswith("fc.") or key.endswith("num_batches_tracked"):
      continue
    match = re.fullmatch(r"(.+)\.(conv|bn)\.(\w+)", key)
    if match is None:
      flat[f"params/unexpected {key}"] = np.asarray(value)
      continue
    module, layer, leaf = match.groups()
    module = module.replace(".", "/")
    if layer == "conv" and leaf == "weight":
      flat[f"params/{module}/conv/kernel"] = metric_weights.conv_kernel(value)
    elif layer == "bn" and leaf in _BN_LEAVES:
      collection, name = _BN_LEAVES[leaf]
      flat[f"{collection}/{module}/bn/{name}"] = np.asarray(value, np.float32)
    else:
      flat[f"params/unexpected {key}"] = np.asarray(value)
  variables = metric_weights.nest(flat)
  metric_weights.check_tree(variables, variable_shapes(), source)
  return variables


def load_variables(weights_dir=None):
  """(variables, {file: sha256}) from pytorch-fid's published weights file."""
  path = metric_weights.find_file(metric_weights.INCEPTION_FILE, "FID", weights_dir)
  variables = convert_weights(metric_weights.read_torch_file(path), source=str(path))
  return variables, {str(path): metric_weights.sha256(path)}


def make_feature_fn(variables, dims=2048, precision=HIGHEST):
  """Jitted images (N, H, W, 3) in [0, 1] -> features (N, dims), with `variables` bound."""
  if dims not in BLOCK_BY_DIMS:
    raise ValueError(f"FID features come in {sorted(BLOCK_BY_DIMS)} dimensions, not {dims}")
  apply = jax.jit(FIDInceptionV3(BLOCK_BY_DIMS[dims], precision=precision).apply)
  variables = jax.device_put(variables)
  return lambda images: apply(variables, images)
