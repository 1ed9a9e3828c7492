"""The paper's threshold search (Algorithm 1, Eq. 9): which COC range each branch should take.

After each inner training phase, every branch alone (the others' residuals dropped) restores the
validation ("meta") set; its absolute error is summed per COC bin. The new thresholds
r_1 = 0 < r_2 < ... < r_M < r_{M+1} = max are the exact minimiser of

    sum_i  sum_{bins b in [r_i, r_{i+1})}  E_i[b]

over contiguous, non-empty bin ranges with lighter branches on smaller COC: a dynamic programme
over (branch, bin), O(M B^2), instead of a grid guess. Thresholds fall on bin edges.

The objective alone can starve branches: a bin without pixels costs nothing, so thresholds in COC
ranges the meta set never reaches are arbitrary, and the paper's uniform start (6.25, 12.5,
18.75 px for M = 4 up to 25 px) gives the heavy branches no pixels when the data's |COC| is small.
Hence three additions, each optional:
  * bins that follow the meta set's |COC| pixel quantiles (`blur_histogram` on a fine grid, then
    `quantile_edges`): every bin holds about as many pixels, so thresholds fall where the data are;
  * a start at the 1/M, 2/M, ... pixel quantiles (`initial_thresholds`);
  * a least share of the pixels for every branch (`solve_thresholds(..., min_share=)`), still exact.
"""

import jax
import jax.numpy as jnp
import numpy as np

_SHARE_SLACK = 1e-9  # shares are compared up to this much rounding


def bin_edges(max_coc=25.0, bin_width=0.25):
  """Edges of the COC bins [0, w), [w, 2w), ..., the last one closed at max_coc."""
  num_bins = int(round(max_coc / bin_width))
  return np.linspace(0.0, max_coc, num_bins + 1)


def uniform_thresholds(num_branches, max_coc=25.0):
  """Algorithm 1's start: r_1 = 0, r_{M+1} = max_coc, the inner ones equally spaced."""
  return np.linspace(0.0, max_coc, num_branches + 1)


def _bin_index(blur, edges):
  """Bin b of each value, edges[b] <= blur < edges[b + 1]; below edges[0] bin 0, from edges[-1] on
  the last bin (the masks' last range is open-ended too). Edges are data: new edges never recompile."""
  edges = jnp.asarray(edges, jnp.float32)
  index = jnp.searchsorted(edges, jnp.asarray(blur, jnp.float32), side="right") - 1
  return jnp.clip(index, 0, edges.shape[0] - 2)


def _pixel_weights(blur, valid):
  """1 per pixel, 0 outside `valid`: None, an (N,) mask of real images or an (N, H, W) one of pixels."""
  weight = jnp.ones(jnp.shape(blur), jnp.float32)
  if valid is not None:
    valid = jnp.asarray(valid, jnp.float32)
    weight = weight * valid.reshape(valid.shape + (1,) * (weight.ndim - valid.ndim))
  return weight


def per_bin_branch_errors(branch_outputs, target, blur, edges, valid=None):
  """Sums of absolute error per (branch, COC bin) and pixel counts per bin, for one batch.

  branch_outputs: (N, M, H, W, C), output of each branch alone; target: (N, H, W, C);
  blur: (N, H, W) the pixel's largest |COC|; edges: (B + 1,) increasing bin edges, a jnp array so
  that new edges never recompile; valid: optional (N,) or (N, H, W) mask of real images or pixels.
  Returns (errors (M, B), counts (B,)), float32, ready to be summed over batches.
  """
  num_bins = jnp.shape(edges)[0] - 1
  pixel_error = jnp.mean(jnp.abs(branch_outputs - target[:, None]), axis=-1).astype(jnp.float32)
  one_hot = jax.nn.one_hot(_bin_index(blur, edges), num_bins, dtype=jnp.float32)  # (N, H, W, B)
  one_hot = one_hot * _pixel_weights(blur, valid)[..., None]
  errors = jnp.einsum("nmhw,nhwb->mb", pixel_error, one_hot)
  counts = jnp.sum(one_hot, axis=(0, 1, 2))
  return errors, counts


def blur_histogram(blur, edges, valid=None):
  """Pixels per COC bin (B,), float32, binned as `per_bin_branch_errors` bins them.

  A first pass over the meta set on a fine grid measures its |COC| distribution for
  `quantile_edges`; no one-hot, so a fine grid of thousands of bins costs no memory.
  """
  num_bins = jnp.shape(edges)[0] - 1
  index = _bin_index(blur, edges).ravel()
  return jnp.bincount(index, _pixel_weights(blur, valid).ravel(), length=num_bins).astype(jnp.float32)


