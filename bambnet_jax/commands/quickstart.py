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
  """Trains and evaluates `config_path` in `workdir` (a finished run is not redone), restores the
  Canon pairs and writes the report; returns its path."""
  workdir = pathlib.Path(workdir)
  config = config_files.apply_overrides(config_files.load_config(str(config_path)), list(overrides))
  train.train_and_evaluate(config, workdir)
  canon = []
  if canon_dir is not None and pathlib.Path(canon_dir).is_dir():
    # The classical estimate draws the Canon COC maps: it reads these captures right (about +2.3 px
    # for 0600/f4, -1.5 for 1500/f4, 0 at f/20), while the quickstart's COC net, a few hundred steps
    # on synthetic scenes, reads all four as -2.3 to -3.7 px (experiments/RESULTS.md).
    canon = deblur.run_deblur(workdir / "canon", input_dir=canon_dir, weights=workdir, coc="search",
                              show_progress=False)
  else:  # the captures ship with a source checkout only, not with an installed package
    print(f"no Canon DP pairs at {canon_dir}: the report leaves them out")
  return report.write_report(workdir, config, canon)
