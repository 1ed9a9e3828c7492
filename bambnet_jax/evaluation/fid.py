"""Fréchet Inception Distance as pytorch-fid computes it, from InceptionV3 features (float64).

`fid(features1, features2)`: "sqrtm" follows `pytorch_fid.fid_score.calculate_frechet_distance`,
"eigh" takes Tr(sqrtm(S1 S2)) from eig(sqrt(S1) S2 sqrt(S1)), "gram" (the default) from the singular
values of the centred features' A1 A2' / sqrt(c): no D x D matrix (experiments/bench_metrics.py).
"""

import warnings

import numpy as np
from scipy import linalg

METHODS = ("sqrtm", "eigh")  # from statistics; fid() also has "gram"
FEATURE_METHODS = ("gram",) + METHODS


def _centred(features):
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or len(features) < 2:
    raise ValueError(f"FID needs at least 2 feature vectors as (N, D), got shape {features.shape}")
  mean = np.mean(features, axis=0)
  return mean, features - mean


def statistics(features):
  """(mean, covariance) of (N, D) features, float64, covariance over N - 1 (np.cov)."""
  mean, centred = _centred(features)
  return mean, centred.T @ centred / (len(centred) - 1)


def _trace_sqrt_product_sqrtm(sigma1, sigma2, eps):
  with warnings.catch_warnings():
    # Fewer images than features make S1 S2 singular: expected, and handled as pytorch-fid does.
    warnings.simplefilter("ignore", linalg.LinAlgWarning)
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
      # A singular product: nudge both covariances, as pytorch-fid does.
      offset = np.eye(len(sigma1)) * eps
      covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError(f"FID: sqrtm(S1 S2) has an imaginary component of {np.max(np.abs(covmean.imag)):.3g}")
    covmean = covmean.real
  return float(np.trace(covmean))


def _trace_sqrt_product_eigh(sigma1, sigma2):
  # S1 S2 is similar to sqrt(S1) S2 sqrt(S1), which is symmetric PSD: same eigenvalues.
  values, vectors = linalg.eigh(sigma1)
  root = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
  middle = root @ sigma2 @ root
  return float(np.sum(np.sqrt(np.clip(linalg.eigvalsh((middle + middle.T) / 2), 0, None))))


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6, method="sqrtm"):
  """The Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (see the module docstring)."""
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
    raise ValueError(f"FID: statistics differ in size: {mu1.shape} vs {mu2.shape}, "
                     f"{sigma1.shape} vs {sigma2.shape}")
  if method not in METHODS:
    raise ValueError(f"unknown FID method {method!r}; expected one of {METHODS}")
  if method == "sqrtm":
    trace_sqrt = _trace_sqrt_product_sqrtm(sigma1, sigma2, eps)
  else:
    trace_sqrt = _trace_sqrt_product_eigh(sigma1, sigma2)
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def fid(features1, features2, method="gram"):
  """FID between two sets of features (N1, D) and (N2, D); `method` one of FEATURE_METHODS."""
  if method != "gram":
    return frechet_distance(*statistics(features1), *statistics(features2), method=method)
  (mu1, a1), (mu2, a2) = _centred(features1), _centred(features2)
  if mu1.shape != mu2.shape:
    raise ValueError(f"FID: features differ in size: {mu1.shape} vs {mu2.shape}")
  n1, n2 = len(a1) - 1, len(a2) - 1
  trace_sqrt = np.sum(linalg.svdvals(a1 @ a2.T / np.sqrt(n1 * n2)))
  diff = mu1 - mu2
  return float(diff @ diff + np.sum(a1 * a1) / n1 + np.sum(a2 * a2) / n2 - 2.0 * trace_sqrt)
