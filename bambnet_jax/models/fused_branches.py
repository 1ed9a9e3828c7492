"""The U-Net-like branches computed together: each conv step of a stage as one grouped convolution.

The branches of capacity 4, 7 and 10 run 1, 2 and 3 RCABs per stage, at the same shapes. Taken
stage by stage, branch b's t-th convolution of a stage (its RCABs' two convs each, then the
group's closing conv) runs beside the other branches' t-th ones: 7 grouped convolutions per
stage (3, 3, 3, 2, 2, 1, 1 branches) instead of 15 separate ones, 56 calls per forward pass
instead of 120. The bfloat16 training step is bound by kernel launches (experiments/PERF.md),
so fewer, wider calls are what could make it faster. Same function, same parameters
(`branches.UNetBranch`'s tree, key for key): `model.fuse_branches` only changes the schedule.
"""

import jax
import jax.numpy as jnp

from bambnet_jax.models import blocks
from bambnet_jax.models import wiring


def _conv_params(stage, num_blocks, t):
  """Branch conv number t of a stage: RCAB t // 2's conv_0 / conv_1, then the closing conv_out."""
  if t == 2 * num_blocks:
    return stage["conv_out"]
  return stage[f"rcab_{t // 2}"][f"conv_{t % 2}"]


def grouped_conv3x3(inputs, kernels, biases, spec=blocks.ConvSpec()):
  """Each input (N, H, W, C) convolved with its own 3x3 kernel, as one grouped convolution.

  `spec.matmul_below` does not apply (a grouped conv is one call already), nor does
  `spec.conv_gradients` (the gradients stay XLA's)."""
  dtype, layout = spec.dtype, spec.kernel_layout
  x = jnp.concatenate([i.astype(dtype) for i in inputs], axis=-1)
  kernel = jnp.concatenate([k.astype(dtype) for k in kernels], axis=layout.index("O"))
  bias = jnp.concatenate([b.astype(dtype) for b in biases])
  y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", layout, "NHWC"),
                                   feature_group_count=len(inputs))
  return jnp.split(y + bias, len(inputs), axis=-1)


def _residual_groups(stage_params, num_blocks, inputs, reduction, spec):
  """`blocks.ResidualGroup` of every branch at one stage, conv step by conv step."""
  ys, rcab_inputs = list(inputs), [None] * len(inputs)
  for t in range(2 * max(num_blocks) + 1):
    active = [b for b, n in enumerate(num_blocks) if t <= 2 * n]
    params = [_conv_params(stage_params[b], num_blocks[b], t) for b in active]
    for b in active:
      if t < 2 * num_blocks[b] and t % 2 == 0:
        rcab_inputs[b] = ys[b]
    outs = grouped_conv3x3([ys[b] for b in active], [p["kernel"] for p in params], [p["bias"] for p in params],
                           spec)
    for b, out in zip(active, outs):
      if t == 2 * num_blocks[b]:  # the closing conv: the skip over the whole group
        ys[b] = inputs[b] + out
      elif t % 2 == 0:  # an RCAB's first conv
        ys[b] = jax.nn.relu(out)
      else:  # its second: channel attention and the RCAB's skip
        attention = {"params": stage_params[b][f"rcab_{t // 2}"]["attention"]}
        ys[b] = rcab_inputs[b] + blocks.ChannelAttention(reduction, spec.kernel_layout).apply(attention, out)
  return ys


def fused_unet_branches(branch_params, num_blocks, pyramid, reduction=16, spec=blocks.ConvSpec()):
  """o8 of every U-Net-like branch (`branches.UNetBranch`), their stages run together.

  branch_params: each branch's UNetBranch parameters; num_blocks: its RCABs per group.
  """
  outputs = [{} for _ in branch_params]
  xs = [pyramid[0]] * len(branch_params)
  for s in range(1, wiring.NUM_STAGES + 1):
    if s > 1:
      pooled = pyramid[wiring.level_after_stage(s - 1)]
      xs = [wiring.stage_input(s, outputs[b], pooled.astype(outputs[b][s - 1].dtype))
            for b in range(len(branch_params))]
    stage = [p[f"stage_{s}"] for p in branch_params]
    xs = _residual_groups(stage, num_blocks, xs, reduction, spec)
    resize = wiring.max_pool_2x if s <= wiring.NUM_STAGES // 2 else wiring.upsample_nearest_2x
    for b, x in enumerate(xs):
      outputs[b][s] = resize(x)
  return [o[wiring.NUM_STAGES] for o in outputs]
