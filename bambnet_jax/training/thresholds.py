"""The paper's threshold search (Algorithm 1, Eq. 9): which COC range each branch should take.

After each inner training phase, every branch alone (the others' residuals dropped) restores the
validation ("meta") set; its absolute error is summed per COC bin. The new thresholds
r_1 = 0 < r_2 < ... < r_M < r_{M+1} = max are the exact minimiser of

    sum_i  sum_{bins b in [r_i, r_{i+1})}  E_i[b]

over contiguous, non-empty bin ranges with lighter branches on smaller COC: a dynamic programme
over (branch, bin), O(M B^2), instead of a grid guess. Thresholds fall on bin edges.
"""

import jax
import jax.numpy as jnp
import numpy as np


def bin_edges(max_coc=25.0, bin_width=0.25):
  """Edges of the COC bins [0, w), [w, 2w), ..., the last one closed at max_coc."""
  num_bins = int(round(max_coc / bin_width))
  return np.linspace(0.0, max_coc, num_bins + 1)


def uniform_thresholds(num_branches, max_coc=25.0):
  """Algorithm 1's start: r_1 = 0, r_{M+1} = max_coc, the inner ones equally spaced."""
  return np.linspace(0.0, max_coc, num_branches + 1)


def per_bin_branch_errors(branch_outputs, target, blur, num_bins, bin_width, valid=None):
  """Sums of absolute error per (branch, COC bin) and pixel counts per bin, for one batch.

  branch_outputs: (N, M, H, W, C), output of each branch alone; target: (N, H, W, C);
  blur: (N, H, W) the pixel's largest |COC|; valid: optional (N,) mask for padded batches.
  Returns (errors (M, num_bins), counts (num_bins,)), float32, ready to be summed over batches.
  """
  pixel_error = jnp.mean(jnp.abs(branch_outputs - target[:, None]), axis=-1)  # (N, M, H, W)
  bins = jnp.clip(jnp.floor(blur / bin_width).astype(jnp.int32), 0, num_bins - 1)
  weight = jnp.ones(blur.shape, jnp.float32)
  if valid is not None:
    weight = weight * valid.astype(jnp.float32)[:, None, None]
  one_hot = jax.nn.one_hot(bins, num_bins, dtype=jnp.float32) * weight[..., None]  # (N, H, W, B)
  errors = jnp.einsum("nmhw,nhwb->mb", pixel_error, one_hot)
  counts = jnp.sum(one_hot, axis=(0, 1, 2))
  return errors, counts


def solve_thresholds(errors, edges):
  """Exact minimiser of the summed error over contiguous, ordered, non-empty bin ranges.

  errors: (M, B) summed error of branch i on bin b (B >= M). edges: (B + 1,) bin edges.
  Returns (thresholds (M + 1,) from edges[0] to edges[-1], total cost).
  """
  errors = np.asarray(errors, np.float64)
  num_branches, num_bins = errors.shape
  if num_bins < num_branches:
    raise ValueError(f"{num_bins} bins cannot give each of {num_branches} branches a bin")
  prefix = np.concatenate([np.zeros((num_branches, 1)), np.cumsum(errors, axis=1)], axis=1)
  # best[i, b]: least cost of bins [0, b) split over branches 0..i, each non-empty.
  best = np.full((num_branches, num_bins + 1), np.inf)
  start = np.zeros((num_branches, num_bins + 1), np.int64)
  best[0, 1:] = prefix[0, 1:]
  for i in range(1, num_branches):
    for b in range(i + 1, num_bins + 1):
      # Branch i takes bins [a, b) for some a in [i, b).
      candidates = best[i - 1, i:b] + (prefix[i, b] - prefix[i, i:b])
      a = int(np.argmin(candidates))
      best[i, b], start[i, b] = candidates[a], a + i
  cuts = [num_bins]
  for i in range(num_branches - 1, 0, -1):
    cuts.append(start[i, cuts[-1]])
  cuts.append(0)
  cuts = cuts[::-1]
  return np.asarray(edges, np.float64)[cuts], float(best[num_branches - 1, num_bins])


def has_converged(previous, current, tolerance):
  """Algorithm 1 stops when no threshold moves by more than `tolerance` px."""
  return bool(np.max(np.abs(np.asarray(previous) - np.asarray(current))) <= tolerance)
