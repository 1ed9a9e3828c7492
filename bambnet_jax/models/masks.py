"""Defocus masks and their annealing (paper section III-C, Eq. for g_i).

D_i = [r_i <= blur < r_{i+1}] with blur the largest |COC| over the colour channels and the last
interval open-ended; while training, branch i's output is scaled by g_i = w D_i + (1 - w) with
w = exp(-(2 t / T)^2), and g_i = 1 from t = T on, so inference needs no COC map.
Thresholds and w are arrays, so a new threshold round or a new step never recompiles.
"""

import jax.numpy as jnp

RELEASED_THRESHOLDS = (0.0, 1.9, 4.2, 6.2)  # the released code's hand-set r_1..r_4
ANNEALING_STEPS = 20_000  # T


def defocus_masks(coc, thresholds):
  """One-hot branch masks (N, H, W, M) from a signed COC map (N, H, W, C) and r_1..r_M."""
  thresholds = jnp.asarray(thresholds, jnp.float32)
  blur = jnp.max(jnp.abs(coc), axis=-1, keepdims=True)
  upper = jnp.concatenate([thresholds[1:], jnp.array([jnp.inf], jnp.float32)])
  return ((blur >= thresholds) & (blur < upper)).astype(jnp.float32)


def annealing_weight(step, total_steps=ANNEALING_STEPS):
  """w = exp(-(2 t / T)^2) for t < T, else 0 (the masks are gone)."""
  t = jnp.asarray(step, jnp.float32)
  w = jnp.exp(-jnp.square(2.0 * t / total_steps))
  return jnp.where(t < total_steps, w, 0.0)


def branch_gates(masks, weight):
  """g_i = w D_i + (1 - w)."""
  return weight * masks + (1.0 - weight)
