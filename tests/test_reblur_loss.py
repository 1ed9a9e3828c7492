"""The reblur loss against a per-radius NumPy/SciPy implementation of SPEC section 3 written here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from bambnet_jax.data import synthetic
from bambnet_jax.losses import reblur

MAX_RADIUS = 24


def spec_kernel_plus(radius):
  if radius == 0:
    return np.ones((1, 1))
  offsets = np.arange(-radius, radius + 1)
  disk = offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius ** 2
  kernel = disk * np.minimum(np.arange(2 * radius + 1) + 1, 2 * radius)[None, :]
  return kernel / kernel.sum()


class SpecLoss:
  """SPEC 3 as written, in float64: per radius, per channel, correlations with zero padding."""

  def __init__(self, left, right):
    self.shape = left.shape
    correlate = lambda x, k: ndimage.correlate(x, k, mode="constant", cval=0.0)
    n, _, _, c = left.shape
    # responses[view][kernel sign][radius][n, c] for the SPEC's sums
    self.lk = np.zeros((2, MAX_RADIUS + 1) + left.shape)
    self.rk = np.zeros((2, MAX_RADIUS + 1) + left.shape)
    for i in range(MAX_RADIUS + 1):
      k_plus = spec_kernel_plus(i)
      for sign, kernel in enumerate((k_plus, k_plus[:, ::-1])):
        for b in range(n):
          for ch in range(c):
            self.lk[sign, i, b, :, :, ch] = correlate(left[b, :, :, ch], kernel)
            self.rk[sign, i, b, :, :, ch] = correlate(right[b, :, :, ch], kernel)
    taps = np.exp(-np.arange(-1, 2) ** 2 / (2 * 1.5 ** 2))
    self.gaussian = np.outer(taps, taps) / np.outer(taps, taps).sum()

  def __call__(self, coc, tv_weight=0.0, border=0):
    lg = np.zeros(self.shape)
    rg = np.zeros(self.shape)
    for i in range(MAX_RADIUS + 1):
      h_plus = np.maximum(0, 1 - np.abs(coc - i))
      h_minus = np.maximum(0, 1 - np.abs(coc + i))
      if i == 0:
        h_plus, h_minus = h_plus / 2, h_minus / 2
      lg += h_plus * self.lk[0, i] + h_minus * self.lk[1, i]
      rg += h_plus * self.rk[1, i] + h_minus * self.rk[0, i]
    smoothed = ndimage.correlate(lg - rg, self.gaussian[None, :, :, None], mode="mirror")
    tv = np.abs(np.diff(coc, axis=1)).sum() + np.abs(np.diff(coc, axis=2)).sum()
    inner = smoothed[:, border:smoothed.shape[1] - border, border:smoothed.shape[2] - border]
    return 1000 * np.abs(inner).mean() + tv_weight * tv


@pytest.fixture(scope="module")
def random_case():
  rng = np.random.default_rng(0)
  shape = (2, 20, 28, 3)
  left, right = rng.random(shape), rng.random(shape)
  coc = rng.uniform(-24, 24, shape)
  coc[0, :4] = 0.0  # exactly in focus
  coc[0, 4:8] = np.round(coc[0, 4:8])  # exact integers, where the tents have their kinks
  coc[1, :3] = rng.uniform(-1, 1, (3, 28, 3))  # between -1 and 1, where the two halves at 0 meet
  coc[1, 3:5] = rng.uniform(24, 26, (2, 28, 3)) * rng.choice([-1, 1], (2, 28, 3))  # beyond the family
  coc = coc.astype(np.float32).astype(np.float64)  # the values the float32 code sees
  return left, right, coc, SpecLoss(left, right)


def test_loss_without_the_edge_band_equals_the_spec_over_the_interior(random_case):
  left, right, coc, spec = random_case
  responses = reblur.kernel_responses(jnp.asarray(left, jnp.float32), jnp.asarray(right, jnp.float32))
  for border in (1, 5):
    got = float(reblur.reblur_loss_from_responses(responses, jnp.asarray(coc, jnp.float32), tv_weight=1e-3,
                                                  border=border))
    assert got == pytest.approx(spec(coc, tv_weight=1e-3, border=border), rel=1e-5)
  assert spec(coc, border=5) != pytest.approx(spec(coc))


def test_loss_equals_the_spec(random_case):
  left, right, coc, spec = random_case
  responses = reblur.kernel_responses(jnp.asarray(left, jnp.float32), jnp.asarray(right, jnp.float32))
  for tv_weight in (0.0, 1e-3):
    got = float(reblur.reblur_loss_from_responses(responses, jnp.asarray(coc, jnp.float32), tv_weight))
    assert got == pytest.approx(spec(coc, tv_weight), rel=1e-5)


def test_loss_equals_the_spec_at_single_values(random_case):
  left, right, _, spec = random_case
  responses = reblur.kernel_responses(jnp.asarray(left, jnp.float32), jnp.asarray(right, jnp.float32))
  for value in (0.0, 1.0, -1.0, 0.5, -0.5, 3.25, -17.0, 24.0, -24.0):
    coc = np.full(left.shape, value)
    got = float(reblur.reblur_loss_from_responses(responses, jnp.asarray(coc, jnp.float32)))
    assert got == pytest.approx(spec(coc), rel=1e-5), value


def test_gradient_matches_finite_differences_of_the_spec(random_case):
  left, right, coc, spec = random_case
  rng = np.random.default_rng(1)
  # Off the kinks: fractional parts away from the integers, no two neighbours equal (TV).
  coc = rng.integers(-24, 24, coc.shape) + rng.uniform(0.2, 0.8, coc.shape)
  coc = coc.astype(np.float32).astype(np.float64)
  direction = rng.standard_normal(coc.shape)
  responses = reblur.kernel_responses(jnp.asarray(left, jnp.float32), jnp.asarray(right, jnp.float32))
  grad = jax.grad(reblur.reblur_loss_from_responses, argnums=1)(
      responses, jnp.asarray(coc, jnp.float32), 1e-3)
  eps = 1e-4
  numeric = (spec(coc + eps * direction, 1e-3) - spec(coc - eps * direction, 1e-3)) / (2 * eps)
  assert float(jnp.sum(grad * direction)) == pytest.approx(numeric, rel=1e-3)


def test_convenience_function_and_bfloat16_storage(random_case):
  left, right, coc, spec = random_case
  args = (jnp.asarray(left, jnp.float32), jnp.asarray(right, jnp.float32))
  assert float(reblur.reblur_loss(*args, jnp.asarray(coc, jnp.float32))) == pytest.approx(spec(coc), rel=1e-5)
  half = reblur.kernel_responses(*args, dtype=jnp.bfloat16)
  assert half.dtype == jnp.bfloat16
  got = float(reblur.reblur_loss_from_responses(half, jnp.asarray(coc, jnp.float32)))
  assert got == pytest.approx(spec(coc), rel=1e-2)


def test_responses_carry_no_gradient_to_the_views(random_case):
  left, right, coc, _ = random_case
  loss_of_left = lambda l: reblur.reblur_loss(l, jnp.asarray(right, jnp.float32), jnp.asarray(coc, jnp.float32))
  grad = jax.grad(loss_of_left)(jnp.asarray(left, jnp.float32))
  assert float(jnp.abs(grad).max()) == 0.0


def test_tv_weight_switches_on_at_the_start_step_under_jit():
  weight_at = jax.jit(lambda step: reblur.tv_weight_at(step))
  assert float(weight_at(jnp.int32(0))) == 0.0
  assert float(weight_at(jnp.int32(2999))) == 0.0
  assert float(weight_at(jnp.int32(3000))) == pytest.approx(1e-5)
  assert float(reblur.tv_weight_at(10, start=5, weight=0.5)) == 0.5


@pytest.mark.parametrize("seed", [11, 12])
def test_loss_is_lowest_at_the_true_coc_of_generated_scenes(seed):
  config = synthetic.SceneConfig(height=128, width=128, max_coc=10, num_layers=3)
  sample = synthetic.render_sample(seed, config)
  responses = reblur.kernel_responses(jnp.asarray(sample["left"])[None], jnp.asarray(sample["right"])[None])
  truth = jnp.broadcast_to(jnp.asarray(sample["coc"])[None, :, :, None], (1, 128, 128, 3))
  loss = lambda coc: float(reblur.reblur_loss_from_responses(responses, coc))
  at_truth = loss(truth)
  for wrong in (truth + 1.0, truth - 1.0, -truth):
    assert at_truth < loss(wrong)
