"""Training logs per stage: a tqdm bar, TensorBoard event files and JSON lines, from process 0 only."""

import json
import math
import pathlib
import time

import jax
import tqdm


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN or Inf; the last good checkpoint is kept."""


class StageLogger:
  """Writes `workdir/metrics.jsonl` and `workdir/tensorboard/` and shows a progress bar."""

  def __init__(self, workdir, stage, total_steps, initial_step=0):
    self.stage = stage
    self.enabled = jax.process_index() == 0
    if not self.enabled:
      return
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    self._jsonl = open(workdir / "metrics.jsonl", "a", encoding="utf-8")
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._writer = SummaryWriter(str(workdir / "tensorboard" / stage))
    self._bar = tqdm.tqdm(total=total_steps, initial=initial_step, desc=stage, unit="step",
                          dynamic_ncols=True, mininterval=1.0)
    self._last_step, self._last_time = initial_step, time.perf_counter()

  def write(self, step, metrics):
    """Records host-side scalar `metrics` at `step` (and advances the bar)."""
    if not self.enabled:
      return
    now = time.perf_counter()
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    record = {"stage": self.stage, "step": int(step), "steps_per_s": rate, "time": time.time()}
    record.update({k: float(v) for k, v in metrics.items()})
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    for key, value in metrics.items():
      self._writer.add_scalar(f"{self.stage}/{key}", float(value), step)
    self._bar.set_postfix({k: f"{float(v):.4g}" for k, v in metrics.items() if k in ("loss", "psnr")})
    self._bar.update(step - self._bar.n)

  def close(self):
    if self.enabled:
      self._bar.close()
      self._writer.close()
      self._jsonl.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def check_finite(metrics, stage, step):
  """Stops training at a NaN or Inf loss, naming the stage and step."""
  loss = metrics.get("loss", 0.0)
  if not math.isfinite(loss) or metrics.get("nonfinite", 0.0) > 0:
    raise NonFiniteLossError(f"non-finite loss ({loss}) in stage '{stage}' by step {step}; "
                             f"the last good checkpoint is kept (set skip_nonfinite=True to skip such steps)")
