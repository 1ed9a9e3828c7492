"""The threshold search (paper Algorithm 1, Eq. 9): which COC range each branch takes.

Thresholds on bin edges exactly minimise sum_i sum_{b in [r_i, r_{i+1})} E_i[b], E_i[b] the meta
set's error of branch i alone on COC bin b (a dynamic programme). So that no branch starves, bins
and start may follow the |COC| quantiles and each branch may be given a least pixel share.
"""

import jax
import jax.numpy as jnp
import numpy as np

_SHARE_SLACK = 1e-9  # shares are compared up to this much rounding


def bin_edges(max_coc=25.0, bin_width=0.25):
  """Edges of the COC bins [0, w), [w, 2w), ..., the last one closed at max_coc."""
  return np.linspace(0.0, max_coc, int(round(max_coc / bin_width)) + 1)


def uniform_thresholds(num_branches, max_coc=25.0):
  """Algorithm 1's start: r_1 = 0, r_{M+1} = max_coc, the inner ones equally spaced."""
  return np.linspace(0.0, max_coc, num_branches + 1)


def _bin_index(blur, edges):
  """Bin b with edges[b] <= blur < edges[b + 1], clamped to the first and last bin (as the masks)."""
  edges = jnp.asarray(edges, jnp.float32)
  index = jnp.searchsorted(edges, jnp.asarray(blur, jnp.float32), side="right") - 1
  return jnp.clip(index, 0, edges.shape[0] - 2)


def pixel_weights(blur, valid):
  """1 per pixel, 0 outside `valid` (None, an (N,) mask of images or an (N, H, W) one of pixels)."""
  weight = jnp.ones(jnp.shape(blur), jnp.float32)
  if valid is not None:
    valid = jnp.asarray(valid, jnp.float32)
    weight = weight * valid.reshape(valid.shape + (1,) * (weight.ndim - valid.ndim))
  return weight


def per_bin_branch_errors(branch_outputs, target, blur, edges, valid=None):
  """(errors (M, B), counts (B,)) of each branch alone (N, M, H, W, C) per bin of blur (N, H, W)."""
  num_bins = jnp.shape(edges)[0] - 1
  pixel_error = jnp.mean(jnp.abs(branch_outputs - target[:, None]), axis=-1).astype(jnp.float32)
  one_hot = jax.nn.one_hot(_bin_index(blur, edges), num_bins, dtype=jnp.float32)  # (N, H, W, B)
  one_hot = one_hot * pixel_weights(blur, valid)[..., None]
  return jnp.einsum("nmhw,nhwb->mb", pixel_error, one_hot), jnp.sum(one_hot, axis=(0, 1, 2))


def blur_histogram(blur, edges, valid=None):
  """Pixels per COC bin (B,), float32, binned as `per_bin_branch_errors` (no one-hot: fine grids are cheap)."""
  num_bins = jnp.shape(edges)[0] - 1
  index = _bin_index(blur, edges).ravel()
  return jnp.bincount(index, pixel_weights(blur, valid).ravel(), length=num_bins).astype(jnp.float32)


def _nearest_cuts(cumulative, targets):
  """Index of the edge whose cumulative count is nearest each target (the lower one on ties)."""
  targets = np.asarray(targets, np.float64)
  above = np.minimum(np.searchsorted(cumulative, targets, side="left"), len(cumulative) - 1)
  below = np.maximum(above - 1, 0)
  return np.where(targets - cumulative[below] <= cumulative[above] - targets, below, above)


def quantile_edges(counts, fine_edges, num_bins, max_coc=25.0):
  """Edges 0 < ... < max_coc of `num_bins` bins with about equal shares of a fine histogram's pixels
  (where quantiles coincide, the widest bins are halved: always `num_bins` bins, no recompile)."""
  counts, fine_edges = np.asarray(counts, np.float64), np.asarray(fine_edges, np.float64)
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
  """Thresholds on the edges nearest the i/M pixel quantiles (or the uniform start), a bin per branch."""
  counts, edges = np.asarray(counts, np.float64), np.asarray(edges, np.float64)
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


