"""Pure steps of the three training stages (paper section III-D), jitted over the device mesh.

`step(state, batch) -> (state, metrics)`, the state donated; the frozen COC net and thresholds are
data in `mask_inputs` (a new search round never recompiles). All randomness is in the data pipeline.
"""

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from bambnet_jax.losses import reblur
from bambnet_jax.models import masks
from bambnet_jax.training import flat_params
from bambnet_jax.parallel import sharding
from bambnet_jax.training import thresholds as threshold_search

# How the deblurring net's branches are gated during a step.
HARD_MASKS = "hard"  # g_i = D_i: the threshold search's inner training
ANNEALED_MASKS = "annealed"  # g_i = w(t) D_i + 1 - w(t): stage 3 while t < T
NO_MASKS = "none"  # g_i = 1: stage 3 after annealing, the ablation, inference


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: flat_params.FlatParams
  opt_state: Any
  mask_inputs: Any = None  # the deblurring net's {"coc_params" (FlatParams), "thresholds"}


def mask_inputs(coc_params, thresholds):
  """What the deblurring net's masks are computed from; coc_params None: no masks (the ablation)."""
  return {"coc_params": coc_params, "thresholds": jnp.asarray(thresholds, jnp.float32)}


def create_state(params, optimizer, inputs_of_masks=None):
  """A step-0 state for a parameter tree, the parameters (and frozen COC parameters) kept flat."""
  params = flat_params.flatten(params)
  if inputs_of_masks is not None and inputs_of_masks["coc_params"] is not None:
    inputs_of_masks = dict(inputs_of_masks, coc_params=flat_params.flatten(inputs_of_masks["coc_params"]))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                    mask_inputs=inputs_of_masks)


def dp_views(batch):
  return jnp.concatenate([batch["left"], batch["right"]], axis=-1)


def global_norm(tree):
  """The L2 norm of all leaves as one reduction (optax.tree.norm launches one kernel per leaf)."""
  flat = jnp.concatenate([jnp.ravel(x).astype(jnp.float32) for x in jax.tree_util.tree_leaves(tree)])
  return jnp.sqrt(jnp.sum(jnp.square(flat)))


def _apply_update(state, grads, optimizer, loss, skip_nonfinite):
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  new = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                      opt_state=opt_state)
  grad_norm = global_norm(grads)
  # One NaN or Inf anywhere makes the global norm non-finite: one check, not a reduction per leaf.
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  if skip_nonfinite:
    # Keep the old parameters and optimizer moments, but count the step so the data moves on.
    new = jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, state.replace(step=state.step + 1))
  return new, {"loss": loss, "grad_norm": grad_norm, "nonfinite": 1.0 - finite.astype(jnp.float32)}


def coc_train_step(state, batch, *, model, optimizer, tv_start, tv_weight, loss_border=0, skip_nonfinite=False):
  """Stage 1: the COC net on the unsupervised DP reblur loss (SPEC section 3)."""
  # The kernel responses do not depend on the network: computed once, outside the gradient.
  responses = reblur.kernel_responses(batch["left"], batch["right"])
  weight = reblur.tv_weight_at(state.step, start=tv_start, weight=tv_weight)

  def loss_fn(params):
    coc = model.apply({"params": params.tree()}, dp_views(batch))
    return reblur.reblur_loss_from_responses(responses, coc, tv_weight=weight, border=loss_border), coc

  (loss, coc), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state, metrics = _apply_update(state, grads, optimizer, loss, skip_nonfinite)
  return state, metrics | {"at_clamp": jnp.mean(_at_clamp(coc, model.clamp))}


def _at_clamp(coc, clamp):
  """1 where a COC value sits at the clamp (within 0.1%): a collapsed COC net's output, where no
  gradient flows back."""
  return (jnp.abs(coc) >= 0.999 * clamp).astype(jnp.float32)


def _real_pixels(batch):
  """The real pixels of an evaluation batch (images of mixed sizes are padded), else its real rows."""
  return batch.get("pixel_mask", batch.get("mask"))


def coc_clamp_step(coc_params, batch, *, coc_model):
  """(COC values at the clamp, all COC values) of one batch's real pixels."""
  coc = coc_model.apply({"params": coc_params}, dp_views(batch))
  weight = threshold_search.pixel_weights(coc[..., 0], _real_pixels(batch))[..., None]
  return jnp.sum(_at_clamp(coc, coc_model.clamp) * weight), jnp.sum(weight) * coc.shape[-1]


def branch_gates(inputs_of_masks, views, mask_mode, anneal_step, anneal_steps, coc_model):
  """The gates of each branch for a batch; computes the COC map only when the masks need it."""
  if mask_mode == NO_MASKS:
    return None
  coc = jax.lax.stop_gradient(coc_model.apply({"params": inputs_of_masks["coc_params"].tree()}, views))
  mask = masks.defocus_masks(coc, inputs_of_masks["thresholds"][:-1])
  weight = 1.0 if mask_mode == HARD_MASKS else masks.annealing_weight(anneal_step, anneal_steps)
  return masks.branch_gates(mask, weight)


def deblur_train_step(state, batch, *, model, coc_model, optimizer, mask_mode, anneal_steps,
                      skip_nonfinite=False):
  """Stages 2 and 3: the deblurring net on L1 against the sharp target, gated per `mask_mode`."""
  views = dp_views(batch)
  gates = branch_gates(state.mask_inputs, views, mask_mode, state.step, anneal_steps, coc_model)

  def loss_fn(params):
    restored = model.apply({"params": params.tree()}, views, gates)
    return jnp.mean(jnp.abs(restored - batch["sharp"]))

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  return _apply_update(state, grads, optimizer, loss, skip_nonfinite)


def _blur(coc_model, coc_params, views):
  """The pixel's largest |COC| over the colour channels, as the masks read it."""
  return jnp.max(jnp.abs(coc_model.apply({"params": coc_params.tree()}, views)), axis=-1)


def blur_histogram_step(coc_params, batch, edges, *, coc_model):
  """Threshold search: the meta batch's pixel counts per |COC| bin (`edges` traced: no recompile)."""
  return threshold_search.blur_histogram(_blur(coc_model, coc_params, dp_views(batch)), edges, _real_pixels(batch))


def branch_error_step(params, inputs_of_masks, batch, edges, *, model, coc_model):
  """Threshold search: per-(branch, COC bin) summed L1 error of each branch alone on one batch."""
  views = dp_views(batch)
  blur = _blur(coc_model, inputs_of_masks["coc_params"], views)
  alone = model.apply({"params": params.tree()}, views, each_branch_alone=True)
  return threshold_search.per_bin_branch_errors(alone, batch["sharp"], blur, edges, _real_pixels(batch))


# On CPU, XLA's older fusion emitters compile the ~450 pieces of a FlatParams' split ~1.5x faster,
# with the same loss and step time (experiments/PERF.md).
CPU_FLAT_STATE_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


def step_options(platform=None):
  """XLA options for a step on `platform` (default: JAX's default backend)."""
  return dict(CPU_FLAT_STATE_OPTIONS) if (platform or jax.default_backend()) == "cpu" else {}


def jit_train_step(step_fn, mesh, **static):
  """Jits a train step over the mesh: state replicated and donated, batch sharded on `data`."""
  return jax.jit(functools.partial(step_fn, **static),
                 in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
                 out_shardings=(sharding.replicated(mesh), sharding.replicated(mesh)),
                 donate_argnums=(0,), compiler_options=step_options(mesh.devices.flat[0].platform))
