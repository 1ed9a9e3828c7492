"""Seconds on a CPU: every stage for a few steps on tiny synthetic scenes and a tiny network (tests)."""

from bambnet_jax.models import networks
from configs import base
from configs import synthetic


def get_config(arg=None):
  del arg
  config = base.base_config()
  config.model = networks.model_config(width=8, branch_capacities=(1, 4, 4, 4))
  config.data.synthetic = synthetic.synthetic_data(num_train=8, num_validation=2, num_test=2, size=32,
                                                   max_coc=4.0)
  config.data.train_dataset = config.data.meta_dataset = config.data.test_dataset = "dp_synthetic"
  config.data.crop_size = 32
  config.data.worker_count = 0
  config.data.flips = True  # a few synthetic scenes: flips add variety
  config.coc.num_steps = 4
  config.coc.batch_size = 2
  config.coc.tv_start = 2
  config.search.steps_per_round = 2
  config.search.max_rounds = 2
  config.search.batch_size = 2
  config.search.bin_width = 1.0
  config.deblur.num_steps = 4
  config.deblur.batch_size = 2
  config.deblur.anneal_steps = 2
  config.deblur.lr_halve_every = 2
  config.log_every = 2
  config.checkpoint_every = 2
  return config
