"""`bambnet quickstart`: train on a CPU in minutes, restore the real Canon pairs, write one HTML report.

    bambnet quickstart --workdir workdirs/quickstart
"""

import pathlib

from bambnet_jax.commands import deblur
from bambnet_jax.commands import report
from bambnet_jax.commands import train
from bambnet_jax.io import config_files

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
QUICKSTART_CONFIG = REPO_ROOT / "configs" / "quickstart.py"
CANON_DIR = REPO_ROOT / "tests" / "data" / "real_dp" / "canon_r6m2_flat"


def run_quickstart(workdir, overrides=(), canon_dir=CANON_DIR, config_path=QUICKSTART_CONFIG):
  """Trains and evaluates `config_path` in `workdir`, restores the Canon pairs, writes the report.

  Returns the report's path. A finished training run is resumed (not redone), so running it again
  only rewrites the Canon outputs and the report.
  """
  workdir = pathlib.Path(workdir)
  config = config_files.apply_overrides(config_files.load_config(str(config_path)), list(overrides))
  train.train_and_evaluate(config, workdir)
  canon_dir = None if canon_dir is None else pathlib.Path(canon_dir)
  canon = []
  if canon_dir is not None and canon_dir.is_dir():
    # What deblur returns per pair (its input files, outputs and COC estimator) is what the report shows.
    canon = deblur.run_deblur(workdir / "canon", input_dir=canon_dir, weights=workdir, show_progress=False)
  else:
    # The captures ship with a source checkout only; an installed package has no tests/data.
    print(f"no Canon DP pairs at {canon_dir}: the report leaves them out")
  return report.write_report(workdir, config, canon)
