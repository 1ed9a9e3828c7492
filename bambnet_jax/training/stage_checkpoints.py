"""Checkpoints of a training workdir, and the record of which stages are finished (resume order: train.py).

Both are replaced atomically: a process killed at any moment leaves the previous complete state.
"""

import json
import os
import pathlib

import jax
import orbax.checkpoint as ocp

from bambnet_jax.io import files

STAGES = ("coc", "search", "deblur", "eval")
# The train state's layout: flat parameters and Adam moments, the frozen COC net under `mask_inputs`.
STATE_FORMAT = 3


class CheckpointError(ValueError):
  """A checkpoint this version cannot resume: the message names the directory and the problem."""


class StageCheckpoints:
  """The checkpoints of one stage: `workdir/<stage>/checkpoints/<step>/{state,extra}`."""

  def __init__(self, workdir, stage, keep=2):
    self.directory = os.path.abspath(os.path.join(workdir, stage, "checkpoints"))
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "extra"))

  def latest_step(self):
    return self._manager.latest_step()

  def save(self, step, state, extra):
    """Saves the state and JSON-able `extra` at `step` (replacing an existing one at that step)."""
    if step in self._manager.all_steps():
      self._manager.delete(step)
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     extra=ocp.args.JsonSave(dict(extra, state_format=STATE_FORMAT))))
    self._manager.wait_until_finished()

  def restore(self, target_state, step=None):
    """Restores (state, extra) of `step` (default: latest) into the structure of `target_state`."""
    step = self.latest_step() if step is None else step
    extra = self._manager.restore(step, args=ocp.args.Composite(extra=ocp.args.JsonRestore()))["extra"]
    found = extra.get("state_format", 1)
    if found != STATE_FORMAT:
      raise CheckpointError(
          f"{self.directory}/{step}: train state in format {found}, this version reads format {STATE_FORMAT}; "
          "resume it with the version that wrote it, or "
          "delete the stage's checkpoints directory to restart the stage")
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target_state)
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
    return self._manager.restore(step, args=args)["state"], extra

  def close(self):
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


class Progress:
  """Which stages have finished, and their small results (thresholds, ...), in progress.json."""

  def __init__(self, workdir):
    self.path = pathlib.Path(workdir) / "progress.json"
    self.record = json.loads(self.path.read_text()) if self.path.exists() else {"finished": {}}

  def is_finished(self, stage):
    return stage in self.record["finished"]

  def result(self, stage):
    return self.record["finished"][stage]

  def finish(self, stage, result=None):
    self.record["finished"][stage] = result if result is not None else {}
    if jax.process_index() == 0:
      files.atomic_write_bytes(self.path, json.dumps(self.record, indent=1).encode())