def solve_thresholds(errors, edges, counts=None, min_share=0.0):
  """(thresholds (M + 1,), cost) over contiguous, ordered, non-empty ranges of the (M, B) errors' bins;
  with min_share > 0, each range must also hold that share of the (B,) `counts` (ValueError if none can)."""
  errors = np.asarray(errors, np.float64)
  num_branches, num_bins = errors.shape
  if num_bins < num_branches:
    raise ValueError(f"{num_bins} bins cannot give each of {num_branches} branches a bin")
  if len(edges) != num_bins + 1:
    raise ValueError(f"{len(edges)} edges do not bound {num_bins} bins")
  if not min_share >= 0.0:
    raise ValueError(f"min_share must be >= 0, got {min_share}")
  need = 0.0  # pixels each range must hold
  if min_share > 0.0:
    if counts is None:
      raise ValueError("min_share > 0 needs the pixels per bin: pass counts=")
    if np.shape(counts) != (num_bins,):
      raise ValueError(f"counts {np.shape(counts)} do not match {num_bins} bins")
    if num_branches * min_share > 1.0 + _SHARE_SLACK:
      raise ValueError(f"min_share={min_share} for {num_branches} branches asks for "
                       f"{num_branches * min_share:.0%} of the pixels: use min_share <= 1/{num_branches}")
    need = max(0.0, (min_share - _SHARE_SLACK) * float(np.sum(counts)))
  prefix = np.concatenate([np.zeros((num_branches, 1)), np.cumsum(errors, axis=1)], axis=1)
  pixels = np.concatenate([[0.0], np.cumsum(counts if need > 0 else np.zeros(num_bins), dtype=np.float64)])
  # best[b]: least cost of bins [0, b) over branches 0..i, the last one taking [starts[i - 1][b], b).
  allowed = np.triu(pixels[None, :] - pixels[:, None] >= need, 1)  # [a, b): a < b, enough pixels
  best, starts = np.where(allowed[0], prefix[0], np.inf), []
  for i in range(1, num_branches):
    candidates = np.where(allowed, best[:, None] + (prefix[i][None, :] - prefix[i][:, None]), np.inf)
    starts.append(np.argmin(candidates, axis=0))
    best = candidates[starts[-1], np.arange(num_bins + 1)]
  if not np.isfinite(best[num_bins]):
    fullest = float(np.max(counts) / np.sum(counts))
    raise ValueError(f"no split of the {num_bins} bins gives each of {num_branches} branches "
                     f"{min_share:.1%} of the pixels (the fullest bin holds {fullest:.1%}): use finer "
                     "bins where the pixels are (quantile_edges) or a smaller min_share")
  cuts = [num_bins]
  for start in reversed(starts):
    cuts.insert(0, int(start[cuts[0]]))
  return np.asarray(edges, np.float64)[[0] + cuts], float(best[num_bins])


def _can_split(counts, num_branches, need):
  """Whether contiguous bin ranges can give each branch a bin and `need` pixels (greedy cuts)."""
  pieces, pixels, bins = 0, 0.0, 0
  for count in counts:
    pixels, bins = pixels + count, bins + 1
    if pieces < num_branches - 1 and pixels >= need:
      pieces, pixels, bins = pieces + 1, 0.0, 0
  return pieces == num_branches - 1 and bins > 0 and pixels >= need


def feasible_share(counts, num_branches, min_share, iterations=30):
  """The largest share <= min_share that some split gives every branch (a point mass cannot be split)."""
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
  """Each branch's share of the pixels (M,) (zeros without pixels); a bin goes where its centre falls."""
  thresholds, counts, edges = (np.asarray(x, np.float64) for x in (thresholds, counts, edges))
  num_branches = len(thresholds) - 1
  centres = (edges[:-1] + edges[1:]) / 2
  branch = np.clip(np.searchsorted(thresholds[:-1], centres, side="right") - 1, 0, num_branches - 1)
  pixels = np.bincount(branch, weights=counts, minlength=num_branches)
  total = pixels.sum()
  return pixels / total if total > 0 else np.zeros(num_branches)


def has_converged(previous, current, tolerance):
  """Algorithm 1 stops when no threshold moves by more than `tolerance` px."""
  return bool(np.max(np.abs(np.asarray(previous) - np.asarray(current))) <= tolerance)
