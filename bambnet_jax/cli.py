"""The `bambnet` command: parses arguments and calls library functions, nothing more."""

import argparse
import sys


def _convert_torch(args):
  from bambnet_jax.convert import torch_checkpoint
  torch_checkpoint.convert_file(args.checkpoint, args.output, net=args.net)


def build_parser():
  parser = argparse.ArgumentParser(prog="bambnet", description=__doc__)
  commands = parser.add_subparsers(dest="command", required=True)

  p = commands.add_parser("convert-torch", help="import an official PyTorch checkpoint (.pth)")
  p.add_argument("checkpoint", help="the .pth file")
  p.add_argument("output", help="directory of the orbax checkpoint to write (use as --weights)")
  p.add_argument("--net", required=True, choices=("deblur", "coc"),
                 help="which network the file holds (both share one key layout)")
  p.set_defaults(run=_convert_torch)

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
