"""The paper's setting on DPDD (SPEC sections 4-6).

Prepare DPDD once (manual download, see tfds_dpd/dpdd/README.md), then:
  bambnet train --config configs/dpdd.py --workdir workdirs/dpdd data.manual_dir=/path/to/dd_dp_dataset_png
Variants: `configs/dpdd.py:released` uses the released code's fixed thresholds [0, 1.9, 4.2, 6.2]
instead of the search; `configs/dpdd.py:no_masks` is the paper's Table III ablation.
"""

from configs import base


def get_config(arg=None):
  config = base.base_config()
  if arg == "released":
    config.search.enabled = False
  elif arg == "no_masks":
    config.search.enabled = False
    config.deblur.use_masks = False
  elif arg:
    raise ValueError(f"unknown variant {arg!r}; expected 'released' or 'no_masks'")
  return config
