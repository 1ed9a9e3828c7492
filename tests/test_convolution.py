"""models/convolution.py: the input and weight gradients of float32 convs from scaled float16
operands, against NumPy's sums over the taps, and the nets that use them against the native ones."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bambnet_jax.models import blocks
from bambnet_jax.models import convolution
from bambnet_jax.models import networks
import net_equivalence
from numpy_conv import conv3x3_passes
from numpy_conv import weight_gradient as numpy_weight_gradient


def _sample(shape_x, channels_out, seed=0):
  rng = np.random.default_rng(seed)
  x = np.maximum(rng.standard_normal(shape_x), 0) * 3
  dy = rng.standard_t(3, shape_x[:-1] + (channels_out,)) * 1e-5
  return jnp.asarray(x, jnp.float32), jnp.asarray(dy, jnp.float32)


def _relative_error(got, want):
  return np.linalg.norm(np.asarray(got, np.float64) - want) / np.linalg.norm(want)


@pytest.mark.parametrize("window", [(3, 3), (5, 5), (1, 1)])
def test_the_backward_filter_conv_is_numpys_weight_gradient_and_autodiffs(window):
  x, dy = _sample((2, 7, 9, 5), 6)
  want = numpy_weight_gradient(x, dy, window)
  got = convolution.weight_gradient(x, dy, window, precision="highest")
  assert _relative_error(got, want) < 1e-6
  autodiff = jax.vjp(lambda k: convolution.same_conv(x, k), jnp.zeros((6, *window, 5)))[1](dy)[0]
  assert _relative_error(autodiff, want) < 1e-6


def test_float16_weight_gradient_is_within_float16_rounding_at_any_scale_per_channel():
  """Channels 1e-6 and 3e4 strong (unscaled, 3e4 x 3e4 products overflow float16, 1e-6 x 1e-5 ones
  underflow): each block of the gradient is within ~2^-11 of its own NumPy value."""
  x, dy = _sample((2, 8, 8, 4), 3, seed=1)
  x = x * jnp.asarray([1e-6, 1.0, 3e4, 1.0])
  dy = dy * jnp.asarray([1e5, 3e9, 1.0])
  got = np.asarray(convolution.float16_weight_gradient(x, dy, (3, 3)), np.float64)
  want = numpy_weight_gradient(x, dy, (3, 3))
  assert np.isfinite(got).all()
  for o in range(3):
    for i in range(4):
      assert _relative_error(got[o, :, :, i], want[o, :, :, i]) < 2e-3, (o, i)
  unscaled = convolution.weight_gradient(x.astype(jnp.float16), dy.astype(jnp.float16), (3, 3), jnp.float16)
  assert not np.isfinite(np.asarray(unscaled)).all()  # what the scaling prevents


def _kernel(channels_in, channels_out, in_scales=None, seed=0):
  kernel = jax.random.normal(jax.random.key(seed), (channels_out, 3, 3, channels_in)) * 0.1  # OHWI
  return kernel if in_scales is None else kernel * jnp.asarray(in_scales)


def _numpy_input_gradient(dy, kernel):
  dy, kernel = np.asarray(dy, np.float64), np.asarray(kernel, np.float64)
  x = np.zeros(dy.shape[:-1] + kernel.shape[-1:])
  return conv3x3_passes(x, kernel, dy)[1]


def test_the_input_gradient_conv_is_numpys_and_autodiffs():
  _, dy = _sample((2, 7, 9, 5), 6)
  kernel = _kernel(5, 6)
  want = _numpy_input_gradient(dy, kernel)
  assert _relative_error(convolution.input_gradient(dy, kernel), want) < 1e-6
  autodiff = jax.vjp(lambda x: convolution.same_conv(x, kernel), jnp.zeros((2, 7, 9, 5)))[1](dy)[0]
  assert _relative_error(autodiff, want) < 1e-6


def test_float16_input_gradient_is_within_float16_rounding_at_any_scale_per_channel():
  """dy's channels 1e-5 to 3e4 strong (unscaled, the strong ones overflow float16, the weak ones
  underflow), the kernel's input channels 1e-6 to 3e4: each channel of dx is within ~2^-11 of
  its own NumPy value."""
  _, dy = _sample((2, 8, 8, 4), 3, seed=4)
  dy = dy * jnp.asarray([1.0, 3e9, 1e5])
  kernel = _kernel(4, 3, in_scales=[1e-6, 1.0, 3e4, 1.0])
  got = np.asarray(convolution.float16_input_gradient(dy, kernel), np.float64)
  want = _numpy_input_gradient(dy, kernel)
  assert np.isfinite(got).all()
  for i in range(4):
    assert _relative_error(got[..., i], want[..., i]) < 2e-3, i
  unscaled = convolution.input_gradient(dy.astype(jnp.float16), kernel.astype(jnp.float16))
  assert not np.isfinite(np.asarray(unscaled)).all()  # what the scaling prevents


def test_float16_gradients_scale_exactly_and_keep_nonfinite_and_zero_channels():
  x, dy = _sample((1, 6, 6, 3), 2, seed=2)
  scales = np.asarray(convolution.channel_scales(x))
  assert np.all(np.log2(scales) == np.round(np.log2(scales)))  # powers of two
  assert np.all(np.linalg.norm(np.asarray(x * scales).reshape(-1, 3), axis=0) <= 2.0 ** 7)
  zero_channel = x.at[..., 1].set(0.0)
  got = np.asarray(convolution.float16_weight_gradient(zero_channel, dy, (3, 3)))
  assert np.isfinite(got).all() and np.all(got[..., 1] == 0)
  kernel = _kernel(3, 2).at[..., 1].set(0.0)
  # A dead channel of dy beside weak live ones (1e-8): the live ones must keep their weights. So
  # must they beside a channel of 1e-28, whose squares (and so norm) underflow float32.
  for dead_value in (0.0, 1e-28):
    dead = (dy * 1e-3).at[..., 0].set(dead_value)
    got = np.asarray(convolution.float16_input_gradient(dead, kernel))
    assert np.isfinite(got).all() and np.all(got[..., 1] == 0)
    assert _relative_error(got, _numpy_input_gradient(dead, kernel)) < 2e-3, dead_value
  with_nan = dy.at[0, 2, 3, 0].set(jnp.nan)
  assert np.isnan(np.asarray(convolution.float16_weight_gradient(x, with_nan, (3, 3)))[0]).all()
  assert np.isnan(np.asarray(convolution.float16_input_gradient(with_nan, kernel))[0, 2, 3]).all()


def test_the_float16_conv_changes_only_the_gradients_and_only_by_rounding():
  x, dy = _sample((2, 8, 10, 4), 5, seed=3)
  kernel = _kernel(4, 5)
  ours = lambda x, k: blocks.conv(x, k, "float16", min_pixels=0)
  np.testing.assert_array_equal(ours(x, kernel), convolution.same_conv(x, kernel))
  dx, dk = jax.vjp(ours, x, kernel)[1](dy)
  _, want_dx, want_dk = conv3x3_passes(*(np.asarray(a, np.float64) for a in (x, kernel, dy)))
  assert _relative_error(dx, want_dx) < 2e-3 and dx.dtype == jnp.float32
  assert _relative_error(dk, want_dk) < 2e-3
  assert dk.shape == kernel.shape and dk.dtype == jnp.float32


def test_conv_gradient_modes_resolve_per_platform_and_dtype(monkeypatch):
  assert convolution.resolve_conv_gradients("auto", "float32", "gpu") == "float16"
  assert convolution.resolve_conv_gradients("auto", "bfloat16", "gpu") == "native"
  assert convolution.resolve_conv_gradients("auto", "float32", "cpu") == "native"
  assert convolution.resolve_conv_gradients("float16", "float32", "cpu") == "float16"
  with pytest.raises(ValueError, match="conv gradients 'fp16'"):
    convolution.resolve_conv_gradients("fp16", "float32", "gpu")
  # blocks.conv resolves "auto" on the platform it is traced for.
  x, kernel = jnp.ones((1, 128, 128, 2)), jnp.ones((2, 3, 3, 2))
  takes_float16 = lambda x: re.search(r"\bf16\[", str(jax.make_jaxpr(jax.grad(
      lambda x: jnp.sum(blocks.conv(x, kernel.astype(x.dtype), "auto"))))(x))) is not None
  for platform in ("cpu", "gpu"):
    monkeypatch.setattr(blocks.jax, "default_backend", lambda platform=platform: platform)
    assert takes_float16(x) == (platform == "gpu") and not takes_float16(x.astype(jnp.bfloat16))


def test_small_maps_keep_native_gradients():
  kernel = jnp.ones((2, 3, 3, 2))
  for height, want_float16 in ((127, False), (128, True)):
    x = jnp.ones((1, height, 128, 2))
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda x, k: jnp.sum(blocks.conv(x, k, "float16")), (0, 1)))(x, kernel))
    assert ("f16[" in jaxpr) == want_float16, height


@pytest.mark.parametrize("net", ["deblur", "coc"])
def test_a_net_with_float16_conv_gradients_has_the_same_outputs_and_nearly_the_same_gradients(net):
  """128 x 128 inputs: the full-resolution convs take the float16 path, the branches' lower stages not."""
  native = networks.model_config(width=8, branch_capacities=(1, 4), conv_gradients="native")
  float16 = networks.model_config(width=8, branch_capacities=(1, 4), conv_gradients="float16")
  net_equivalence.assert_same_function(net, native, float16, image_size=128, gradient_error=5e-3)
  params = networks.init_params(net, native, jax.random.key(0))
  x = jnp.zeros((1, 128, 128, 6))
  jaxprs = [str(jax.make_jaxpr(jax.grad(lambda p, c=c: jnp.sum(networks.build(net, c).apply({"params": p}, x))))(params))
            for c in (native, float16)]
  assert "f16[" not in jaxprs[0] and "f16[" in jaxprs[1]  # the float16 path was taken
