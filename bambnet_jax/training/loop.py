"""The host loop shared by the training stages: steps, log-step metric fetches, checkpoints.

The loop never blocks on the device between log steps: metrics stay on the device until a log or
checkpoint step, where they are fetched together, checked for NaN/Inf and written.
"""

import base64
import dataclasses
from typing import Any

import jax
import numpy as np

from bambnet_jax.training import stage_checkpoints
from bambnet_jax.training import logs


def encode_data_state(state):
  """A data iterator's position (bytes or JSON-able) as JSON."""
  if isinstance(state, bytes):
    return {"bytes": base64.b64encode(state).decode("ascii")}
  return {"json": state}


def decode_data_state(record):
  return base64.b64decode(record["bytes"]) if "bytes" in record else record["json"]


@dataclasses.dataclass
class LoopSettings:
  stage: str
  log_every: int
  checkpoint_every: int
  skip_nonfinite: bool = False


def _mean_metrics(pending):
  stacked = jax.device_get(pending)
  return {k: float(np.mean([m[k] for m in stacked])) for k in stacked[0]}


def run_steps(state, step_fn, batches, end_step, *, settings: LoopSettings,
              checkpoints: stage_checkpoints.StageCheckpoints, logger: logs.StageLogger,
              extra_state: dict[str, Any], save_at_end=True):
  """Runs `step_fn` for steps state.step .. end_step - 1; returns the state.

  Checkpoints every `settings.checkpoint_every` steps and at `end_step` (with `save_at_end`),
  storing `extra_state` (JSON-able; read at each save, so a caller may update it between calls)
  and the data position beside the state.
  """
  step = int(jax.device_get(state.step))
  pending = []
  while step < end_step:
    state, metrics = step_fn(state, next(batches))
    pending.append(metrics)
    step += 1
    is_last = step == end_step
    save = (step % settings.checkpoint_every == 0 and not is_last) or (is_last and save_at_end)
    if step % settings.log_every == 0 or is_last or save:
      summary = _mean_metrics(pending)
      summary["nonfinite"] = summary.get("nonfinite", 0.0) * len(pending)  # a count of steps
      pending = []
      if not settings.skip_nonfinite:
        # Before any save: a checkpoint must never hold NaN parameters.
        logs.check_finite(summary, settings.stage, step)
      logger.write(step, summary)
    if save:
      checkpoints.save(step, state, extra_state | {"data": encode_data_state(batches.get_state())})
  return state
