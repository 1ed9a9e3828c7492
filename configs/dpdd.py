"""The paper's recipe on DPDD (SPEC sections 4-6), and variants.

Prepare DPDD once (manual download, see tfds_dpd/dpdd/README.md), then:
  bambnet train --config configs/dpdd.py --workdir workdirs/dpdd data.manual_dir=/path/to/dd_dp_dataset_png

| field | paper | released code | here (default) |
| --- | --- | --- | --- |
| data: patches | 512 px, stride 204, 30% most homogeneous dropped | same | same (`dpdd/patches`) |
| data.flips | none | none | False |
| coc: Adam lr, batch | 2e-5, 4 | same | coc.learning_rate=2e-5, batch 4 |
| coc: length | 10 epochs | 20 epochs | 17,500 steps (10 epochs of ~7,000 patches) |
| coc: TV term | lambda = 10 on grad COC | 1e-5 x TV after 3,000 its | the released code's |
| search | Algorithm 1, every 5 epochs, ~45 epochs | none: r = 0, 1.9, 4.2, 6.2 | Algorithm 1 (`search.paper_rule`) |
| search meta set | the validation set | a "small training dataset" list | data.meta_max_examples=None (all) |
| deblur: Adam lr, batch | 2e-4, 2 | same | same |
| deblur: schedule | halved every 60 epochs, 200 epochs | milestones 30/60/90/120, factor 0.5 | halved every 210,000 steps |
| masks annealing | T = 20,000 | same | same |
| stage 3 start | not stated | (no search) | the search's weights, a fresh Adam (deblur.init_from_search) |

Variants:
- `:released`: the released code's fixed thresholds [0, 1.9, 4.2, 6.2] instead of the search.
- `:no_masks`: the paper's Table III ablation (no search, no masks).
- `:improved`: the search keeps every branch at >= 5% of the meta pixels, with bins and start at
  the meta set's |COC| quantiles (the paper's rule can leave heavy branches without a pixel where
  the data's COC is small: DPDD's hand-set thresholds are all under 6.2 px).
"""

from configs import base


def get_config(arg=None):
  config = base.base_config()
  config.search.paper_rule = True
  if arg == "released":
    config.search.enabled = False
  elif arg == "no_masks":
    config.search.enabled = False
    config.deblur.use_masks = False
  elif arg == "improved":
    config.search.paper_rule = False
  elif arg:
    raise ValueError(f"unknown variant {arg!r}; expected 'released', 'no_masks' or 'improved'")
  return config