def _nearest_cuts(cumulative, targets):
  """Index of the edge whose cumulative pixel count is nearest each target (the lower one on ties).

  Of a stretch of empty bins (equal counts), the end next to the pixels: quantile edges hug the data.
  """
  targets = np.asarray(targets, np.float64)
  above = np.minimum(np.searchsorted(cumulative, targets, side="left"), len(cumulative) - 1)
  below = np.maximum(above - 1, 0)
  return np.where(targets - cumulative[below] <= cumulative[above] - targets, below, above)


def quantile_edges(counts, fine_edges, num_bins, max_coc=25.0):
  """Edges 0 = e_0 < e_1 < ... < e_B = max_coc of `num_bins` bins holding about equal pixel shares.

  The bins follow the data's |COC| pixel quantiles, read off a fine histogram (`blur_histogram` of
  the meta set on `fine_edges`): e_j is the fine edge whose cumulative count is nearest j/B of the
  pixels, so the solver's thresholds can only fall where the meta set has pixels, and resolve COC
  finely where most pixels are. Where quantiles coincide (a fine bin holds over 1/B of the pixels,
  e.g. few distinct values), the missing edges halve the widest bins, keeping B bins so that the
  per-bin step never recompiles; with no pixels at all, uniform edges over 0..max_coc.
  """
  counts = np.asarray(counts, np.float64)
  fine_edges = np.asarray(fine_edges, np.float64)
  if num_bins < 1:
    raise ValueError(f"need at least one bin, got num_bins={num_bins}")
  if counts.shape != (len(fine_edges) - 1,):
    raise ValueError(f"{counts.shape[0]} counts do not match {len(fine_edges)} fine edges")
  cumulative = np.concatenate([[0.0], np.cumsum(counts)])
  if not cumulative[-1] > 0:
    return np.linspace(0.0, max_coc, num_bins + 1)
  targets = cumulative[-1] * np.arange(1, num_bins) / num_bins
  inner = np.unique(fine_edges[_nearest_cuts(cumulative, targets)])
  edges = np.concatenate([[0.0], inner[(inner > 0.0) & (inner < max_coc)], [max_coc]])
  while len(edges) < num_bins + 1:
    widest = int(np.argmax(np.diff(edges)))
    edges = np.insert(edges, widest + 1, (edges[widest] + edges[widest + 1]) / 2)
  return edges


def initial_thresholds(counts, edges, num_branches):
  """A start from the data: r_1 = edges[0], r_{M+1} = edges[-1], r_{i+1} at the edge nearest the
  i/M pixel quantile, so every branch starts with about 1/M of the meta set's pixels (the uniform
  start gives the heavy ones none when |COC| is small). Strictly increasing, one bin per branch at
  least; without pixels, the edges nearest the uniform start.
  """
  counts = np.asarray(counts, np.float64)
  edges = np.asarray(edges, np.float64)
  num_bins = len(counts)
  if num_bins < num_branches:
    raise ValueError(f"{num_bins} bins cannot give each of {num_branches} branches a bin")
  cumulative = np.concatenate([[0.0], np.cumsum(counts)])
  if cumulative[-1] > 0:
    cuts = _nearest_cuts(cumulative, cumulative[-1] * np.arange(1, num_branches) / num_branches)
  else:
    uniform = np.linspace(edges[0], edges[-1], num_branches + 1)[1:-1]
    cuts = np.argmin(np.abs(edges[None, :] - uniform[:, None]), axis=1)
  chosen = [0]
  for i, cut in enumerate(cuts, 1):  # branch i - 1 keeps a bin, and so does every later branch
    chosen.append(int(min(max(cut, chosen[-1] + 1), num_bins - num_branches + i)))
  return edges[chosen + [num_bins]]


def _least_pixels(counts, num_bins, num_branches, min_share):
  """Pixels each branch's range must hold for `min_share` (0: no constraint); checks the request."""
  if not min_share >= 0.0:
    raise ValueError(f"min_share must be >= 0, got {min_share}")
  if min_share == 0.0:
    return 0.0
  if counts is None:
    raise ValueError("min_share > 0 needs the pixels per bin: pass counts=")
  if np.shape(counts) != (num_bins,):
    raise ValueError(f"counts {np.shape(counts)} do not match {num_bins} bins")
  if num_branches * min_share > 1.0 + _SHARE_SLACK:
    raise ValueError(f"min_share={min_share} for {num_branches} branches asks for "
                     f"{num_branches * min_share:.0%} of the pixels: use min_share <= 1/{num_branches}")
  return max(0.0, (min_share - _SHARE_SLACK) * float(np.sum(counts)))


