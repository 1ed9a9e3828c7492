"""The threshold solver against brute force, and the per-bin error accumulation against NumPy."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from bambnet_jax.training import thresholds


def brute_force(errors):
  """Tries every r_2 < r_3 < r_4 (as bin cut positions): the definition, no cleverness."""
  num_branches, num_bins = errors.shape
  best_cost, best_cuts = np.inf, None
  for inner in itertools.combinations(range(1, num_bins), num_branches - 1):
    cuts = (0, *inner, num_bins)
    cost = sum(errors[i, cuts[i]:cuts[i + 1]].sum() for i in range(num_branches))
    if cost < best_cost - 1e-12:
      best_cost, best_cuts = cost, cuts
  return best_cuts, best_cost


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
  n, m, h, w, c, num_bins, width = 2, 3, 5, 6, 3, 8, 0.5
  outputs = rng.random((n, m, h, w, c)).astype(np.float32)
  target = rng.random((n, h, w, c)).astype(np.float32)
  blur = rng.uniform(0, 5, (n, h, w)).astype(np.float32)
  valid = np.array([1.0, 0.0], np.float32)
  errors, counts = thresholds.per_bin_branch_errors(jnp.asarray(outputs), jnp.asarray(target),
                                                    jnp.asarray(blur), num_bins, width, jnp.asarray(valid))
  want_errors, want_counts = np.zeros((m, num_bins)), np.zeros(num_bins)
  for k in range(n):
    if not valid[k]:
      continue
    for y in range(h):
      for x in range(w):
        b = min(int(blur[k, y, x] // width), num_bins - 1)
        want_counts[b] += 1
        for i in range(m):
          want_errors[i, b] += np.abs(outputs[k, i, y, x] - target[k, y, x]).mean()
  np.testing.assert_allclose(np.asarray(errors), want_errors, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(counts), want_counts)


def test_start_and_convergence():
  np.testing.assert_allclose(thresholds.uniform_thresholds(4, 25.0), [0, 6.25, 12.5, 18.75, 25])
  assert thresholds.has_converged([0, 1, 2, 3, 25], [0, 1.25, 2, 3, 25], 0.25)
  assert not thresholds.has_converged([0, 1, 2, 3, 25], [0, 1.5, 2, 3, 25], 0.25)
