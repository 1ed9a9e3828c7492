"""The kernel family against the SPEC's definitions, written out here loop by loop."""

import numpy as np
import pytest

from bambnet_jax.losses import dp_kernels


def spec_kernel_plus(radius):
  """SPEC 3, literally: D[i,j] = [(i-R)^2 + (j-R)^2 <= R^2], w[j] = min(j+1, 2R), K+ = D*w / sum."""
  if radius == 0:
    return np.ones((1, 1))
  size = 2 * radius + 1
  kernel = np.zeros((size, size))
  for i in range(size):
    for j in range(size):
      if (i - radius) ** 2 + (j - radius) ** 2 <= radius ** 2:
        kernel[i, j] = min(j + 1, 2 * radius)
  return kernel / kernel.sum()


@pytest.mark.parametrize("radius", [0, 1, 2, 3, 7, 24])
def test_kernels_match_the_spec(radius):
  np.testing.assert_allclose(dp_kernels.kernel_plus(radius), spec_kernel_plus(radius), rtol=0, atol=1e-15)
  np.testing.assert_allclose(dp_kernels.kernel_minus(radius), spec_kernel_plus(radius)[:, ::-1], atol=1e-15)
  assert dp_kernels.signed_kernel(radius).shape == (2 * radius + 1,) * 2
  np.testing.assert_array_equal(dp_kernels.signed_kernel(-radius), dp_kernels.kernel_minus(radius))


def test_radius_one_by_hand():
  # Disk of radius 1 is a plus sign; column weights min(j+1, 2) = 1, 2, 2; total 9.
  expected = np.array([[0, 2, 0], [1, 2, 2], [0, 2, 0]]) / 9
  np.testing.assert_allclose(dp_kernels.kernel_plus(1), expected, atol=1e-15)


def test_kernel_plus_leans_right_and_is_symmetric_top_bottom():
  # Convolving with K+ moves content right: the sign convention's "left view shifted right in
  # front of focus" rests on this (see the module docstring).
  for radius in (1, 5, 24):
    kernel = dp_kernels.kernel_plus(radius)
    columns = np.arange(-radius, radius + 1)
    assert (kernel.sum(0) * columns).sum() > 0
    np.testing.assert_array_equal(kernel, kernel[::-1])


def test_kernel_stack_centres_every_kernel():
  stack = dp_kernels.kernel_stack(5, np.float64)
  assert stack.shape == (6, 11, 11)
  for radius in range(6):
    start = 5 - radius
    np.testing.assert_allclose(stack[radius, start:start + 2 * radius + 1, start:start + 2 * radius + 1],
                               spec_kernel_plus(radius), atol=1e-15)
    assert stack[radius].sum() == pytest.approx(1.0)


def test_fast_fft_length_is_the_next_2_3_5_smooth_number():
  def smooth(n):
    for p in (2, 3, 5):
      while n % p == 0:
        n //= p
    return n == 1
  for n in (1, 7, 49, 88, 536, 537, 1000, 1709):
    length = dp_kernels.fast_fft_length(n)
    assert length >= n and smooth(length)
    assert not any(smooth(k) for k in range(n, length))
