"""The 8-stage wiring shared by every branch of BaMBNet's body (paper Fig. 3).

Every branch has 8 stages fed the same way (o_s is stage s's output, A(o) is the head's features
F_enc average-pooled to o's size):
  s1: F_enc;  s2..s5: A(o_{s-1}) + o_{s-1};  s6: A(o5)+o5+o3;  s7: A(o6)+o6+o2;  s8: A(o7)+o7+o1.
The U-Net-like branches halve the resolution after stages 1-4 and double it after stages 5-8,
so o8 is at full resolution again.
"""

import jax.numpy as jnp

NUM_STAGES = 8
SKIPS = {6: 3, 7: 2, 8: 1}


def _pool_2x(x, reduce):
  # A reshape and a reduction (H and W even), not a reduce_window: a windowed max pool's gradient
  # is a select-and-scatter, slow on GPU; this one is an elementwise fusion.
  n, h, w, c = x.shape
  return reduce(x.reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4))


def max_pool_2x(x):
  return _pool_2x(x, jnp.max)


def average_pyramid(features, levels=4):
  """[F_enc, F_enc pooled 2x, 4x, 8x, 16x]: the A(.) terms, shared by all branches."""
  pyramid = [features]
  for _ in range(levels):
    pyramid.append(_pool_2x(pyramid[-1], jnp.mean))
  return pyramid


def upsample_nearest_2x(x):
  n, h, w, c = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, 2, w, 2, c))
  return x.reshape(n, 2 * h, 2 * w, c)


def stage_input(s, outputs, pooled_features):
  """Input of stage s >= 2, given the outputs so far and A(o_{s-1}); SKIPS are the U-Net's long skips."""
  x = pooled_features + outputs[s - 1]
  if s in SKIPS:
    x = x + outputs[SKIPS[s]]
  return x


def level_after_stage(s):
  """Resolution level (number of halvings) of o_s in a U-Net-like branch."""
  return s if s <= 4 else NUM_STAGES - s
