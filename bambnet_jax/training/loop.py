"""The host loop of the training stages: steps, metrics fetched (and checked) only at log steps, checkpoints."""

import base64
import dataclasses
from typing import Any

import jax
import numpy as np

from bambnet_jax.training import stage_checkpoints
from bambnet_jax.training import logs


def encode_data_state(state):
  """A data iterator's position (bytes or JSON-able) as JSON."""
  return {"bytes": base64.b64encode(state).decode("ascii")} if isinstance(state, bytes) else {"json": state}


def decode_data_state(record):
  return base64.b64decode(record["bytes"]) if "bytes" in record else record["json"]


@dataclasses.dataclass
class LoopSettings:
  stage: str
  log_every: int
  checkpoint_every: int
  skip_nonfinite: bool = False


def run_steps(state, step_fn, batches, end_step, *, settings: LoopSettings,
              checkpoints: stage_checkpoints.StageCheckpoints, logger: logs.StageLogger,
              extra_state: dict[str, Any], save_at_end=True):
  """Runs `step_fn` up to `end_step`, checkpointing (with `extra_state`, read at each save, and the
  data position) every `settings.checkpoint_every` steps and at `end_step` if `save_at_end`."""
  step, pending = int(jax.device_get(state.step)), []
  while step < end_step:
    state, metrics = step_fn(state, next(batches))
    pending.append(metrics)
    step += 1
    is_last = step == end_step
    save = (step % settings.checkpoint_every == 0 and not is_last) or (is_last and save_at_end)
    if step % settings.log_every == 0 or is_last or save:
      fetched = jax.device_get(pending)  # the loop's only wait on the device
      summary = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
      summary["nonfinite"] = summary.get("nonfinite", 0.0) * len(pending)  # a count of steps
      pending = []
      if not settings.skip_nonfinite:
        # Before any save: a checkpoint must never hold NaN parameters.
        logs.check_finite(summary, settings.stage, step)
      logger.write(step, summary)
    if save:
      checkpoints.save(step, state, extra_state | {"data": encode_data_state(batches.get_state())})
  return state
