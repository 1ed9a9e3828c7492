"""What the experiment scripts share: a command line (default config: configs/smoke.py, seconds on a
CPU), a training run made or resumed (finished stages are never redone), its networks.
"""

import argparse
import json
import pathlib

from bambnet_jax.evaluation import evaluate
from bambnet_jax.evaluation import suite as suite_lib
from bambnet_jax.io import config_files
from bambnet_jax.io import weights as weights_io
from bambnet_jax.parallel import sharding
from bambnet_jax.training import train as train_lib

# The metrics of the paper's tables (LPIPS with SqueezeNet, as BaMBNet's code computes it).
PAPER_METRICS = "psnr,ssim,mae,lpips_squeeze,fid"


def parser(description):
  """The command line every experiment script shares."""
  p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="configs/smoke.py", help="configs/<name>.py[:arg] (default: %(default)s)")
  p.add_argument("--workdir", required=True, help="training runs and results go here")
  p.add_argument("--metrics", default=PAPER_METRICS,
                 help="as `bambnet eval --metrics` (default: %(default)s, the paper's); LPIPS and FID "
                      "need pretrained weight files, e.g. --metrics psnr,ssim,mae runs without")
  p.add_argument("--metric-weights", help="folder of the LPIPS / FID weight files")
  p.add_argument("--fid-dims", type=int, default=2048, choices=(64, 192, 768, 2048),
                 help="InceptionV3 features of FID (default 2048, the literature's)")
  p.add_argument("overrides", nargs="*", help="config overrides, e.g. data.manual_dir=/data/dpdd")
  return p


def load_config(args, extra_overrides=()):
  return config_files.apply_overrides(config_files.load_config(args.config),
                                       list(args.overrides) + list(extra_overrides))


def metric_suite(args):
  """The metrics asked for, loaded before any training (a missing weights file fails at once)."""
  return suite_lib.MetricSuite.load(args.metrics, args.metric_weights, fid_dims=args.fid_dims)


def train(config, workdir):
  """Trains, resumes or finds finished the COC net, threshold search and deblurring net."""
  train_lib.train(config, workdir)


class Run:
  """The trained networks and search record of a workdir."""

  def __init__(self, workdir):
    self.workdir = pathlib.Path(workdir)
    self.deblur_params, _, self.model_config = weights_io.load_weights(
        self.workdir / "deblur" / "weights", expected_net="deblur")
    coc_dir = self.workdir / "coc" / "weights"
    self.coc_params = None
    if coc_dir.is_dir():  # read by the deblurring net's model config
      self.coc_params = weights_io.load_weights(coc_dir, expected_net="coc")[0]
    rounds = self.workdir / "search" / "rounds.json"
    self.search_history = json.loads(rounds.read_text()) if rounds.is_file() else []


def evaluate_run(run, config, suite, output_dir, branch_gates=None, save_images=0, title="Test set", notes=()):
  """evaluate.evaluate of a Run's deblurring net on the config's test split."""
  mesh = sharding.make_mesh()
  coc = None if run.coc_params is None else sharding.put_replicated(run.coc_params, mesh)
  return evaluate.evaluate(sharding.put_replicated(run.deblur_params, mesh), coc, run.model_config,
                           evaluate.test_batches(config, mesh), output_dir, save_images=save_images, suite=suite,
                           branch_gates=branch_gates, title=title, notes=notes)
