"""The `bambnet` command: parses arguments and calls library functions, nothing more."""

import argparse
import sys


def _convert_torch(args):
  from bambnet_jax.convert import torch_checkpoint
  torch_checkpoint.convert_file(args.checkpoint, args.output, net=args.net)


def _train(args):
  from bambnet_jax import config_loader
  from bambnet_jax.training import train
  config = config_loader.apply_overrides(config_loader.load_config(args.config), args.overrides)
  train.train_and_evaluate(config, args.workdir, stop_after=args.stop_after)


def _coc(args):
  from bambnet_jax import coc_maps
  result = coc_maps.run_coc(args.left, args.right, args.output_dir,
                            method="network" if args.weights else "search",
                            weights=args.weights, per_channel=args.per_channel)
  print(f"wrote {result['npy']} and {result['png']} (median COC {result['median']:+.2f} px, "
        f"colours span +-{result['vmax']:.2f} px)")


def build_parser():
  parser = argparse.ArgumentParser(prog="bambnet", description=__doc__)
  commands = parser.add_subparsers(dest="command", required=True)

  p = commands.add_parser("convert-torch", help="import an official PyTorch checkpoint (.pth)")
  p.add_argument("checkpoint", help="the .pth file")
  p.add_argument("output", help="directory of the orbax checkpoint to write (use as --weights)")
  p.add_argument("--net", required=True, choices=("deblur", "coc"),
                 help="which network the file holds (both share one key layout)")
  p.set_defaults(run=_convert_torch)

  p = commands.add_parser("train", help="run (or resume) all stages: COC net, threshold search, "
                                         "deblurring net, evaluation")
  p.add_argument("--config", required=True, help="configs/<name>.py, optionally with :arg")
  p.add_argument("--workdir", required=True, help="checkpoints, logs and results go here")
  p.add_argument("--stop-after", choices=("coc", "search", "deblur"), help="stop after this stage")
  p.add_argument("overrides", nargs="*", help="config overrides, e.g. coc.num_steps=100")
  p.set_defaults(run=_train)

  p = commands.add_parser("coc", help="signed COC map of a DP pair (px; > 0 in front of focus)")
  p.add_argument("--left", required=True, help="left view image")
  p.add_argument("--right", required=True, help="right view image")
  p.add_argument("--output-dir", required=True, help="where coc.npy and coc.png are written")
  how = p.add_mutually_exclusive_group()
  how.add_argument("--method", choices=("search",),  # no default: argparse then sees a clash
                   help="classical reblur-residual search, no training needed (the default)")
  how.add_argument("--weights", help="a trained or converted COC net's weights directory")
  p.add_argument("--per-channel", action="store_true",
                 help="one COC per colour channel: coc.npy is H x W x 3")
  p.set_defaults(run=_coc)

  return parser


def main(argv=None):
  args = build_parser().parse_args(argv)
  try:
    args.run(args)
  except (ValueError, OSError) as e:
    # Bad input: one clear line naming the file and the problem, and a non-zero exit.
    print(f"bambnet {args.command}: error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
