"""Fréchet Inception Distance as pytorch-fid computes it, from InceptionV3 features (float64).

Tr(sqrtm(S1 S2)) is the sum of the singular values of A1 A2' / sqrt(c), A the centred features
and c = (N1 - 1)(N2 - 1): no D x D matrix, milliseconds instead of a 2048 x 2048 `sqrtm`'s seconds
(experiments/bench_metrics.py), and exact where fewer images than features make S1 S2 singular.
"""

import numpy as np
from scipy import linalg


def _centred(features):
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or len(features) < 2:
    raise ValueError(f"FID needs at least 2 feature vectors as (N, D), got shape {features.shape}")
  mean = np.mean(features, axis=0)
  return mean, features - mean


def fid(features1, features2):
  """FID between two sets of features (N1, D) and (N2, D), covariances over N - 1 (np.cov)."""
  (mu1, a1), (mu2, a2) = _centred(features1), _centred(features2)
  if mu1.shape != mu2.shape:
    raise ValueError(f"FID: features differ in size: {mu1.shape} vs {mu2.shape}")
  n1, n2 = len(a1) - 1, len(a2) - 1
  trace_sqrt = np.sum(linalg.svdvals(a1 @ a2.T / np.sqrt(n1 * n2)))
  diff = mu1 - mu2
  return float(diff @ diff + np.sum(a1 * a1) / n1 + np.sum(a2 * a2) / n2 - 2.0 * trace_sqrt)
