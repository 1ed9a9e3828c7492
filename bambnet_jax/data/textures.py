"""Procedural sharp images with natural-image statistics, so synthetic DP data needs no download.

Dead leaves (Lee, Mumford and Huang 2001): opaque shapes with 1/r^3 radii, for the scale invariance
and sharp occluding edges of natural images; each leaf's shading, grain and stripes add texture
down to one pixel.
"""

import cv2
import numpy as np


def dead_leaves(rng, height, width, min_radius=2.5, max_radius=None, coverage=5.0):
  """A float32 (height, width, 3) RGB image in [0, 1], drawn from the Generator `rng`. Leaf radii lie
  in [min_radius, max_radius] px (default: a third of the image); `coverage` is the leaf area drawn
  per image area (exp(-coverage) of the pixels keep the background)."""
  if max_radius is None:
    max_radius = max(min_radius * 2, min(height, width) / 3)
  lo, hi = min_radius, max_radius
  aspect_lo = 0.35
  # Mean leaf area: E[r^2] of the 1/r^3 law, times pi and the mean aspect ratio.
  mean_r2 = 2 * lo ** 2 * hi ** 2 * np.log(hi / lo) / (hi ** 2 - lo ** 2)
  mean_area = np.pi * mean_r2 * (1 + aspect_lo) / 2
  # Centres spill over the borders by hi / 2 so that edges are covered as densely as the middle.
  spill = hi / 2
  count = int(coverage * (height + 2 * spill) * (width + 2 * spill) / mean_area) + 1
  # Inverse-CDF sampling of the density r^-3 on [lo, hi].
  radii = (lo ** -2.0 + rng.random(count) * (hi ** -2.0 - lo ** -2.0)) ** -0.5
  aspect = rng.uniform(aspect_lo, 1.0, count)
  angles = rng.uniform(0, 180, count)
  centres = rng.uniform((-spill, -spill), (width + spill, height + spill), (count, 2))

  # Label image: later leaves occlude earlier ones (painter's order), label 0 = background.
  labels = np.zeros((height, width), np.int32)
  axes = np.maximum(1, np.rint(radii[:, None] * np.stack([np.ones(count), aspect], 1))).astype(int)
  centres_px = np.rint(centres).astype(int)
  for i, (centre, axis, angle) in enumerate(zip(centres_px.tolist(), axes.tolist(), angles.tolist())):
    cv2.ellipse(labels, centre, axis, angle, 0, 360, i + 1, -1)

  leaves = count + 1
  size = np.append(hi, radii)
  # Per-leaf appearance, gathered per pixel in one lookup: colour (3), a gentle shading ramp as
  # light falls off over a curved surface (2) about the leaf's centre (2), grain amplitude (1),
  # and stripes for some leaves: amplitude, angular frequency along x and y, phase (4).
  table = np.zeros((leaves, 12), np.float32)
  luminance = rng.uniform(0.04, 0.96, leaves)
  table[:, 0:3] = np.clip(luminance[:, None] * (1.0 + 0.2 * rng.standard_normal((leaves, 3))), 0.0, 1.0)
  table[:, 3:5] = rng.normal(0.0, 0.5, (leaves, 2)) / np.maximum(size, 1.0)[:, None]
  table[:, 5:7] = np.concatenate([[(width / 2, height / 2)], centres])
  table[:, 7] = rng.uniform(0.0, 0.25, leaves) * (rng.random(leaves) < 0.7)
  table[:, 8] = rng.uniform(0.05, 0.3, leaves) * (rng.random(leaves) < 0.25)
  frequency = rng.uniform(0.04, 0.4, leaves)  # cycles per px, up to near Nyquist
  direction = rng.uniform(0, np.pi, leaves)
  table[:, 9] = 2 * np.pi * frequency * np.cos(direction)
  table[:, 10] = 2 * np.pi * frequency * np.sin(direction)
  table[:, 11] = rng.uniform(0, 2 * np.pi, leaves)
  p = table[labels]
  y, x = np.mgrid[0:height, 0:width].astype(np.float32)
  noise = cv2.GaussianBlur(rng.standard_normal((height, width)).astype(np.float32), (0, 0), 0.7)
  modulation = (1.0 + p[..., 3] * (x - p[..., 5]) + p[..., 4] * (y - p[..., 6]) + p[..., 7] * noise
                + p[..., 8] * np.sin(p[..., 9] * x + p[..., 10] * y + p[..., 11]))
  return np.clip(p[..., 0:3] * modulation[..., None], 0.0, 1.0)
