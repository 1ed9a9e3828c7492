"""The branches of BaMBNet's multi-branch body (paper Fig. 3), wired stage to stage by wiring.py."""

from typing import Sequence

import flax.linen as nn

from bambnet_jax.models import blocks
from bambnet_jax.models import wiring


class FCNBranch(nn.Module):
  """The lightest branch (capacity k=1): eight 1x1 conv + ReLU stages at full resolution."""
  spec: blocks.ConvSpec = blocks.ConvSpec()

  @nn.compact
  def __call__(self, pyramid):
    features = x = pyramid[0]
    outputs = {}
    for s in range(1, wiring.NUM_STAGES + 1):
      if s > 1:
        x = wiring.stage_input(s, outputs, features)  # A() is the identity at full resolution
      outputs[s] = nn.relu(blocks.Conv1x1(features.shape[-1], self.spec, name=f"stage_{s}")(x))
    return outputs[wiring.NUM_STAGES]


class UNetBranch(nn.Module):
  """A U-Net-like branch: each stage a ResidualGroup of `num_blocks` RCABs, then pool or upsample."""
  num_blocks: int
  reduction: int = 16
  spec: blocks.ConvSpec = blocks.ConvSpec()

  @nn.compact
  def __call__(self, pyramid):
    outputs = {}
    x = pyramid[0]
    for s in range(1, wiring.NUM_STAGES + 1):
      if s > 1:
        x = wiring.stage_input(s, outputs, pyramid[wiring.level_after_stage(s - 1)].astype(outputs[s - 1].dtype))
      x = blocks.ResidualGroup(self.num_blocks, self.reduction, self.spec, name=f"stage_{s}")(x)
      x = wiring.max_pool_2x(x) if s <= wiring.NUM_STAGES // 2 else wiring.upsample_nearest_2x(x)
      outputs[s] = x
    return outputs[wiring.NUM_STAGES]


def blocks_per_group(capacity):
  """A branch of capacity k has floor(k / 3) RCABs per group; 0 means the FCN-like branch."""
  return capacity // 3


class MultiBranchBody(nn.Module):
  """Head conv, M parallel branches, and the gated merge z = F_enc + sum_i g_i * o8_i."""
  width: int = 64
  branch_capacities: Sequence[int] = (1, 4, 7, 10)
  reduction: int = 16
  spec: blocks.ConvSpec = blocks.ConvSpec()

  @nn.compact
  def __call__(self, dp_views, gates=None, separate=False):
    """dp_views: (N, H, W, 6), H and W multiples of 16. gates: None or (N, H, W, M).

    With `separate`, returns (F_enc, [o8_i]) instead of the merge, for evaluating each branch alone.
    """
    features = nn.relu(blocks.Conv3x3(self.width, self.spec, name="head")(dp_views))
    pyramid = wiring.average_pyramid(features)
    # Each branch and the merge take F_enc through a gradient fence of their own, so that the
    # gradients of F_enc's many uses are summed in one fusion (measured in experiments/PERF.md).
    outputs = []
    for i, capacity in enumerate(self.branch_capacities):
      n = blocks_per_group(capacity)
      branch = FCNBranch(self.spec, name=f"branch_{i}") if n == 0 else UNetBranch(
          n, self.reduction, self.spec, name=f"branch_{i}")
      outputs.append(branch([blocks.gradient_fence(features)] + pyramid[1:]))
    merged = blocks.gradient_fence(features)
    for i, out in enumerate(outputs):
      if gates is not None:
        out = out * gates[..., i:i + 1].astype(out.dtype)
      merged = merged + out
    return (features, outputs) if separate else merged
