"""A few minutes on 2 CPU cores: every stage on small synthetic scenes, enough to beat the input.

  bambnet quickstart --workdir workdirs/quickstart

Unlike `smoke` (seconds, numbers meaningless), this trains long enough that the restored test
scenes score above the blurred combined input, so the report shows the method working: on 2
CPU cores, 2 min 32 s for the whole quickstart, and test PSNR 15.79 dB against the input's 14.96 dB.
Learning rates are above the paper's because there are so few steps.
"""

from bambnet_jax.models import networks
from configs import base
from configs import synthetic


def get_config(arg=None):
  del arg
  config = base.base_config()
  config.model = networks.model_config(width=16, branch_capacities=(1, 2, 3, 4))
  config.data.synthetic = synthetic.synthetic_data(num_train=64, num_validation=8, num_test=8, size=64,
                                                   max_coc=6.0)  # px; the default 12 is sized for width 64
  config.data.train_dataset = config.data.meta_dataset = config.data.test_dataset = "dp_synthetic"
  config.data.crop_size = 64
  config.data.worker_count = 0  # no worker processes: the 2 cores are for the network
  config.data.flips = True  # a few synthetic scenes: flips add variety
  config.search.max_coc = 8.0  # r_{M+1}: just above the scenes' largest COC (the default 25 wastes branches)

  config.coc.num_steps = 400
  config.coc.batch_size = 4
  config.coc.learning_rate = 1e-3
  config.coc.tv_start = 200

  config.search.steps_per_round = 150
  config.search.max_rounds = 2
  config.search.batch_size = 4
  config.search.bin_width = 0.5
  config.search.learning_rate = 1e-3

  config.deblur.num_steps = 1000
  config.deblur.batch_size = 4
  config.deblur.learning_rate = 1e-3
  config.deblur.anneal_steps = 300
  config.deblur.lr_halve_every = 500
  config.log_every = 50
  config.checkpoint_every = 500
  return config
