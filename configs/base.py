"""Fields shared by every config, at the paper's values (SPEC sections 1, 4, 5).

Not a config itself: `dpdd`, `synthetic` and `smoke` start from `base_config()` and change what
differs. Step counts are in optimiser steps (the paper's epochs depend on the dataset size).
"""

import ml_collections

from bambnet_jax.models import masks
from bambnet_jax.models import networks


def base_config():
  config = ml_collections.ConfigDict()
  config.seed = 0  # one seed for initialisation and data order; same seed + config = same run
  config.model = networks.model_config()  # width 64, capacities (1, 4, 7, 10): 4,497,731 params

  config.data = ml_collections.ConfigDict()
  config.data.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data dir (default ~/tensorflow_datasets)
  config.data.manual_dir = ml_collections.config_dict.placeholder(str)  # DPDD download, for preparing dpdd
  config.data.train_dataset = "dpdd/patches"  # TFDS name/config of the training patches
  config.data.train_split = "train"
  config.data.meta_dataset = "dpdd/patches"  # the threshold search's validation ("meta") set
  config.data.meta_split = "validation"
  # Examples of the meta set per search round; None: the whole split, as the paper.
  config.data.meta_max_examples = ml_collections.config_dict.placeholder(int)
  config.data.test_dataset = "dpdd/full"  # full-resolution evaluation images
  config.data.test_split = "test"
  config.data.test_max_examples = ml_collections.config_dict.placeholder(int)  # None = all
  config.data.crop_size = 512  # training crop (the patches are 512x512 already)
  config.data.worker_count = 4  # grain worker processes decoding PNGs (0 = in the main process)
  # DP-safe random flips of training crops (mirror and swap L/R; vertical); the paper and the
  # released code do not augment.
  config.data.flips = False

  config.coc = ml_collections.ConfigDict()  # stage 1: COC net on the reblur loss
  config.coc.num_steps = 17_500  # paper: 10 epochs of ~7,000 DPDD patches at batch 4
  config.coc.batch_size = 4
  config.coc.learning_rate = 2e-5  # Adam (0.9, 0.999)
  config.coc.lr_halve_every = ml_collections.config_dict.placeholder(int)  # None: constant (paper)
  config.coc.warmup_steps = 0  # linear learning-rate warm-up (0: none, the paper)
  config.coc.clip_grad_norm = 0.0  # clip the global gradient norm to this (0: no clipping, the paper)
  config.coc.tv_start = 3_000  # iteration from which the total-variation term is on
  config.coc.tv_weight = 1e-5  # its weight (sum over the batch of |grad COC|)
  config.coc.loss_border = 0  # px along each crop edge left out of the reblur loss (0: the paper's)
  config.coc.crop_size = ml_collections.config_dict.placeholder(int)  # None: data.crop_size
  config.coc.dtype = ml_collections.config_dict.placeholder(str)  # compute dtype; None: model.dtype

  config.search = ml_collections.ConfigDict()  # stage 2: threshold search (Algorithm 1)
  config.search.enabled = True  # False: use fixed_thresholds (the released code's behaviour)
  config.search.fixed_thresholds = masks.RELEASED_THRESHOLDS + (25.0,)  # r_1..r_5 when disabled
  config.search.max_coc = 25.0  # r_{M+1}
  # True: Algorithm 1 exactly (a uniform bin_width grid, equally spaced start, no minimum share).
  # False: bins and start at the meta set's |COC| pixel quantiles, and every branch keeps at least
  # min_branch_share of the meta pixels, so no branch is starved where the data's COC is small.
  config.search.paper_rule = False
  config.search.bin_width = 0.25  # the paper rule's COC bin width (threshold resolution), px
  config.search.num_bins = 100  # quantile bins of the per-bin errors otherwise
  config.search.min_branch_share = 0.05
  config.search.steps_per_round = 17_500  # paper: 5 epochs (batch 2) between threshold updates
  config.search.max_rounds = 9  # paper: converges at about 45 epochs
  config.search.tolerance = 0.25  # stop once no threshold moves more than this, px
  config.search.batch_size = 2
  config.search.learning_rate = 2e-4

  config.deblur = ml_collections.ConfigDict()  # stage 3: thresholds fixed, masks annealed away
  config.deblur.num_steps = 700_000  # paper: 200 epochs at batch 2
  config.deblur.batch_size = 2
  config.deblur.learning_rate = 2e-4
  config.deblur.lr_halve_every = 210_000  # paper: halved every 60 epochs
  config.deblur.anneal_steps = masks.ANNEALING_STEPS  # T: masks fade out over the first T steps
  config.deblur.use_masks = True  # False: the paper's Table III ablation (no masks at all)
  config.deblur.init_from_search = True  # start from the search stage's parameters

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 1  # full-resolution test images per device

  config.log_every = 100  # steps between host metric fetches (and logs)
  config.checkpoint_every = 2_000  # steps between checkpoints
  config.skip_nonfinite = False  # True: skip NaN/Inf steps instead of stopping

  config.parallel = ml_collections.ConfigDict()  # several processes (parallel/sharding.py)
  config.parallel.coordinator = ml_collections.config_dict.placeholder(str)  # "host0:port"
  config.parallel.num_processes = ml_collections.config_dict.placeholder(int)
  config.parallel.process_id = ml_collections.config_dict.placeholder(int)
  config.parallel.local_device_ids = None  # local GPUs of this process: 0, "0,1" or (0, 1); None = all
  return config