def solve_thresholds(errors, edges, counts=None, min_share=0.0):
  """Exact minimiser of the summed error over contiguous, ordered, non-empty bin ranges.

  errors: (M, B) summed error of branch i on bin b (B >= M). edges: (B + 1,) bin edges.
  counts: (B,) pixels per bin, needed when min_share > 0: then every branch's range must also hold
  at least min_share of all pixels, so that no branch is left without pixels to train on (the
  objective alone is content to give a branch one nearly empty bin). No pixels: no constraint.
  Returns (thresholds (M + 1,) from edges[0] to edges[-1], total cost).
  Raises ValueError when no split gives every branch its share.
  """
  errors = np.asarray(errors, np.float64)
  num_branches, num_bins = errors.shape
  if num_bins < num_branches:
    raise ValueError(f"{num_bins} bins cannot give each of {num_branches} branches a bin")
  if len(edges) != num_bins + 1:
    raise ValueError(f"{len(edges)} edges do not bound {num_bins} bins")
  need = _least_pixels(counts, num_bins, num_branches, min_share)
  prefix = np.concatenate([np.zeros((num_branches, 1)), np.cumsum(errors, axis=1)], axis=1)
  pixels = np.concatenate([[0.0], np.cumsum(np.asarray(counts, np.float64))]) if need > 0 else None
  # best[i, b]: least cost of bins [0, b) split over branches 0..i, each non-empty (and its share).
  best = np.full((num_branches, num_bins + 1), np.inf)
  start = np.zeros((num_branches, num_bins + 1), np.int64)
  best[0, 1:] = prefix[0, 1:]
  if need > 0:
    best[0, 1:][pixels[1:] < need] = np.inf
  for i in range(1, num_branches):
    for b in range(i + 1, num_bins + 1):
      # Branch i takes bins [a, b) for some a in [i, b).
      candidates = best[i - 1, i:b] + (prefix[i, b] - prefix[i, i:b])
      if need > 0:
        candidates[pixels[b] - pixels[i:b] < need] = np.inf
      a = int(np.argmin(candidates))
      best[i, b], start[i, b] = candidates[a], a + i
  if not np.isfinite(best[num_branches - 1, num_bins]):
    fullest = float(np.max(counts) / np.sum(counts))
    raise ValueError(f"no split of the {num_bins} bins gives each of {num_branches} branches "
                     f"{min_share:.1%} of the pixels (the fullest bin holds {fullest:.1%}): use finer "
                     "bins where the pixels are (quantile_edges) or a smaller min_share")
  cuts = [num_bins]
  for i in range(num_branches - 1, 0, -1):
    cuts.append(start[i, cuts[-1]])
  cuts.append(0)
  cuts = cuts[::-1]
  return np.asarray(edges, np.float64)[cuts], float(best[num_branches - 1, num_bins])


def _can_split(counts, num_branches, need):
  """Whether contiguous bin ranges can give each branch a bin and `need` pixels (greedy cuts)."""
  pieces, pixels, bins = 0, 0.0, 0
  for count in counts:
    pixels, bins = pixels + count, bins + 1
    if pieces < num_branches - 1 and pixels >= need:
      pieces, pixels, bins = pieces + 1, 0.0, 0
  return pieces == num_branches - 1 and bins > 0 and pixels >= need


def feasible_share(counts, num_branches, min_share, iterations=30):
  """The largest share <= min_share that some split of the bins gives every branch.

  Pixels of one |COC| value cannot be split (an untrained COC net puts nearly all of them at 0):
  the search then asks for what the data allows instead of failing.
  """
  counts = np.asarray(counts, np.float64)
  total = float(counts.sum())
  if total == 0 or _can_split(counts, num_branches, min_share * total):
    return float(min_share)
  low, high = 0.0, float(min_share)
  for _ in range(iterations):
    middle = (low + high) / 2
    low, high = (middle, high) if _can_split(counts, num_branches, middle * total) else (low, middle)
  return low


def branch_shares(thresholds, counts, edges):
  """Each branch's share of the pixels (M,), summing to 1 (zeros without pixels), to log per round.

  A bin goes to the branch its centre falls in, r_i <= centre < r_{i+1} (the last branch also past
  r_{M+1}, as the masks; branch 0 below r_1): exact for thresholds on bin edges, as the solver's.
  """
  thresholds = np.asarray(thresholds, np.float64)
  counts = np.asarray(counts, np.float64)
  edges = np.asarray(edges, np.float64)
  num_branches = len(thresholds) - 1
  centres = (edges[:-1] + edges[1:]) / 2
  branch = np.clip(np.searchsorted(thresholds[:-1], centres, side="right") - 1, 0, num_branches - 1)
  pixels = np.bincount(branch, weights=counts, minlength=num_branches)
  total = pixels.sum()
  return pixels / total if total > 0 else np.zeros(num_branches)


def has_converged(previous, current, tolerance):
  """Algorithm 1 stops when no threshold moves by more than `tolerance` px."""
  return bool(np.max(np.abs(np.asarray(previous) - np.asarray(current))) <= tolerance)
