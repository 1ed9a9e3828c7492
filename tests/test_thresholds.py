"""The threshold search against independent references: the solver against brute force (with and
without a least pixel share per branch), the binning against a NumPy loop, the quantile bins and the
data-driven start against their definitions, and a small |COC| meta set that must starve no branch."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bambnet_jax.training import thresholds


def brute_force(errors, counts=None, min_share=0.0):
  """Tries every r_2 < ... < r_M (as bin cut positions): the definition, no cleverness.

  With min_share, a split counts only if every branch's bins hold >= min_share of the pixels.
  Returns (cuts, cost), or (None, inf) if no split qualifies."""
  num_branches, num_bins = errors.shape
  total = 0.0 if counts is None else float(np.sum(counts))
  best_cost, best_cuts = np.inf, None
  for inner in itertools.combinations(range(1, num_bins), num_branches - 1):
    cuts = (0, *inner, num_bins)
    if min_share > 0 and total > 0:
      shares = [counts[cuts[i]:cuts[i + 1]].sum() / total for i in range(num_branches)]
      if min(shares) < min_share - 1e-9:
        continue
    cost = sum(errors[i, cuts[i]:cuts[i + 1]].sum() for i in range(num_branches))
    if cost < best_cost - 1e-12:
      best_cost, best_cuts = cost, cuts
  return best_cuts, best_cost


def cost_and_shares(errors, counts, edges, got):
  """The cost and pixel shares of thresholds `got` (on the edges), summed directly."""
  cuts = np.searchsorted(edges, got)
  cost = sum(errors[i, cuts[i]:cuts[i + 1]].sum() for i in range(len(cuts) - 1))
  pixels = np.array([counts[cuts[i]:cuts[i + 1]].sum() for i in range(len(cuts) - 1)])
  return cost, pixels / max(counts.sum(), 1e-300)


def numpy_bin(value, edges):
  """The bin rule spelled out: edges[b] <= value < edges[b + 1], clamped at both ends."""
  if value < edges[0]:
    return 0
  for b in range(len(edges) - 1):
    if edges[b] <= value < edges[b + 1]:
      return b
  return len(edges) - 2


@pytest.mark.parametrize("seed", range(20))
def test_solver_matches_brute_force_on_random_tables(seed):
  rng = np.random.default_rng(seed)
  num_branches = 4 if seed % 4 else 3
  num_bins = int(rng.integers(num_branches, 18))
  errors = rng.random((num_branches, num_bins)) * rng.integers(1, 100, num_bins)
  if seed % 3 == 0:
    errors[:, rng.random(num_bins) < 0.3] = 0.0  # empty bins: ties must not break the solver
  edges = np.arange(num_bins + 1) * 0.5
  got, cost = thresholds.solve_thresholds(errors, edges)
  cuts, want_cost = brute_force(errors)
  assert cost == pytest.approx(want_cost, rel=1e-12, abs=1e-12)
  # The achieved cost of the returned thresholds is the optimum (ties may pick other cuts).
  got_cuts = np.searchsorted(edges, got)
  achieved = sum(errors[i, got_cuts[i]:got_cuts[i + 1]].sum() for i in range(num_branches))
  assert achieved == pytest.approx(want_cost, rel=1e-12, abs=1e-12)
  assert got[0] == 0.0 and got[-1] == edges[-1] and np.all(np.diff(got) > 0)


@pytest.mark.parametrize("seed", range(100))
def test_solver_with_min_share_matches_brute_force(seed):
  rng = np.random.default_rng(1000 + seed)
  num_branches = int(rng.integers(2, 5))
  num_bins = int(rng.integers(num_branches, 13))
  counts = rng.integers(0, 50, num_bins).astype(np.float64)
  counts[rng.random(num_bins) < 0.3] = 0.0  # empty bins
  if seed % 5 == 0:
    counts[rng.integers(num_bins)] += 500.0  # one bin with most pixels: often infeasible
  errors = counts * rng.random((num_branches, num_bins)) * rng.uniform(0.5, 2.0, (num_branches, 1))
  min_share = float(rng.choice([0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 1 / num_branches, 0.3]))
  edges = np.cumsum(np.concatenate([[0.0], rng.uniform(0.1, 2.0, num_bins)]))
  cuts, want_cost = brute_force(errors, counts, min_share)
  if cuts is None:
    with pytest.raises(ValueError, match="min_share"):
      thresholds.solve_thresholds(errors, edges, counts, min_share)
    return
  got, cost = thresholds.solve_thresholds(errors, edges, counts, min_share)
  assert cost == pytest.approx(want_cost, rel=1e-12, abs=1e-12)
  achieved, shares = cost_and_shares(errors, counts, edges, got)
  assert achieved == pytest.approx(want_cost, rel=1e-12, abs=1e-12)
  assert got[0] == edges[0] and got[-1] == edges[-1] and np.all(np.diff(got) > 0)
  assert np.all(shares >= min_share - 1e-9) or counts.sum() == 0
  np.testing.assert_allclose(thresholds.branch_shares(got, counts, edges), shares, atol=1e-12)


def test_min_share_zero_is_the_plain_objective():
  rng = np.random.default_rng(7)
  for _ in range(20):
    errors = rng.random((4, 15)) * (rng.random(15) < 0.7)
    counts = rng.integers(0, 20, 15).astype(np.float64)
    edges = np.arange(16) * 0.25
    plain = thresholds.solve_thresholds(errors, edges)
    with_counts = thresholds.solve_thresholds(errors, edges, counts, 0.0)
    np.testing.assert_array_equal(plain[0], with_counts[0])
    assert plain[1] == with_counts[1]


def test_min_share_requests_that_cannot_be_met_say_what_to_change():
  errors, edges, counts = np.ones((4, 10)), np.arange(11.0), np.ones(10)
  with pytest.raises(ValueError, match="counts="):
    thresholds.solve_thresholds(errors, edges, None, 0.1)
  with pytest.raises(ValueError, match="1/4"):
    thresholds.solve_thresholds(errors, edges, counts, 0.3)
  with pytest.raises(ValueError, match=">= 0"):
    thresholds.solve_thresholds(errors, edges, counts, -0.1)
  lumpy = np.array([0, 0, 97, 0, 1, 1, 1, 0, 0, 0], np.float64)  # one bin holds 97%
  with pytest.raises(ValueError, match="finer"):
    thresholds.solve_thresholds(errors, edges, lumpy, 0.02)
  # Exactly 1/M each is feasible when the bins allow it; no pixels at all means no constraint.
  got, _ = thresholds.solve_thresholds(errors, edges, np.array([1, 1, 0, 1, 0, 0, 1, 0, 0, 0.0]), 0.25)
  np.testing.assert_allclose(thresholds.branch_shares(got, np.array([1, 1, 0, 1, 0, 0, 1, 0, 0, 0.0]), edges),
                             0.25)
  np.testing.assert_array_equal(thresholds.solve_thresholds(errors, edges, np.zeros(10), 0.2)[0],
                                thresholds.solve_thresholds(errors, edges)[0])


def test_solver_recovers_planted_ranges():
  # Branch i is best exactly on its planted range: the solver must return those edges.
  edges = thresholds.bin_edges(25.0, 0.25)
  centres = (edges[:-1] + edges[1:]) / 2
  planted = np.array([0.0, 1.75, 4.25, 6.0, 25.0])
  errors = np.ones((4, len(centres)))
  for i in range(4):
    errors[i, (centres >= planted[i]) & (centres < planted[i + 1])] = 0.2
  got, _ = thresholds.solve_thresholds(errors, edges)
  np.testing.assert_allclose(got, planted)


def test_per_bin_errors_match_a_numpy_loop():
  rng = np.random.default_rng(0)
  n, m, h, w, c = 2, 3, 5, 9, 3
  edges = np.array([0.0, 0.5, 0.75, 1.5, 2.0, 3.25, 4.0, 6.0], np.float32)  # uneven bins
  num_bins = len(edges) - 1
  outputs = rng.random((n, m, h, w, c)).astype(np.float32)
  target = rng.random((n, h, w, c)).astype(np.float32)
  blur = rng.uniform(0, 7, (n, h, w)).astype(np.float32)
  blur[0, 0, :num_bins + 1] = edges  # values exactly on edges, the last one on the upper bound
  valid = np.array([1.0, 0.0], np.float32)
  errors, counts = thresholds.per_bin_branch_errors(jnp.asarray(outputs), jnp.asarray(target),
                                                    jnp.asarray(blur), jnp.asarray(edges), jnp.asarray(valid))
  want_errors, want_counts = np.zeros((m, num_bins)), np.zeros(num_bins)
  for k in range(n):
    if not valid[k]:
      continue
    for y in range(h):
      for x in range(w):
        b = numpy_bin(blur[k, y, x], edges)
        want_counts[b] += 1
        for i in range(m):
          want_errors[i, b] += np.abs(outputs[k, i, y, x] - target[k, y, x]).mean()
  np.testing.assert_allclose(np.asarray(errors), want_errors, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(counts), want_counts)


def test_binning_at_the_edges_matches_numpy():
  edges = np.array([0.0, 0.25, 0.5, 1.0, 2.5, 25.0], np.float32)
  values = np.concatenate([edges, edges - 1e-3, edges + 1e-3, [-5.0, -0.0, 30.0, 1e6, 24.999]])
  values = values.astype(np.float32)
  want = np.zeros(len(edges) - 1)
  for v in values:
    want[numpy_bin(v, edges)] += 1
  got = thresholds.blur_histogram(jnp.asarray(values)[None], jnp.asarray(edges))
  assert got.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(got), want)
  # The same bins as the per-bin errors, and a padded image counts nothing.
  outputs = jnp.zeros((2, 1, 1, len(values), 1))
  _, counts = thresholds.per_bin_branch_errors(outputs, jnp.zeros((2, 1, len(values), 1)),
                                               jnp.asarray(np.stack([values, values]))[:, None],
                                               jnp.asarray(edges), jnp.array([1.0, 0.0]))
  np.testing.assert_array_equal(np.asarray(counts), want)
  histogram = thresholds.blur_histogram(jnp.asarray(np.stack([values, values]))[:, None],
                                        jnp.asarray(edges), jnp.array([0.0, 1.0]))
  np.testing.assert_array_equal(np.asarray(histogram), want)


def test_new_edges_do_not_recompile():
  traces = []

  @jax.jit
  def histogram(blur, edges):
    traces.append(None)
    return thresholds.blur_histogram(blur, edges)

  blur = jnp.linspace(0.0, 10.0, 64)[None]
  uniform = thresholds.bin_edges(25.0, 0.25)
  quantile = thresholds.quantile_edges(np.asarray(histogram(blur, jnp.asarray(uniform, jnp.float32))),
                                       uniform, 100, 25.0)
  np.testing.assert_array_equal(np.asarray(histogram(blur, jnp.asarray(quantile, jnp.float32))),
                                np.histogram(np.asarray(blur), quantile)[0])
  assert len(traces) == 1


def test_quantile_edges_split_a_smooth_distribution_evenly():
  rng = np.random.default_rng(3)
  blur = rng.gamma(2.0, 1.5, 200_000)  # most |COC| small, a long tail
  fine = thresholds.bin_edges(25.0, 0.01)
  counts = np.asarray(thresholds.blur_histogram(jnp.asarray(blur, jnp.float32)[None], jnp.asarray(fine)))
  for num_bins in (1, 4, 20, 100):
    edges = thresholds.quantile_edges(counts, fine, num_bins, 25.0)
    assert edges.shape == (num_bins + 1,) and edges[0] == 0.0 and edges[-1] == 25.0
    assert np.all(np.diff(edges) > 0)
    per_bin = np.histogram(np.clip(blur, 0, 25.0 - 1e-9), edges)[0]
    # Each bin holds 1/B of the pixels, up to the fine grid's resolution (a fine bin holds < 0.3%).
    np.testing.assert_allclose(per_bin / len(blur), 1 / num_bins, atol=0.004)


def test_quantile_edges_of_degenerate_histograms():
  fine = thresholds.bin_edges(25.0, 0.25)
  np.testing.assert_allclose(thresholds.quantile_edges(np.zeros(100), fine, 10, 25.0), np.linspace(0, 25, 11))
  cases = {"all sharp": {0: 1000.0}, "one value": {20: 50.0}, "two values": {4: 10.0, 30: 10.0},
           "beyond max": {99: 7.0}, "three values": {1: 5.0, 2: 1.0, 80: 3.0}}
  for name, where in cases.items():
    counts = np.zeros(100)
    for b, n in where.items():
      counts[b] = n
    for num_bins in (1, 3, 16, 100):
      edges = thresholds.quantile_edges(counts, fine, num_bins, 25.0)
      assert edges.shape == (num_bins + 1,), name
      assert edges[0] == 0.0 and edges[-1] == 25.0 and np.all(np.diff(edges) > 0), name
  # A point mass inside the range is fenced off by the edges on both of its sides.
  counts = np.zeros(100)
  counts[20] = 50.0
  edges = thresholds.quantile_edges(counts, fine, 4, 25.0)
  assert fine[20] in edges and fine[21] in edges


def test_start_and_convergence():
  np.testing.assert_allclose(thresholds.uniform_thresholds(4, 25.0), [0, 6.25, 12.5, 18.75, 25])
  assert thresholds.has_converged([0, 1, 2, 3, 25], [0, 1.25, 2, 3, 25], 0.25)
  assert not thresholds.has_converged([0, 1, 2, 3, 25], [0, 1.5, 2, 3, 25], 0.25)


def test_initial_thresholds_at_the_pixel_quantiles():
  edges = np.arange(11.0)
  counts = np.array([10, 10, 10, 10, 10, 10, 10, 10, 0, 0], np.float64)
  np.testing.assert_allclose(thresholds.initial_thresholds(counts, edges, 4), [0, 2, 4, 6, 10])
  np.testing.assert_allclose(thresholds.branch_shares([0, 2, 4, 6, 10], counts, edges), [0.25] * 4)
  # One heavy bin: the quantiles coincide, and the thresholds still give every branch a bin.
  lumpy = np.array([0, 0, 0, 100, 0, 0, 0, 0, 0, 0], np.float64)
  got = thresholds.initial_thresholds(lumpy, edges, 4)
  assert got[0] == 0 and got[-1] == 10 and np.all(np.diff(got) > 0) and set(got) <= set(edges)
  got = thresholds.initial_thresholds(np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 9.0]), edges, 4)
  np.testing.assert_allclose(got, [0, 7, 8, 9, 10])
  # No pixels: the paper's uniform start, on the edges.
  np.testing.assert_allclose(thresholds.initial_thresholds(np.zeros(100), thresholds.bin_edges(), 4),
                             thresholds.uniform_thresholds(4))


def test_branch_shares_match_the_masks_pixel_count():
  rng = np.random.default_rng(5)
  edges = thresholds.bin_edges(25.0, 0.25)
  blur = rng.uniform(0, 30, 5000).astype(np.float32)  # some beyond r_{M+1}: the last branch's
  counts = np.asarray(thresholds.blur_histogram(jnp.asarray(blur)[None], jnp.asarray(edges)))
  r = np.array([0.0, 1.75, 4.25, 6.0, 25.0])
  for cast in (np.float64, np.float32):  # thresholds come back from the device as float32
    branch = np.clip(np.searchsorted(r[:-1].astype(cast), blur, side="right") - 1, 0, 3)
    np.testing.assert_allclose(thresholds.branch_shares(r.astype(cast), counts, edges),
                               np.bincount(branch, minlength=4) / len(blur), atol=1e-12)
  np.testing.assert_array_equal(thresholds.branch_shares(r, np.zeros(100), edges), np.zeros(4))


def test_small_coc_meta_set_starves_no_branch():
  # A meta set whose |COC| is all under 8 px, on the 0..25 px range: the uniform start gives the two
  # heavy branches nothing, and the plain objective, with the light branch best everywhere, gives
  # them a sliver. Quantile bins, the quantile start and a least share of 5% give each its pixels.
  rng = np.random.default_rng(11)
  n, m, h, w, c = 4, 4, 32, 32, 1
  blur = rng.uniform(0.0, 8.0, (n, h, w)).astype(np.float32)
  target = rng.random((n, h, w, c)).astype(np.float32)
  scale = np.array([0.05, 0.1, 0.15, 0.2], np.float32)[None, :, None, None, None]
  noise = rng.standard_normal((n, m, h, w, c)).astype(np.float32)
  outputs = target[:, None] + scale * (1 + blur[:, None, ..., None] / 8) * noise

  fine = thresholds.bin_edges(25.0, 0.05)
  histogram = np.asarray(thresholds.blur_histogram(jnp.asarray(blur), jnp.asarray(fine)))
  edges = thresholds.quantile_edges(histogram, fine, 100, 25.0)
  assert np.all(edges[1:-1] < 8.0)
  errors, counts = thresholds.per_bin_branch_errors(jnp.asarray(outputs), jnp.asarray(target),
                                                    jnp.asarray(blur), jnp.asarray(edges, jnp.float32))
  errors, counts = np.asarray(errors, np.float64), np.asarray(counts, np.float64)
  assert counts.sum() == blur.size

  uniform = np.searchsorted(thresholds.uniform_thresholds(4, 25.0)[:-1], blur, side="right") - 1
  assert np.all(uniform < 2)  # off the quantile edges, so counted per pixel
  start = thresholds.initial_thresholds(counts, edges, 4)
  np.testing.assert_allclose(thresholds.branch_shares(start, counts, edges), 0.25, atol=0.01)

  plain, _ = thresholds.solve_thresholds(errors, edges)
  assert thresholds.branch_shares(plain, counts, edges).min() < 0.05  # the starvation this fixes
  got, cost = thresholds.solve_thresholds(errors, edges, counts, min_share=0.05)
  shares = thresholds.branch_shares(got, counts, edges)
  assert np.all(shares >= 0.05) and shares.sum() == pytest.approx(1.0)
  assert np.all(got[:-1] < 8.0) and got[-1] == 25.0 and np.all(np.diff(got) > 0)
  # Exact: brute force over all C(99, 3) splits, vectorised.
  error_prefix = np.concatenate([np.zeros((m, 1)), np.cumsum(errors, axis=1)], axis=1)
  pixel_prefix = np.concatenate([[0.0], np.cumsum(counts)])
  cuts = np.array([(0, *inner, 100) for inner in itertools.combinations(range(1, 100), 3)])
  costs = sum(error_prefix[i, cuts[:, i + 1]] - error_prefix[i, cuts[:, i]] for i in range(m))
  pixels = np.stack([pixel_prefix[cuts[:, i + 1]] - pixel_prefix[cuts[:, i]] for i in range(m)], axis=1)
  assert cost == pytest.approx(costs[np.all(pixels >= 0.05 * counts.sum(), axis=1)].min(), rel=1e-12)


def _brute_force_feasible(counts, num_branches, need):
  bins = len(counts)
  for cuts in itertools.combinations(range(1, bins), num_branches - 1):
    bounds = (0,) + cuts + (bins,)
    if all(sum(counts[a:b]) >= need for a, b in zip(bounds[:-1], bounds[1:])):
      return True
  return False


def test_feasible_share_is_the_largest_share_some_split_gives():
  rng = np.random.default_rng(5)
  for _ in range(60):
    counts = rng.integers(0, 5, rng.integers(4, 10)).astype(float)
    counts[rng.integers(len(counts))] += rng.integers(0, 40)  # one heavy bin, as a point mass
    if counts.sum() == 0:
      continue
    share = thresholds.feasible_share(counts, 3, 0.3)
    assert 0 <= share <= 0.3
    assert _brute_force_feasible(counts, 3, share * counts.sum() * (1 - 1e-9))
    if share < 0.3:  # nothing noticeably larger is feasible
      assert not _brute_force_feasible(counts, 3, (share + 1e-6) * counts.sum())


def test_a_point_mass_gets_the_share_the_data_allows():
  counts = np.array([90.0, 4.0, 3.0, 3.0])
  share = thresholds.feasible_share(counts, 4, 0.05)
  assert share == pytest.approx(0.03, abs=1e-6)
  found, _ = thresholds.solve_thresholds(np.ones((4, 4)), np.arange(5.0), counts, share)
  assert np.all(thresholds.branch_shares(found, counts, np.arange(5.0)) >= 0.03 - 1e-9)
